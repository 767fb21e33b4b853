//! The messages a queue actor answers, and its handlers: each runs inside
//! [`QueueActor::operate`], which sets the clock and does the housekeeping after it.

use super::{stored, ConsumerHandle, QueueActor, Recovered};
use actix::prelude::*;
use broker_core::args::QueueArgs;
use broker_core::message::Slot;
use broker_core::names::ChannelKey;
use broker_core::queue::{Consumer, Entry, MsgId, QueueState};
use broker_core::{AmqpError, Message};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Wakes the actor to take in the messages in its [`super::Inbox`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct TakeInbox;

/// A message a full queue with x-overflow reject-publish-dlx refused at the channel: it
/// is dead-lettered without being queued.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Refused(pub Arc<Message>);

impl Handler<Refused> for QueueActor {
    type Result = ();
    fn handle(&mut self, msg: Refused, ctx: &mut Context<Self>) {
        if self.deleted || self.quorum.is_some() {
            return;
        }
        self.operate(ctx, |a, _| a.state.refused(msg.0));
    }
}

/// The queue's policies changed: it takes its entry's new arguments (RabbitMQ's
/// `policy_changed`). The message carries nothing, so two changes in quick succession
/// cannot arrive in the wrong order: the actor always reads the latest.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PolicyChanged;

impl Handler<PolicyChanged> for QueueActor {
    type Result = ();
    fn handle(&mut self, _: PolicyChanged, ctx: &mut Context<Self>) {
        let Some(me) = self.me.upgrade() else { return };
        if self.deleted {
            return;
        }
        let args = QueueArgs::clone(&me.args.load());
        if let Some(s) = self.stream.as_ref() {
            // a stream's policy keys are its retention, applied at the next commit
            s.log.set_retention(super::retention(&args));
            return;
        }
        if self.quorum.is_some() {
            self.quorum_policy(args, ctx);
            return;
        }
        self.operate(ctx, |a, ctx| {
            a.state.set_args(args);
            a.state.expire();
            a.schedule_expires(ctx);
            a.drain();
        });
    }
}

/// Subscribes a consumer.
#[derive(Message)]
#[rtype(result = "Result<(), AmqpError>")]
pub struct Consume(
    pub Consumer<ConsumerHandle>,
    pub broker_wire::types::FieldTable,
);

/// Unsubscribes a consumer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Cancel {
    /// Its channel.
    pub channel: ChannelKey,
    /// Its tag.
    pub tag: Arc<str>,
}

/// basic.get.
#[derive(Message)]
#[rtype(result = "Option<(Entry, Arc<Message>, u32)>")]
pub struct Get {
    /// The asking channel.
    pub channel: ChannelKey,
    /// Whether the message is settled on delivery.
    pub no_ack: bool,
}

/// Settles deliveries.
#[derive(Message)]
#[rtype(result = "()")]
pub enum Settle {
    /// basic.ack.
    Ack(Vec<MsgId>),
    /// nack/reject with requeue, recover, or a closed channel: back with redelivered set.
    Requeue(Vec<MsgId>),
    /// nack/reject without requeue: dead-lettered with reason `rejected`.
    Discard(Vec<MsgId>),
    /// Handed back by the broker, not a client (a move that could not place them, a
    /// delivery that never reached its consumer): back to their place as they were,
    /// not counted as a return.
    GiveBack(Vec<MsgId>),
}

/// Deliveries that never reached the client (their consumer was cancelled first): put
/// back unchanged.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Restore {
    /// The deliveries.
    pub entries: Vec<Entry>,
    /// Whether they were no-ack deliveries (not tracked as unacked).
    pub no_ack: bool,
}

/// A channel closed: drop its consumers and requeue its unacked deliveries.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChannelClosed(pub ChannelKey);

/// A consumer got room again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Kick;

