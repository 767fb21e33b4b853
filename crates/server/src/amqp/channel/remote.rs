//! basic.get and basic.consume on a queue whose home is another node
//! (docs/design/cluster.md §6). basic.get asks the home (`QueueEntry::remote_get`), and
//! the message it answers is sent to the client as a local one is
//! ([`ChannelActor::get_ok`], shared by both). basic.consume registers the consumer with
//! this node's registry of remote consumers and asks the home for a proxy consumer
//! (`broker/remote_consume.rs`); the deliveries it sends arrive as [`RemoteDeliver`]
//! and get this channel's delivery tags. Acks, nacks and rejects go back as notes through
//! the queue entry (`ops.rs`), and so does this channel's close.

use super::send_message::Carrier;
use super::{ChannelActor, ConsumerRec, Pending};
use crate::amqp::connection::ConnectionFail;
use crate::amqp::shared::OUT_HIGH;
use crate::broker::flow::ConsumerGate;
use crate::broker::queue::QueueEntry;
use crate::broker::remote_consume::{registry, RemoteDeliver};
use actix::prelude::*;
use broker_core::names::{shortstr, MAX_SHORTSTR};
use broker_core::{AmqpError, Message};
use broker_wire::protocol::{basic as b, AMQPClass};
use broker_wire::types::ShortString;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A message basic.get took from a queue: its id there, whether it was delivered
/// before, the message and how many are left.
pub(super) struct Got {
    pub(super) id: u64,
    pub(super) redelivered: bool,
    pub(super) msg: Arc<Message>,
    pub(super) remaining: u32,
}

impl ChannelActor {
    /// basic.consume through the queue's home node: registered here first (deliveries
    /// may arrive before the home's answer), then the home adds its proxy consumer with
    /// this channel's prefetch. `gate` is the consumer's record here (the home's proxy
    /// holds the credit that paces the deliveries).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn remote_consume(
        &mut self,
        q: Arc<QueueEntry>,
        short_tag: ShortString,
        (no_ack, exclusive): (bool, bool),
        priority: i64,
        nowait: bool,
        gate: Arc<ConsumerGate>,
        ctx: &mut Context<Self>,
    ) {
        let tag: Arc<str> = short_tag.as_str().into();
        let Some(home) = q.home_id() else {
            return self.fail(AmqpError::internal("not a remote queue").on(60, 20), ctx);
        };
        registry().add(
            self.key,
            ctx.address().recipient(),
            ctx.address().recipient(),
            tag.clone(),
            home,
            q.clone(),
            no_ack,
        );
        self.touch(&q);
        self.consumers.insert(
            tag.clone(),
            ConsumerRec {
                queue: q.clone(),
                gate,
            },
        );
        let consume =
            q.remote_consume(self.key, &tag, (no_ack, exclusive), priority, self.prefetch);
        let key = self.key;
        ctx.wait(
            consume
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(()) => {
                        if !nowait && !act.closing {
                            act.send(AMQPClass::Basic(b::AMQPMethod::ConsumeOk(b::ConsumeOk {
                                consumer_tag: short_tag,
                            })));
                        }
                    }
                    Err(e) => {
                        registry().remove(key, &tag);
                        act.consumers.remove(&tag);
                        act.fail(e.on(60, 20), ctx);
                    }
                }),
        );
    }

    /// basic.get through the queue's home node.
    pub(super) fn remote_get(
        &mut self,
        q: Arc<QueueEntry>,
        no_ack: bool,
        ctx: &mut Context<Self>,
    ) -> Result<(), AmqpError> {
        let get = q.remote_get(self.key, no_ack);
        self.wait_then(ctx, (60, 70), get, move |act, got, ctx| match got {
            None => act.send(AMQPClass::Basic(b::AMQPMethod::GetEmpty(b::GetEmpty {}))),
            Some((id, redelivered, msg, remaining)) => {
                let got = Got {
                    id,
                    redelivered,
                    msg,
                    remaining,
                };
                let back = q.clone();
                let restore = move || {
                    if !no_ack {
                        back.restore_remote(id)
                    }
                };
                act.get_ok(&q, got, no_ack, restore, ctx);
            }
        });
        Ok(())
    }

    /// Sends basic.get-ok with the message, recording it as unacked unless `no_ack`.
    /// A message the client cannot be sent (its header is above the frame limit, its
    /// names do not fit a shortstr) goes back through `restore` and the channel closes,
    /// as RabbitMQ's does.
    pub(super) fn get_ok(
        &mut self,
        q: &Arc<QueueEntry>,
        got: Got,
        no_ack: bool,
        restore: impl FnOnce(),
        ctx: &mut Context<Self>,
    ) {
        if let Some(e) = self.header_too_large(&got.msg.raw_properties) {
            // back to the queue unchanged; the channel closes with 406
            restore();
            self.fail(e.on(60, 70), ctx);
            return;
        }
        // a message whose names do not fit a shortstr cannot be sent: 541 as RabbitMQ
        // (the queue takes an unacked one back when we close)
        let msg = &got.msg;
        let names = shortstr("exchange", &msg.exchange)
            .and_then(|x| Ok((x, shortstr("routing key", &msg.routing_key)?)));
        let (exchange, routing_key) = match names {
            Ok(n) => n,
            Err(e) => return self.fail(e.on(60, 70), ctx),
        };
        let tag = if no_ack {
            self.unacked.next_tag()
        } else {
            self.unacked.record(Pending {
                queue: q.clone(),
                id: got.id,
                gate: None,
            })
        };
        let get_ok = AMQPClass::Basic(b::AMQPMethod::GetOk(b::GetOk {
            delivery_tag: tag.0,
            redelivered: got.redelivered,
            exchange,
            routing_key,
            message_count: got.remaining,
        }));
        self.send_message(Carrier::Method(get_ok), msg);
    }
}

