//! What a quorum queue's actor does for each message: the quorum variant of every
//! handler in `queue/handlers.rs` (which hands over here), and the effects of applied
//! entries carried out on this node.

use super::{Local, QueueActor, QuorumEffects};
use crate::broker::queue::{deadletter, ConsumerCancelled, Deliver, QueueInfo, Settle};
use actix::prelude::*;
use broker_core::message::Slot;
use broker_core::names::ChannelKey;
use broker_core::queue::{Consumer, Entry, MsgId};
use broker_core::quorum::{ChanId, Checkout, ConsumerId, Down, Effect, Got, QqOp, QqResp};
use broker_core::{AmqpError, Message};
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Handler<QuorumEffects> for QueueActor {
    type Result = ();
    fn handle(&mut self, _: QuorumEffects, ctx: &mut Context<Self>) {
        self.quorum_effects(ctx);
        self.quorum_after(ctx);
    }
}

/// The refusal of a command the queue's group could not carry out.
fn unavailable(name: &str, vhost: &str, why: &str) -> AmqpError {
    AmqpError::internal(format!(
        "quorum queue '{name}' in vhost '{vhost}' is unavailable: {why}"
    ))
}

/// A message as the log holds it, decoded.
fn decode(bytes: &[u8], arrival_ms: u64) -> Result<Message, String> {
    let m = broker_core::store::decode_message_shared(&bytes::Bytes::copy_from_slice(bytes), 0)
        .map_err(|e| e.0)?;
    Ok(Message { arrival_ms, ..m })
}

/// The entry a channel is given with a delivery (it settles by the id).
fn entry(id: MsgId, msg: &Arc<Message>, redelivered: bool, returns: u32) -> Entry {
    Entry {
        id,
        msg: Slot::Loaded(msg.clone()),
        redelivered,
        priority: 0,
        returns,
        body_len: u32::try_from(msg.body.len()).unwrap_or(u32::MAX),
        expires_at: None,
    }
}

impl QueueActor {
    /// Carries out the effects the group's apply left in the buffer.
    pub(super) fn quorum_effects(&mut self, ctx: &mut Context<Self>) {
        let Some(buffer) = self.quorum.as_ref().and_then(|s| s.buffer.clone()) else {
            return;
        };
        let mut credit: Vec<(ConsumerId, u32)> = Vec::new();
        let me = self.quorum.as_ref().map_or(0, |s| s.cluster.id);
        let mut remote = super::remote::Remote::default();
        for e in buffer.take() {
            match e {
                Effect::Deliver { ref consumer, .. } if consumer.chan.node != me => {
                    remote.deliver(&e);
                }
                Effect::ConsumerCancelled { consumer, .. } if consumer.chan.node != me => {
                    remote.cancel(consumer);
                }
                Effect::Deliver {
                    consumer,
                    msg_id,
                    message,
                    redelivered,
                    delivery_count,
                } => {
                    if self.quorum_deliver(&consumer, msg_id, message, redelivered, delivery_count)
                    {
                        count_credit(&mut credit, consumer);
                    }
                }
                Effect::DeadLetter { message, reason } => {
                    if !self.deleted {
                        self.republish(&message, reason);
                    }
                }
                // the proposer takes them from the command's answer (`quorum_enqueued`)
                Effect::Rejected { .. } => {}
                Effect::ConsumerCancelled { consumer, .. } => {
                    self.quorum_consumer_cancelled(&consumer);
                }
                Effect::Expired => {
                    if !self.deleted {
                        tracing::info!(queue = %self.name, "queue unused for x-expires: deleted");
                        // forgets the queue and drops its group (`quorum_remove`)
                        self.delete_self();
                    }
                }
            }
        }
        if let Some(out) = self.quorum.as_ref().and_then(|s| s.outbound.as_ref()) {
            remote.send(out);
        }
        self.quorum_after_deliveries(credit, ctx);
    }

