//! basic.* methods: publish, consume and cancel, get, ack/nack/reject/recover (routing
//! is in `route.rs`; confirm.* and tx.* in `tx.rs`).

use super::send_message::Carrier;
use super::{ChannelActor, ConsumerRec, FlushConfirms, Pending, SettleKind, StoreFlushed};
use crate::broker::flow::ConsumerGate;
use crate::broker::queue::{self, ConsumerHandle, QueueEntry};
use actix::prelude::*;
use broker_core::names::shortstr;
use broker_core::queue::Consumer;
use broker_core::{AmqpError, Message};
use broker_wire::assembly::Content;
use broker_wire::protocol::{basic as b, AMQPClass};
use broker_wire::types::ShortString;
use rand::distributions::Alphanumeric;
use rand::Rng;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

fn mailbox(_: MailboxError) -> AmqpError {
    AmqpError::internal("queue unavailable")
}

impl ChannelActor {
    pub(crate) fn basic_method(
        &mut self,
        m: b::AMQPMethod,
        ctx: &mut Context<Self>,
    ) -> Result<(), AmqpError> {
        match m {
            b::AMQPMethod::Qos(qos) => self.basic_qos(qos),
            b::AMQPMethod::Consume(c) => self.basic_consume(c, ctx),
            b::AMQPMethod::Cancel(c) => self.basic_cancel(c, ctx),
            b::AMQPMethod::Get(g) => self.basic_get(g, ctx),
            b::AMQPMethod::Ack(a) => self.settle(a.delivery_tag, a.multiple, SettleKind::Ack),
            b::AMQPMethod::Nack(n) => self.settle(
                n.delivery_tag,
                n.multiple,
                if n.requeue {
                    SettleKind::Requeue
                } else {
                    SettleKind::Discard
                },
            ),
            b::AMQPMethod::Reject(r) => self.settle(
                r.delivery_tag,
                false,
                if r.requeue {
                    SettleKind::Requeue
                } else {
                    SettleKind::Discard
                },
            ),
            b::AMQPMethod::Recover(r) => {
                self.basic_recover(r.requeue)?;
                self.send(AMQPClass::Basic(b::AMQPMethod::RecoverOk(b::RecoverOk {})));
                Ok(())
            }
            b::AMQPMethod::RecoverAsync(r) => self.basic_recover(r.requeue),
            _ => Err(AmqpError::command_invalid("unexpected basic method")),
        }
    }