impl Handler<RemoteDeliver> for ChannelActor {
    type Result = ();
    fn handle(&mut self, d: RemoteDeliver, ctx: &mut Context<Self>) {
        let live = !self.closing
            && self
                .consumers
                .get(&d.tag)
                .is_some_and(|c| Arc::ptr_eq(&c.queue, &d.queue));
        let mut messages = d.messages.into_iter();
        for (id, redelivered, msg) in messages.by_ref() {
            if !live {
                // cancelled on the way: back to the queue (a closed channel's come back
                // with its close)
                if !d.no_ack {
                    d.queue.restore_remote(id);
                }
                continue;
            }
            if msg.exchange.len() > MAX_SHORTSTR || msg.routing_key.len() > MAX_SHORTSTR {
                // cannot be sent: 541 as RabbitMQ (the queue takes it back when we close)
                self.conn.do_send(ConnectionFail(AmqpError::internal(
                    "a message's routing key or exchange is longer than 255 bytes and cannot be delivered",
                )));
                break;
            }
            if let Some(e) = self.header_too_large(&msg.raw_properties) {
                // back unchanged, with the rest; the channel closes with 406
                if !d.no_ack {
                    d.queue.restore_remote(id);
                }
                self.fail(e, ctx);
                break;
            }
            self.deliver_remote(&d.queue, &d.tag, d.no_ack, id, redelivered, &msg);
        }
        if !d.no_ack {
            for (id, _, _) in messages {
                d.queue.restore_remote(id);
            }
        }
        if self.shared.out_len() > OUT_HIGH {
            self.shared.deferred_remote.borrow_mut().push(d.written);
        } else {
            let _ = d.written.send(());
        }
        self.request_flush();
    }
}

impl ChannelActor {
    /// Writes one delivery of a queue of another node with this channel's next tag.
    fn deliver_remote(
        &mut self,
        q: &Arc<QueueEntry>,
        consumer_tag: &str,
        no_ack: bool,
        id: u64,
        redelivered: bool,
        msg: &Message,
    ) {
        let tag = if no_ack {
            self.unacked.next_tag()
        } else {
            self.stats.unacked.fetch_add(1, Ordering::Relaxed);
            self.unacked.record(Pending {
                queue: q.clone(),
                id,
                gate: None,
            })
        };
        let carrier = Carrier::Deliver {
            consumer_tag,
            delivery_tag: tag.0,
            redelivered,
        };
        self.send_message(carrier, msg);
    }
}