    /// After a turn of deliveries: a no-ack consumer's credit comes back as its
    /// deliveries go out (`credit`: how many each had), and deliveries that found their
    /// consumer cancelled go back.
    pub(super) fn quorum_after_deliveries(
        &mut self,
        credit: Vec<(ConsumerId, u32)>,
        ctx: &mut Context<Self>,
    ) {
        for (consumer, n) in credit {
            self.quorum_cast(
                QqOp::Credit {
                    consumer,
                    credit: n,
                },
                ctx,
            );
        }
        self.quorum_return_orphans(ctx);
    }

    /// Gives back the deliveries whose consumer was cancelled here before they came
    /// (one `Return` per channel; the state machine ignores any no longer checked out
    /// to that channel, e.g. a no-ack delivery).
    fn quorum_return_orphans(&mut self, ctx: &mut Context<Self>) {
        let Some(shell) = self.quorum.as_mut() else {
            return;
        };
        if shell.orphaned.is_empty() {
            return;
        }
        let mut by_chan: Vec<(ChanId, Vec<MsgId>)> = Vec::new();
        for (chan, id) in shell.orphaned.drain(..) {
            match by_chan.iter_mut().find(|(c, _)| *c == chan) {
                Some((_, ids)) => ids.push(id),
                None => by_chan.push((chan, vec![id])),
            }
        }
        for (channel, ids) in by_chan {
            self.quorum_cast(QqOp::Return { channel, ids }, ctx);
        }
    }

    /// The group cancelled a consumer of this node: basic.cancel to its channel.
    pub(super) fn quorum_consumer_cancelled(&mut self, consumer: &ConsumerId) {
        self.flush_deliveries();
        if let Some(l) = self
            .quorum
            .as_mut()
            .and_then(|s| s.consumers.remove(consumer))
        {
            l.handle.cancel.do_send(ConsumerCancelled {
                consumer_tag: l.tag,
            });
        }
    }

    /// Sends one delivery to a local consumer. Returns true for a no-ack consumer (its
    /// credit is granted again).
    pub(super) fn quorum_deliver(
        &mut self,
        consumer: &ConsumerId,
        msg_id: MsgId,
        message: Arc<Message>,
        redelivered: bool,
        count: u32,
    ) -> bool {
        let Some(me) = self.me.upgrade() else {
            return false;
        };
        let Some(shell) = self.quorum.as_mut() else {
            return false;
        };
        // a consumer cancelled meanwhile (or of an earlier process): the message goes
        // back now (`quorum_return_orphans`), not when its channel closes
        let Some(l) = shell.consumers.get(consumer) else {
            shell.orphaned.push((consumer.chan, msg_id));
            return false;
        };
        let msg = if count > 0 {
            Arc::new(deadletter::with_delivery_count(&message, count))
        } else {
            message
        };
        let units = broker_core::flow::cost(msg.body.len());
        l.handle.gate.force_take(units);
        if !l.no_ack {
            shell.delivered.insert(msg_id, consumer.chan);
        }
        let d = Deliver {
            queue: me.clone(),
            consumer_tag: l.tag.clone(),
            no_ack: l.no_ack,
            entry: entry(msg_id, &msg, redelivered, count),
            msg,
            gate: l.handle.gate.clone(),
            units,
        };
        let (key, no_ack, to) = (l.key, l.no_ack, l.handle.deliver.clone());
        match self.outbox.iter_mut().find(|(k, _, _)| *k == key) {
            Some((_, _, v)) => v.push(d),
            None => self.outbox.push((key, to, vec![d])),
        }
        me.counters.delivered.fetch_add(1, Ordering::Relaxed);
        if redelivered {
            me.counters.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        no_ack
    }

    /// The group is gone with its queue: stopped, its log and snapshot dropped.
    pub(crate) fn quorum_remove(&mut self) {
        let Some(shell) = self.quorum.as_mut() else {
            return;
        };
        shell.proposer = None;
        shell.outbound = None;
        let Some(group) = shell.group.take() else {
            return;
        };
        let cluster = shell.cluster.clone();
        cluster
            .qq_local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&group.id);
        let name = self.name.clone();
        let stop = async move {
            match cluster.quorum() {
                // unregistered from the transport too: no RPC or forward reaches it
                Some(qn) if qn.groups().get(group.id).is_some() => qn.stop_group(group.id).await,
                _ => {
                    let _ = group.raft.shutdown().await;
                }
            }
            if let Err(e) = cluster.log.drop_group(group.id) {
                tracing::warn!(queue = %name, "cannot drop the quorum queue's log: {e}");
            }
            if let Err(e) = cluster.snapshots.remove(group.id) {
                tracing::warn!(queue = %name, "cannot remove the quorum queue's snapshot: {e}");
            }
        };
        if let Some(h) = self.quorum.as_ref().and_then(|s| s.cluster.handle()) {
            h.spawn(stop);
        }
    }