/// Counts for declare-ok and listings: (ready, consumers, unacked).
#[derive(Message, Default)]
#[rtype(result = "(u32, u32, u32)")]
pub struct Stats {
    /// Asked by a queue.declare (which counts as use for x-expires).
    pub declare: bool,
}

/// queue.purge.
#[derive(Message)]
#[rtype(result = "u32")]
pub struct Purge;

/// queue.delete: checks the conditions, cancels consumers, replies the message count.
#[derive(Message)]
#[rtype(result = "Result<u32, AmqpError>")]
pub struct DeleteQueue {
    /// Refuse if there are consumers.
    pub if_unused: bool,
    /// Refuse if there are ready messages.
    pub if_empty: bool,
}

impl Handler<TakeInbox> for QueueActor {
    type Result = ();
    fn handle(&mut self, _: TakeInbox, ctx: &mut Context<Self>) {
        if self.quorum.is_some() {
            self.quorum_take_inbox(false, ctx);
            return;
        }
        // `guarded` takes the inbox in before anything else
        self.operate(ctx, |_, _| {});
    }
}

impl QueueActor {
    /// Takes in every published message waiting in the inbox, in order, and delivers.
    /// Connections paused on this queue's credit are woken at the end of the turn.
    pub(super) fn take_inbox(&mut self) {
        if self.quorum.is_some() {
            // taken in by the quorum shell, as its group's entries
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        let batch = me.inbox.take();
        if batch.is_empty() {
            return;
        }
        // counted here, once per batch, not by each publish on its own thread
        me.counters
            .published
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if self.deleted {
            return;
        }
        // with a length limit, deliver after each publish, so a consumer with room gets a
        // message before drop-head would drop it; otherwise once for the whole batch
        let each = self.state.args().has_length_limit();
        // past the window, the state spills what comes in (`spilling`)
        for msg in batch {
            if self.state.publish(msg).is_none() {
                // refused by a full reject-publish queue the channel thought had room
                continue;
            }
            if each {
                self.deliver_or_expire();
            }
        }
        if !each {
            self.deliver_or_expire();
        }
    }

    /// Delivers what consumers have room for; then a TTL of 0 that no consumer could
    /// take dies now.
    fn deliver_or_expire(&mut self) {
        self.drain();
        self.state.expire_due();
    }
}

impl Handler<Consume> for QueueActor {
    type Result = ResponseActFuture<Self, Result<(), AmqpError>>;
    fn handle(&mut self, msg: Consume, ctx: &mut Context<Self>) -> Self::Result {
        if self.stream.is_some() && !self.deleted {
            return Box::pin(fut::ready(self.stream_consume(msg.0, &msg.1)));
        }
        if self.deleted {
            return Box::pin(fut::ready(Err(AmqpError::not_found(format!(
                "no queue '{}' in vhost '{}'",
                self.name,
                self.vhost_name()
            )))));
        }
        if self.quorum.is_some() {
            return self.quorum_consume(msg.0, ctx);
        }
        let name = self.name.clone();
        Box::pin(fut::ready(self.operate(ctx, |a, _| {
            let vhost = a.vhost_name();
            a.state.add_consumer(msg.0, &name, &vhost)?;
            a.touch();
            a.drain();
            Ok(())
        })))
    }
}

impl Handler<Cancel> for QueueActor {
    type Result = ();
    fn handle(&mut self, msg: Cancel, ctx: &mut Context<Self>) {
        if let Some(s) = self.stream.as_mut() {
            s.cancel(msg.channel, &msg.tag);
            // a group's next member may have taken over
            self.stream_deliver();
            return;
        }
        if self.quorum.is_some() {
            self.quorum_cancel(msg.channel, msg.tag, ctx);
            return;
        }
        self.operate(ctx, |a, _| {
            if a.state.remove_consumer(msg.channel, &msg.tag).is_some() {
                a.maybe_auto_delete();
            }
        });
    }
}

impl Handler<Get> for QueueActor {
    type Result = ResponseActFuture<Self, Option<(Entry, Arc<Message>, u32)>>;
    fn handle(&mut self, msg: Get, ctx: &mut Context<Self>) -> Self::Result {
        if self.stream.is_some() || self.deleted {
            // a stream has no basic.get (refused at the channel)
            return Box::pin(fut::ready(None));
        }
        if self.quorum.is_some() {
            return self.quorum_get(msg.channel, msg.no_ack, ctx);
        }
        Box::pin(fut::ready(self.get_classic(msg, ctx)))
    }
}

impl QueueActor {
    fn get_classic(
        &mut self,
        msg: Get,
        ctx: &mut Context<Self>,
    ) -> Option<(Entry, Arc<Message>, u32)> {
        self.operate(ctx, |a, _| {
            a.touch();
            let (e, m) = loop {
                let mut e = a.state.get(msg.channel, msg.no_ack)?;
                let persist_id = match &e.msg {
                    Slot::Loaded(m) => {
                        let m = m.clone();
                        break (e, m);
                    }
                    Slot::Paged { persist_id, .. } => *persist_id,
                };
                match stored::page_in(&a.stored(), persist_id) {
                    Ok(m) => {
                        e.msg = Slot::Loaded(m.clone());
                        break (e, m);
                    }
                    Err(err) => {
                        if a.read_failed(persist_id, &err) {
                            // kept at the head; this get answers get-empty
                            a.state.restore(vec![e], msg.no_ack);
                            return None;
                        }
                        if !msg.no_ack {
                            a.state.lose(e.id);
                        }
                        a.forget(std::slice::from_ref(&e));
                    }
                }
            };
            if let Some(me) = a.me.upgrade() {
                me.counters.delivered.fetch_add(1, Ordering::Relaxed);
                if e.redelivered {
                    me.counters.redelivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            if msg.no_ack {
                a.forget(std::slice::from_ref(&e));
            } else {
                a.note_delivered(&e);
            }
            let m = if a.state.args().delivery_limit.is_some() && e.returns > 0 {
                Arc::new(super::deadletter::with_delivery_count(&m, e.returns))
            } else {
                m
            };
            Some((e, m, a.state.ready_count() as u32))
        })
    }
}

/// A settle from a consumer of another node, with the gates whose prefetch credit it
/// gives back: released here, just before the settle is carried out and the queue
/// looks for room, so a requeued message is back before the credit can take another.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SettleReleasing {
    /// The settle.
    pub settle: Settle,
    /// One gate per settled delivery.
    pub release: Vec<Arc<crate::broker::flow::ConsumerGate>>,
}

impl Handler<SettleReleasing> for QueueActor {
    type Result = ();
    fn handle(&mut self, m: SettleReleasing, ctx: &mut Context<Self>) {
        for g in &m.release {
            g.settled();
        }
        <Self as Handler<Settle>>::handle(self, m.settle, ctx);
    }
}

impl Handler<Settle> for QueueActor {
    type Result = ();
    fn handle(&mut self, msg: Settle, ctx: &mut Context<Self>) {
        if self.stream.is_some() {
            // credit came back through the consumers' gates; acks move tracked offsets
            self.stream_settle(msg, ctx);
            return;
        }
        if self.quorum.is_some() {
            self.quorum_settle(msg, ctx);
            return;
        }
        self.operate(ctx, |a, _| {
            match msg {
                Settle::Ack(ids) => {
                    let done = a.state.ack(&ids);
                    if let Some(me) = a.me.upgrade() {
                        me.counters
                            .acked
                            .fetch_add(done.len() as u64, Ordering::Relaxed);
                    }
                    a.forget(&done);
                }
                Settle::Requeue(ids) => {
                    a.state.requeue(&ids, true);
                }
                Settle::GiveBack(ids) => {
                    a.state.give_back(&ids);
                }
                Settle::Discard(ids) => {
                    // dead-lettered (reason rejected) by the housekeeping that follows
                    a.state.discard(&ids);
                }
            }
            a.drain();
        });
    }
}

impl Handler<Restore> for QueueActor {
    type Result = ();
    fn handle(&mut self, msg: Restore, ctx: &mut Context<Self>) {
        if self.stream.is_some() {
            // a stream keeps every message: nothing to put back
            let _ = msg;
            return;
        }
        if self.quorum.is_some() {
            if !msg.no_ack {
                self.quorum_restore(msg.entries, ctx);
            }
            return;
        }
        self.operate(ctx, |a, _| {
            a.state.restore(msg.entries, msg.no_ack);
            a.drain();
        });
    }
}

impl Handler<ChannelClosed> for QueueActor {
    type Result = ();
    fn handle(&mut self, msg: ChannelClosed, ctx: &mut Context<Self>) {
        if let Some(s) = self.stream.as_mut() {
            s.channel_closed(msg.0);
            self.stream_deliver();
            return;
        }
        if self.quorum.is_some() {
            self.quorum_channel_closed(msg.0, ctx);
            return;
        }
        self.operate(ctx, |a, _| {
            if a.state.channel_closed(msg.0) > 0 {
                a.maybe_auto_delete();
            }
            a.drain();
        });
    }
}

impl Handler<Kick> for QueueActor {
    type Result = ();
    fn handle(&mut self, _: Kick, ctx: &mut Context<Self>) {
        if self.stream.is_some() {
            self.stream_deliver();
            return;
        }
        if self.quorum.is_some() {
            // the group's credit decides deliveries
            return;
        }
        self.operate(ctx, |a, _| a.drain());
    }
}

impl Handler<Stats> for QueueActor {
    type Result = MessageResult<Stats>;
    fn handle(&mut self, msg: Stats, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(s) = self.stream.as_ref() {
            let count = u32::try_from(s.log.message_count()).unwrap_or(u32::MAX);
            return MessageResult((count, s.consumer_count() as u32, 0));
        }
        if self.quorum.is_some() {
            let (ready, consumers, unacked) = self.quorum_counts();
            let n = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
            return MessageResult((n(ready), n(consumers), n(unacked)));
        }
        if msg.declare {
            self.touch();
        }
        // messages whose TTL passed are gone before they are counted
        self.operate(ctx, |a, _| a.state.expire());
        MessageResult((
            self.state.ready_count() as u32,
            self.state.consumer_count() as u32,
            self.state.unacked_count() as u32,
        ))
    }
}

impl Handler<Purge> for QueueActor {
    type Result = ResponseActFuture<Self, u32>;
    fn handle(&mut self, _: Purge, ctx: &mut Context<Self>) -> Self::Result {
        if self.stream.is_some() {
            // refused at the channel; a stream is trimmed by its retention only
            return Box::pin(fut::ready(0));
        }
        if self.quorum.is_some() {
            return self.quorum_purge(ctx);
        }
        Box::pin(fut::ready(self.operate(ctx, |a, _| {
            let gone = a.state.purge();
            a.forget(&gone.entries);
            a.forget_ids(&gone.spilled_persisted);
            gone.count as u32
        })))
    }
}

impl Handler<DeleteQueue> for QueueActor {
    type Result = ResponseActFuture<Self, Result<u32, AmqpError>>;
    fn handle(&mut self, msg: DeleteQueue, ctx: &mut Context<Self>) -> Self::Result {
        if self.stream.is_some() {
            if self.deleted {
                return Box::pin(fut::ready(Ok(0)));
            }
            return Box::pin(fut::ready(self.stream_delete(msg.if_unused)));
        }
        if self.quorum.is_some() {
            if self.deleted {
                return Box::pin(fut::ready(Ok(0)));
            }
            return self.quorum_delete(msg.if_unused, msg.if_empty, ctx);
        }
        Box::pin(fut::ready(self.delete_classic(msg, ctx)))
    }
}

impl QueueActor {
    fn delete_classic(
        &mut self,
        msg: DeleteQueue,
        ctx: &mut Context<Self>,
    ) -> Result<u32, AmqpError> {
        let name = self.name.clone();
        self.operate(ctx, |a, _| {
            let vhost = a.vhost_name();
            a.state
                .check_delete(msg.if_unused, msg.if_empty, &name, &vhost)?;
            let n = a.state.ready_count() as u32;
            a.cancel_all_consumers();
            a.deleted = true;
            // `operate` accounts the bytes released here
            a.state = QueueState::new(a.state.args().clone());
            Ok(n)
        })
    }
}

/// Messages recovered from the store at start, in order, with their delivered flag.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Recover(pub Vec<Recovered>);

impl Handler<Recover> for QueueActor {
    type Result = ();
    fn handle(&mut self, msg: Recover, ctx: &mut Context<Self>) {
        if self.quorum.is_some() {
            // its messages are in its group's log, not the message store
            return;
        }
        self.operate(ctx, |a, _| {
            for r in msg.0 {
                a.state.publish_recovered(r.slot, r.meta, r.delivered);
            }
            // those whose TTL passed while the broker was down die now
            a.state.expire();
            a.drain();
        });
    }
}

/// Records the delivered mark at once (at shutdown, so a clean stop loses none).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SaveDeliveredMark;

impl Handler<SaveDeliveredMark> for QueueActor {
    type Result = ();
    fn handle(&mut self, _: SaveDeliveredMark, _: &mut Context<Self>) {
        if let Some(s) = self.stream.as_ref() {
            // at shutdown: a stream's tracked offsets, at once
            if let Err(e) = s.log.save_offsets(s.tracked()) {
                tracing::warn!(queue = %self.name, "{e}");
            }
            return;
        }
        if self.quorum.is_some() {
            return;
        }
        self.write_delivered_mark();
    }
}

/// Test hook: makes the queue actor panic inside a handler, as a bug would.
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

#[cfg(test)]
impl Handler<Crash> for QueueActor {
    type Result = ();
    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        self.operate(ctx, |_, _| panic!("injected failure"))
    }
}

/// What the management API shows of a queue: counts, bytes, consumers.
#[derive(Debug, Clone, Default)]
pub struct QueueInfo {
    /// Ready messages.
    pub ready: u64,
    /// Unacked deliveries.
    pub unacked: u64,
    /// Bytes held (bodies and properties).
    pub bytes: u64,
    /// Consumers: (channel key, tag, ack required, exclusive, priority).
    pub consumers: Vec<(ChannelKey, Arc<str>, bool, bool, i64)>,
    /// A quorum queue's leader as this node knows it (`None`: not known, or not a
    /// quorum queue).
    pub leader: Option<String>,
    /// Returned messages waiting out their retry back-off (`x-delayed-retry-*`).
    pub delayed: u64,
}

/// Asks for a [`QueueInfo`].
#[derive(Message)]
#[rtype(result = "QueueInfo")]
pub struct Info;

impl Handler<Info> for QueueActor {
    type Result = MessageResult<Info>;
    fn handle(&mut self, _: Info, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(s) = self.stream.as_ref() {
            let (_, bytes) = s.log.disk_use();
            return MessageResult(QueueInfo {
                ready: self.stream_count(),
                unacked: 0,
                bytes,
                consumers: s.consumers(),
                leader: None,
                delayed: 0,
            });
        }
        if self.quorum.is_some() {
            return MessageResult(self.quorum_info());
        }
        self.operate(ctx, |a, _| a.state.expire());
        MessageResult(QueueInfo {
            ready: self.state.ready_count() as u64,
            unacked: self.state.unacked_count() as u64,
            bytes: self.state.bytes() as u64,
            consumers: self
                .state
                .consumers()
                .iter()
                .map(|c| (c.channel, c.tag.clone(), !c.no_ack, c.exclusive, c.priority))
                .collect(),
            leader: None,
            delayed: self.state.delayed_count() as u64,
        })
    }
}