    fn basic_qos(&mut self, qos: b::Qos) -> Result<(), AmqpError> {
        // a non-zero prefetch_size was already refused with 540 by the wire layer
        self.qos_global_last = qos.global && qos.prefetch_count > 0;
        if qos.global {
            self.gate
                .prefetch
                .store(qos.prefetch_count as u32, Ordering::Release);
            self.wake_blocked_consumers();
        } else {
            self.prefetch = qos.prefetch_count as u32;
            self.stats.prefetch.store(
                u64::from(qos.prefetch_count),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        self.send(AMQPClass::Basic(b::AMQPMethod::QosOk(b::QosOk {})));
        Ok(())
    }

    fn basic_consume(&mut self, c: b::Consume, ctx: &mut Context<Self>) -> Result<(), AmqpError> {
        self.allowed(
            broker_core::auth::Access::Read,
            "queue",
            &self.queue_name(c.queue.as_str())?,
        )?;
        let name = self.queue_name(c.queue.as_str())?;
        let q = self.find_queue(&name)?;
        if q.stream.is_some() {
            broker_core::queue_type::stream::check_consume(
                c.no_ack,
                self.prefetch,
                self.qos_global_last,
                &name,
                &self.vhost.name,
            )?;
        }
        if q.quorum && self.qos_global_last {
            // a connection error, as RabbitMQ (540)
            return Err(broker_core::queue_type::quorum::global_qos_refused(
                &name,
                &self.vhost.name,
            ));
        }
        let short_tag = consumer_tag(&c.consumer_tag)?;
        let tag: Arc<str> = short_tag.as_str().into();
        if self.consumers.contains_key(&tag) {
            return Err(AmqpError::not_allowed(format!(
                "attempt to reuse consumer tag '{tag}'"
            )));
        }
        let gate = Arc::new(ConsumerGate::new(
            self.prefetch,
            c.no_ack,
            self.gate.clone(),
        ));
        let priority = consumer_priority(&c.arguments, &name)?;
        if !q.is_local() {
            let flags = (c.no_ack, c.exclusive);
            self.remote_consume(q, short_tag, flags, priority, c.nowait, gate, ctx);
            return Ok(());
        }
        let consumer = Consumer {
            channel: self.key,
            tag: tag.clone(),
            no_ack: c.no_ack,
            exclusive: c.exclusive,
            priority,
            data: ConsumerHandle {
                deliver: ctx.address().recipient(),
                cancel: ctx.address().recipient(),
                gate: gate.clone(),
            },
        };
        self.touch(&q);
        // registered before the queue can deliver: deliveries wait in our mailbox
        self.consumers.insert(
            tag.clone(),
            ConsumerRec {
                queue: q.clone(),
                gate,
            },
        );
        let consume = q.consume(consumer, &c.arguments);
        let nowait = c.nowait;
        let t = tag.clone();
        ctx.wait(
            async move { consume.await.map_err(mailbox).and_then(|r| r) }
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(()) => {
                        if !nowait {
                            act.send(AMQPClass::Basic(b::AMQPMethod::ConsumeOk(b::ConsumeOk {
                                consumer_tag: short_tag,
                            })));
                        }
                    }
                    Err(e) => {
                        act.consumers.remove(&t);
                        act.fail(e.on(60, 20), ctx);
                    }
                }),
        );
        Ok(())
    }

    fn basic_cancel(&mut self, c: b::Cancel, ctx: &mut Context<Self>) -> Result<(), AmqpError> {
        let tag: Arc<str> = c.consumer_tag.as_str().into();
        let reply = move |act: &mut ChannelActor| {
            if !c.nowait {
                act.send(AMQPClass::Basic(b::AMQPMethod::CancelOk(b::CancelOk {
                    consumer_tag: c.consumer_tag.clone(),
                })));
            }
        };
        let Some(rec) = self.consumers.remove(&tag) else {
            reply(self);
            return Ok(());
        };
        if !rec.queue.is_local() {
            crate::broker::remote_consume::registry().remove(self.key, &tag);
            let cancel = rec.queue.remote_cancel(self.key, &tag);
            self.wait_then(ctx, (60, 30), cancel, move |act, (), _| reply(act));
            return Ok(());
        }
        let cancel = rec.queue.cancel(self.key, tag);
        self.wait_then(
            ctx,
            (60, 30),
            async move { cancel.await.map_err(mailbox) },
            move |act, (), _| reply(act),
        );
        Ok(())
    }

    fn basic_get(&mut self, g: b::Get, ctx: &mut Context<Self>) -> Result<(), AmqpError> {
        let name = self.queue_name(g.queue.as_str())?;
        self.allowed(broker_core::auth::Access::Read, "queue", &name)?;
        let q = self.find_queue(&name)?;
        self.touch(&q);
        if q.stream.is_some() {
            return Err(broker_core::queue_type::stream::not_supported(
                "basic.get",
                &name,
                &self.vhost.name,
            ));
        }
        if !q.capabilities().basic_get {
            return Err(AmqpError::new(
                broker_core::ReplyCode::NotImplemented,
                format!(
                    "basic.get not supported by {} queues",
                    q.queue_type().name()
                ),
            ));
        }
        let no_ack = g.no_ack;
        if !q.is_local() {
            return self.remote_get(q, no_ack, ctx);
        }
        let get = q.get(self.key, no_ack);
        self.wait_then(
            ctx,
            (60, 70),
            async move { get.await.map_err(mailbox) },
            move |act, got, ctx| match got {
                None => act.send(AMQPClass::Basic(b::AMQPMethod::GetEmpty(b::GetEmpty {}))),
                Some((entry, msg, remaining)) => {
                    let got = super::remote::Got {
                        id: entry.id,
                        redelivered: entry.redelivered,
                        msg,
                        remaining,
                    };
                    let back = q.clone();
                    act.get_ok(
                        &q,
                        got,
                        no_ack,
                        move || back.restore(vec![entry], no_ack),
                        ctx,
                    );
                }
            },
        );
        Ok(())
    }