    pub(crate) fn quorum_consume(
        &mut self,
        c: Consumer<super::ConsumerHandle>,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<(), AmqpError>> {
        let Some(shell) = self.quorum.as_mut() else {
            return Box::pin(actix::fut::ready(Ok(())));
        };
        shell.last_used = crate::broker::node::now_ms();
        let id = ConsumerId {
            chan: shell.chan(c.channel),
            tag: c.tag.to_string(),
        };
        let spec = Checkout::Consume {
            prefetch: c.data.gate.prefetch,
            no_ack: c.no_ack,
            priority: c.priority,
            exclusive: c.exclusive,
        };
        // known before the checkout applies: its own deliveries come with it
        shell.consumers.insert(
            id.clone(),
            Local {
                key: c.channel,
                tag: c.tag.clone(),
                handle: c.data,
                no_ack: c.no_ack,
                exclusive: c.exclusive,
                priority: c.priority,
            },
        );
        let (name, vhost) = (self.name.clone(), self.vhost_name());
        let op = QqOp::Checkout {
            consumer: id.clone(),
            spec,
        };
        Box::pin(
            self.quorum_call(op, ctx)
                .map(move |res, a: &mut Self, _| match res {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        if let Some(s) = a.quorum.as_mut() {
                            s.consumers.remove(&id);
                        }
                        Err(unavailable(&name, &vhost, &e))
                    }
                }),
        )
    }

    pub(crate) fn quorum_cancel(
        &mut self,
        channel: ChannelKey,
        tag: Arc<str>,
        ctx: &mut Context<Self>,
    ) {
        let Some(shell) = self.quorum.as_mut() else {
            return;
        };
        shell.last_used = crate::broker::node::now_ms();
        let id = ConsumerId {
            chan: shell.chan(channel),
            tag: tag.to_string(),
        };
        let op = QqOp::Checkout {
            consumer: id.clone(),
            spec: Checkout::Cancel,
        };
        // deliveries until the cancel applies still go out (the channel hands back
        // those that find the consumer gone)
        let f = self.quorum_call(op, ctx).map(move |_, a: &mut Self, _| {
            if let Some(s) = a.quorum.as_mut() {
                s.consumers.remove(&id);
            }
        });
        ctx.spawn(f);
    }

    pub(crate) fn quorum_get(
        &mut self,
        channel: ChannelKey,
        no_ack: bool,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Option<(Entry, Arc<Message>, u32)>> {
        let Some(shell) = self.quorum.as_mut() else {
            return Box::pin(actix::fut::ready(None));
        };
        shell.last_used = crate::broker::node::now_ms();
        let chan = shell.chan(channel);
        let op = QqOp::Checkout {
            consumer: ConsumerId {
                chan,
                tag: String::new(),
            },
            spec: Checkout::Get { no_ack },
        };
        Box::pin(self.quorum_call(op, ctx).map(move |res, a: &mut Self, _| {
            let got = match res {
                Ok(QqResp::Got(Some(g))) => g,
                Ok(_) => return None,
                Err(e) => {
                    tracing::warn!(queue = %a.name, "basic.get failed: {e}");
                    return None;
                }
            };
            a.quorum_got(chan, no_ack, got)
        }))
    }

    fn quorum_got(
        &mut self,
        chan: broker_core::quorum::ChanId,
        no_ack: bool,
        g: Got,
    ) -> Option<(Entry, Arc<Message>, u32)> {
        let m = match decode(&g.message, g.arrival_ms) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(queue = %self.name, "a message of the log does not decode: {e}");
                return None;
            }
        };
        // RabbitMQ puts x-delivery-count on every basic.get of a quorum queue
        let msg = Arc::new(deadletter::with_delivery_count(&m, g.delivery_count));
        if let Some(me) = self.me.upgrade() {
            me.counters.delivered.fetch_add(1, Ordering::Relaxed);
            if g.redelivered {
                me.counters.redelivered.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !no_ack {
            if let Some(s) = self.quorum.as_mut() {
                s.delivered.insert(g.msg_id, chan);
            }
        }
        let e = entry(g.msg_id, &msg, g.redelivered, g.delivery_count);
        Some((e, msg, u32::try_from(g.remaining).unwrap_or(u32::MAX)))
    }

    /// basic.ack / nack / reject, and deliveries handed back: by the channel each went to.
    pub(crate) fn quorum_settle(&mut self, s: Settle, ctx: &mut Context<Self>) {
        let (ids, kind) = match s {
            Settle::Ack(ids) => (ids, 0),
            Settle::Requeue(ids) => (ids, 1),
            Settle::Discard(ids) => (ids, 2),
            Settle::GiveBack(ids) => (ids, 3),
        };
        if kind == 0 {
            if let Some(me) = self.me.upgrade() {
                me.counters
                    .acked
                    .fetch_add(ids.len() as u64, Ordering::Relaxed);
            }
        }
        let Some(shell) = self.quorum.as_mut() else {
            return;
        };
        let mut by_chan: Vec<(broker_core::quorum::ChanId, Vec<MsgId>)> = Vec::new();
        for id in ids {
            let Some(chan) = shell.delivered.remove(&id) else {
                continue;
            };
            match by_chan.iter_mut().find(|(c, _)| *c == chan) {
                Some((_, v)) => v.push(id),
                None => by_chan.push((chan, vec![id])),
            }
        }
        for (channel, ids) in by_chan {
            let op = match kind {
                0 => QqOp::Settle { channel, ids },
                1 => QqOp::Return { channel, ids },
                3 => QqOp::GiveBack { channel, ids },
                _ => QqOp::Discard { channel, ids },
            };
            self.quorum_cast(op, ctx);
        }
    }

    /// Deliveries that never reached the client: back to the queue.
    pub(crate) fn quorum_restore(&mut self, entries: Vec<Entry>, ctx: &mut Context<Self>) {
        let ids = entries.iter().map(|e| e.id).collect();
        self.quorum_settle(Settle::GiveBack(ids), ctx);
    }

    pub(crate) fn quorum_channel_closed(&mut self, key: ChannelKey, ctx: &mut Context<Self>) {
        let Some(shell) = self.quorum.as_mut() else {
            return;
        };
        let chan = shell.chan(key);
        shell.consumers.retain(|c, _| c.chan != chan);
        shell.delivered.retain(|_, c| *c != chan);
        self.quorum_cast(QqOp::Down(Down::Channel(chan)), ctx);
    }

    pub(crate) fn quorum_purge(&mut self, ctx: &mut Context<Self>) -> ResponseActFuture<Self, u32> {
        Box::pin(
            self.quorum_call(QqOp::Purge, ctx)
                .map(|res, a: &mut Self, _| match res {
                    Ok(QqResp::Purged(n)) => u32::try_from(n).unwrap_or(u32::MAX),
                    Ok(_) => 0,
                    Err(e) => {
                        tracing::warn!(queue = %a.name, "purge failed: {e}");
                        0
                    }
                }),
        )
    }

    /// (ready, consumers, unacked) after the last applied entry.
    pub(crate) fn quorum_counts(&self) -> (u64, u64, u64) {
        let Some(g) = self.quorum.as_ref().and_then(|s| s.group.as_ref()) else {
            return (0, 0, 0);
        };
        let c = g.sm.counts();
        (
            c.ready.load(Ordering::Relaxed),
            c.consumers.load(Ordering::Relaxed),
            c.unacked.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn quorum_delete(
        &mut self,
        if_unused: bool,
        if_empty: bool,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<u32, AmqpError>> {
        // every command before the delete is applied first, so the counts are current
        let sync = self.quorum_call(QqOp::Tick, ctx);
        let (name, vhost) = (self.name.clone(), self.vhost_name());
        Box::pin(sync.map(move |_, a: &mut Self, _| {
            if a.deleted {
                return Ok(0);
            }
            let (ready, consumers, _) = a.quorum_counts();
            if if_unused && consumers > 0 {
                return Err(AmqpError::precondition_failed(format!(
                    "queue '{name}' in vhost '{vhost}' in use"
                )));
            }
            if if_empty && ready > 0 {
                return Err(AmqpError::precondition_failed(format!(
                    "queue '{name}' in vhost '{vhost}' not empty"
                )));
            }
            a.cancel_all_consumers();
            a.deleted = true;
            a.quorum_remove();
            Ok(u32::try_from(ready).unwrap_or(u32::MAX))
        }))
    }

    /// Cancels every local consumer (the queue is going away).
    pub(crate) fn quorum_cancel_all(&mut self) {
        let Some(shell) = self.quorum.as_mut() else {
            return;
        };
        for (_, l) in shell.consumers.drain() {
            l.handle.cancel.do_send(ConsumerCancelled {
                consumer_tag: l.tag,
            });
        }
    }

    /// What the management API shows.
    pub(crate) fn quorum_info(&self) -> QueueInfo {
        let (ready, _, unacked) = self.quorum_counts();
        let consumers = self.quorum.as_ref().map_or_else(Vec::new, |s| {
            let mut v: Vec<_> = s
                .consumers
                .values()
                .map(|l| (l.key, l.tag.clone(), !l.no_ack, l.exclusive, l.priority))
                .collect();
            v.sort_by(|a, b| {
                (a.0.connection, a.0.channel, &a.1).cmp(&(b.0.connection, b.0.channel, &b.1))
            });
            v
        });
        let delayed = self
            .quorum
            .as_ref()
            .and_then(|s| s.group.as_ref())
            .map_or(0, |g| g.sm.counts().delayed.load(Ordering::Relaxed));
        QueueInfo {
            ready,
            unacked,
            bytes: 0,
            consumers,
            leader: self.quorum.as_ref().and_then(|s| s.leader_name()),
            delayed,
        }
    }

    /// A policy changed the settings: the group applies them.
    pub(crate) fn quorum_policy(
        &mut self,
        args: broker_core::args::QueueArgs,
        ctx: &mut Context<Self>,
    ) {
        let config = broker_core::quorum::QqConfig::from_args(&args);
        self.state.set_args(args);
        self.quorum_cast(QqOp::Configure(config), ctx);
    }
}

/// Counts one more no-ack delivery to `consumer` (its credit to grant back).
pub(super) fn count_credit(credit: &mut Vec<(ConsumerId, u32)>, consumer: ConsumerId) {
    match credit.iter_mut().find(|(c, _)| *c == consumer) {
        Some((_, n)) => *n += 1,
        None => credit.push((consumer, 1)),
    }
}