    /// ack, nack and reject. In a transaction the settle is checked now and carried out at
    /// commit.
    fn settle(&mut self, tag: u64, multiple: bool, kind: SettleKind) -> Result<(), AmqpError> {
        let settled = self.unacked.settle(tag, multiple)?;
        if !matches!(kind, SettleKind::Ack) {
            self.refuse_on_streams(
                settled.iter().map(|(_, p)| p),
                "basic.nack and basic.reject",
            )?;
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.settles
                .extend(settled.into_iter().map(|(t, p)| (t, p, kind)));
            return Ok(());
        }
        self.apply_settles(settled.into_iter().map(|(_, p)| (p, kind)).collect());
        Ok(())
    }

    /// A stream cannot take deliveries back: nack, reject and recover of its
    /// deliveries close the connection with 540, as RabbitMQ.
    fn refuse_on_streams<'a>(
        &self,
        mut pending: impl Iterator<Item = &'a Pending>,
        method: &str,
    ) -> Result<(), AmqpError> {
        match pending.find(|p| p.queue.stream.is_some()) {
            Some(p) => Err(broker_core::queue_type::stream::not_supported(
                method,
                &p.queue.name,
                &self.vhost.name,
            )),
            None => Ok(()),
        }
    }

    pub(super) fn apply_settles(&mut self, settles: Vec<(Pending, SettleKind)>) {
        self.count_unacked();
        let mut by_queue: HashMap<usize, (Arc<QueueEntry>, Vec<u64>, Vec<u64>, Vec<u64>)> =
            HashMap::new();
        let mut wake: HashMap<usize, Arc<QueueEntry>> = HashMap::new();
        for (p, kind) in settles {
            if let Some(g) = &p.gate {
                if g.settled() {
                    wake.insert(Arc::as_ptr(&p.queue) as usize, p.queue.clone());
                }
            }
            let e = by_queue
                .entry(Arc::as_ptr(&p.queue) as usize)
                .or_insert_with(|| (p.queue.clone(), vec![], vec![], vec![]));
            match kind {
                SettleKind::Ack => e.1.push(p.id),
                SettleKind::Requeue => e.2.push(p.id),
                SettleKind::Discard => e.3.push(p.id),
            }
        }
        for (_, (q, acks, requeues, discards)) in by_queue {
            if !acks.is_empty() {
                q.settle(queue::Settle::Ack(acks));
            }
            if !requeues.is_empty() {
                q.settle(queue::Settle::Requeue(requeues));
            }
            if !discards.is_empty() {
                q.settle(queue::Settle::Discard(discards));
            }
            wake.remove(&(Arc::as_ptr(&q) as usize));
        }
        // settles already wake their queue; others (none here) would need a kick
        for (_, q) in wake {
            q.kick();
        }
        if self.gate.prefetch.load(Ordering::Acquire) > 0 {
            self.wake_blocked_consumers();
        }
    }

    /// After channel-wide room appears, wakes the queues of consumers that were skipped.
    fn wake_blocked_consumers(&self) {
        for c in self.consumers.values() {
            if c.gate.take_blocked() {
                c.queue.kick();
            }
        }
    }

    fn basic_recover(&mut self, requeue: bool) -> Result<(), AmqpError> {
        if !requeue {
            return Err(AmqpError::not_implemented("requeue=false"));
        }
        let all = self.unacked.take_all();
        self.refuse_on_streams(all.iter().map(|(_, p)| p), "basic.recover")?;
        self.apply_settles(
            all.into_iter()
                .map(|(_, p)| (p, SettleKind::Requeue))
                .collect(),
        );
        Ok(())
    }

    /// basic.publish: route from the binding snapshots and hand the message to every
    /// matching queue's mailbox. One `Arc<Message>` is shared by all of them.
    pub(crate) fn basic_publish(
        &mut self,
        p: b::Publish,
        content: Content,
        ctx: &mut Context<Self>,
    ) -> Result<(), AmqpError> {
        if p.immediate {
            return Err(AmqpError::not_implemented("immediate=true"));
        }
        crate::broker::publish::check_client(&content.properties, &self.shared.user.borrow())?;
        self.allowed(
            broker_core::auth::Access::Write,
            "exchange",
            broker_core::auth::exchange_resource(p.exchange.as_str()),
        )?;
        self.topic_allowed(true, p.exchange.as_str(), p.routing_key.as_str())?;
        if let Some(tx) = self.tx.as_mut() {
            tx.bytes += content.body.len() + content.raw_properties.len();
            if tx.publishes.len() >= super::TX_MAX_PUBLISHES || tx.bytes > super::TX_MAX_BYTES {
                return Err(AmqpError::precondition_failed(format!(
                    "transaction too large: at most {} publishes or {} bytes of messages may wait for tx.commit",
                    super::TX_MAX_PUBLISHES,
                    super::TX_MAX_BYTES
                )));
            }
            tx.publishes.push((p, content));
            return Ok(());
        }
        self.publish_now(p, content, ctx)
    }

    pub(super) fn publish_now(
        &mut self,
        p: b::Publish,
        content: Content,
        ctx: &mut Context<Self>,
    ) -> Result<(), AmqpError> {
        let (queues, schema) = self.route(
            p.exchange.as_str(),
            p.routing_key.as_str(),
            &content.properties,
        )?;
        // an exchange with a JSON Schema checks the body first (`schema.rs`)
        let (queues, content) = match schema {
            None => (queues, content),
            Some(s) => match self.check_schema(&s, &p, queues, content, ctx) {
                Ok(checked) => checked,
                Err(()) => return Ok(()),
            },
        };
        let seq = self.confirms.as_mut().map(|c| c.next());
        // full queues with x-overflow reject-publish(-dlx) refuse the message; the
        // publisher gets a nack (as RabbitMQ), the other queues still get it
        let routed = crate::broker::publish::Routed::new(
            queues,
            content.properties.headers().as_ref(),
            content.body.len(),
        );
        let mut msg = Message {
            // the message's own strings, not the route cache's: the thread that drops the
            // message would otherwise write their refcounts, and the cache lines this
            // channel reads to match routes would bounce between cores on every message
            exchange: Arc::from(p.exchange.as_str()),
            routing_key: Arc::from(p.routing_key.as_str()),
            properties: content.properties,
            raw_properties: content.raw_properties,
            body: content.body,
            persist_id: None,
            arrival_ms: crate::broker::runtime::now_ms(),
        };
        // persistent messages routed to durable queues are written before they are
        // enqueued; their confirm waits for the fsync that covers the write
        if self.confirms.is_some() && self.group.is_idle() {
            // the next commit request covers the inserts from here on (a mark taken
            // earlier would make a store failure long ago nack them)
            if let Some(store) = self.store.as_ref() {
                self.commit_mark = store.messages.mark();
            }
        }
        let stored = match routed.store(self.store.as_ref(), &mut msg) {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!("cannot store persistent message: {e}");
                self.store_failed = true;
                if let (Some(seq), Some(c)) = (seq, self.confirms.as_mut()) {
                    c.settle(seq, false);
                    self.schedule_confirms(ctx);
                }
                return Ok(());
            }
        };
        let msg = Arc::new(msg);
        if routed.unroutable() {
            if p.mandatory {
                let ret = AMQPClass::Basic(b::AMQPMethod::Return(b::Return {
                    reply_code: 312,
                    reply_text: "NO_ROUTE".into(),
                    exchange: p.exchange.clone(),
                    routing_key: p.routing_key.clone(),
                }));
                self.send_message(Carrier::Method(ret), &msg);
            }
        } else {
            if !self.shared.published.replace(true) {
                // the connection asked its gate before this channel saw the publish: let
                // it tell the client about an alarm now rather than at its next read
                self.conn.do_send(crate::amqp::connection::FirstPublish);
            }
            self.shared.fanout.set(routed.queues.len().max(1));
            let ticket = self.quorum_ticket(&routed, seq, ctx);
            routed.deliver_ticketed(&msg, ticket.as_ref(), |q| {
                if q.is_hot() {
                    self.shared.hot.borrow_mut().add(q);
                }
            });
        }
        if let (true, Some(t)) = (routed.refused(), self.tx_commit.as_mut()) {
            t.refused = true;
        }
        if let Some(seq) = seq {
            if routed.refused() {
                if let Some(c) = self.confirms.as_mut() {
                    c.settle(seq, false);
                    self.schedule_confirms(ctx);
                }
            } else if stored {
                self.group.note(seq);
                self.request_store_flush(ctx);
            } else if let Some(c) = self.confirms.as_mut() {
                c.settle(seq, true);
                self.schedule_confirms(ctx);
            }
        }
        Ok(())
    }

    /// The ticket quorum queues answer when the publish is committed in their log, when
    /// the publish goes to any (each is one more part of its confirm; the store's fsync
    /// or the immediate confirm is the first part).
    fn quorum_ticket(
        &mut self,
        routed: &crate::broker::publish::Routed,
        seq: Option<u64>,
        ctx: &mut Context<Self>,
    ) -> Option<crate::broker::queue::Ticket> {
        let parts = routed.quorum_parts();
        if parts == 0 {
            return None;
        }
        let (seq, confirm) = match (seq, self.confirms.as_mut(), self.tx_commit.as_mut()) {
            (Some(seq), Some(c), _) => {
                c.expect_parts(seq, parts + 1);
                (seq, ctx.address().recipient())
            }
            (None, None, Some(t)) => {
                self.tx_seq += 1;
                (self.tx_seq, t.sink_for(parts))
            }
            _ => return None,
        };
        let node = self.store.as_ref().map_or(0, |s| s.cluster.id);
        Some(crate::broker::queue::Ticket {
            confirm,
            publisher: broker_core::quorum::ChanId {
                node,
                connection: self.key.connection,
                channel: self.id,
            },
            seq,
        })
    }

    pub(crate) fn schedule_confirms(&mut self, ctx: &mut Context<Self>) {
        if !self.confirm_flush_scheduled {
            self.confirm_flush_scheduled = true;
            ctx.notify(FlushConfirms);
        }
    }

    /// Asks the flusher for an fsync covering every write noted so far (one at a time:
    /// writes made meanwhile wait for the next, so many publishes share one flush).
    pub(crate) fn request_store_flush(&mut self, ctx: &mut Context<Self>) {
        let Some(store) = self.store.as_ref() else {
            return;
        };
        if !self.group.start() {
            return;
        }
        let me = ctx.address();
        let upto = store.messages.mark();
        let since = std::mem::replace(&mut self.commit_mark, upto);
        store.flusher.request(since, upto, move |res| {
            me.do_send(StoreFlushed(res.is_ok()))
        });
    }
}

/// The `x-priority` consumer argument (0 when absent); RabbitMQ refuses a non-integer.
fn consumer_priority(args: &broker_wire::types::FieldTable, queue: &str) -> Result<i64, AmqpError> {
    match args.inner().get("x-priority") {
        None => Ok(0),
        Some(v) => broker_core::args::int_value(v)
            .and_then(|i| i64::try_from(i).ok())
            .ok_or_else(|| {
                AmqpError::precondition_failed(format!(
                    "invalid arg 'x-priority' for queue '{queue}' in vhost '/': \"expected integer, got {}\"",
                    broker_core::args::type_name(v)
                ))
            }),
    }
}

/// The client's consumer tag, or a fresh server-generated one (`amq.ctag-…`, as RabbitMQ)
/// when it gave none.
fn consumer_tag(given: &ShortString) -> Result<ShortString, AmqpError> {
    if !given.as_str().is_empty() {
        return Ok(given.clone());
    }
    let suffix: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(22)
        .map(char::from)
        .collect();
    shortstr("consumer tag", &format!("amq.ctag-{suffix}"))
}
