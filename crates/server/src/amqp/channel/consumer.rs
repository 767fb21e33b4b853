//! The consumer actor: one per basic.consume, living on its channel's thread. It is what
//! a queue delivers to (the [`ConsumerHandle`]'s `Recipient`s point here, not at the
//! channel, so a delivery costs no extra mailbox hop) and it writes its deliveries into
//! the connection's buffer itself (`deliver.rs`). Delivery tags and the unacked map stay
//! per channel, because acks come to the channel: the two share [`Deliveries`] through an
//! `Rc<RefCell<..>>` (same thread, no lock).
//!
//! Lifecycle:
//! - it starts **held** (its mailbox waits on a oneshot) and the channel releases it after
//!   writing basic.consume-ok, so consume-ok always comes before the first delivery;
//! - it is **live** while its channel's [`Deliveries::consumers`] holds its tag with its
//!   gate: basic.cancel, channel close or a channel crash take it out, and from then on
//!   every delivery still on its way is handed back to its queue (`queue::Restore`);
//! - it ends by itself once nobody can send it anything: its queue dropped it (cancel,
//!   channel closed, queue deleted) and its mailbox is empty (the channel holds only a
//!   `WeakAddr`, for fault injection);
//! - a **panic** in it (`broker/supervise.rs`): the consumer is cancelled (basic.cancel to
//!   the client, as a queue deletion does) and removed from its queue, which requeues what
//!   it held; the channel lets go of those delivery tags (an ack of one is still accepted,
//!   and goes nowhere) and lives on.

use super::ChannelActor;
use crate::amqp::connection::{Connection, Flush};
use crate::amqp::shared::ConnShared;
use crate::broker::flow::ConsumerGate;
use crate::broker::queue::{ConsumerCancelled, QueueEntry};
use crate::broker::runtime::ChannelStats;
use crate::broker::supervise::{Kind, Supervisable};
use actix::prelude::*;
use actix::WeakAddr;
use broker_core::channel::Unacked;
use broker_core::names::ChannelKey;
use broker_core::queue::MsgId;
use broker_core::AmqpError;
use broker_wire::protocol::{basic as b, AMQPClass};
use futures::channel::oneshot;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

/// What settling a delivery tag needs.
pub(crate) struct Pending {
    pub queue: Arc<QueueEntry>,
    pub id: MsgId,
    /// The consumer's gate (None for basic.get).
    pub gate: Option<Arc<ConsumerGate>>,
    /// Its consumer failed and its queue took the delivery back: a settle of the tag is
    /// accepted and goes nowhere (its credit was given back then).
    pub detached: bool,
}

/// A consumer on this channel, as the channel sees it.
pub(crate) struct ConsumerRec {
    pub queue: Arc<QueueEntry>,
    pub gate: Arc<ConsumerGate>,
    /// Its actor, for fault injection; weak, so the actor ends when its queue drops it.
    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    pub addr: WeakAddr<ConsumerActor>,
}

/// What a channel shares with its consumer actors (all on the connection's thread).
#[derive(Default)]
pub(crate) struct Deliveries {
    /// Delivery tags, and the deliveries awaiting ack.
    pub unacked: Unacked<Pending>,
    /// The live consumers, by tag.
    pub consumers: HashMap<Arc<str>, ConsumerRec>,
    /// A consumer hit a channel error (the channel is closing on its account): no
    /// consumer writes another delivery.
    pub failed: bool,
}

/// The per-channel [`Deliveries`], shared.
pub(crate) type SharedDeliveries = Rc<RefCell<Deliveries>>;

/// The consumer actor.
pub struct ConsumerActor {
    pub(super) tag: Arc<str>,
    pub(super) gate: Arc<ConsumerGate>,
    pub(super) queue: Arc<QueueEntry>,
    pub(super) key: ChannelKey,
    pub(super) shared: Rc<ConnShared>,
    pub(super) deliveries: SharedDeliveries,
    pub(super) conn: Addr<Connection>,
    /// Its channel, told of a channel error met while delivering.
    channel: WeakAddr<ChannelActor>,
    pub(super) stats: Arc<ChannelStats>,
    span: tracing::Span,
    /// Released by the channel once consume-ok is written (taken in `started`).
    hold: Option<oneshot::Receiver<()>>,
}

impl ConsumerActor {
    /// A consumer `tag` of channel `ch` on `queue`, held until `hold` fires (or its sender
    /// is dropped).
    pub(super) fn new(
        ch: &ChannelActor,
        me: WeakAddr<ChannelActor>,
        tag: Arc<str>,
        gate: Arc<ConsumerGate>,
        queue: Arc<QueueEntry>,
        hold: oneshot::Receiver<()>,
    ) -> Self {
        let span = tracing::info_span!(parent: &ch.span, "consumer", tag = %tag);
        Self {
            tag,
            gate,
            queue,
            key: ch.key,
            shared: ch.shared.clone(),
            deliveries: ch.deliveries.clone(),
            conn: ch.conn.clone(),
            channel: me,
            stats: ch.stats.clone(),
            span,
            hold: Some(hold),
        }
    }

    /// Whether the channel still counts this consumer as its own (and writes deliveries).
    pub(super) fn live(&self) -> bool {
        let d = self.deliveries.borrow();
        !d.failed
            && d
                .consumers
                .get(&self.tag)
                .is_some_and(|c| Arc::ptr_eq(&c.gate, &self.gate))
    }

    /// Takes this consumer out of its channel; true if it was live.
    fn leave(&self) -> bool {
        if !self.live() {
            return false;
        }
        self.deliveries.borrow_mut().consumers.remove(&self.tag);
        true
    }

    /// Asks the connection to write out its buffer.
    pub(super) fn request_flush(&self) {
        if !self.shared.flush_requested.replace(true) {
            self.conn.do_send(Flush);
        }
    }

    /// A channel error met while delivering: no consumer of the channel writes another
    /// delivery from now on, and the channel closes with `e`.
    pub(super) fn fail_channel(&self, e: AmqpError) {
        self.deliveries.borrow_mut().failed = true;
        if let Some(ch) = self.channel.upgrade() {
            ch.do_send(ChannelFail(e));
        }
    }

    /// Tells the client the server cancelled this consumer (basic.cancel, nowait).
    fn send_cancel(&self) {
        match broker_core::names::shortstr("consumer tag", &self.tag) {
            Ok(consumer_tag) => {
                let m = AMQPClass::Basic(b::AMQPMethod::Cancel(b::Cancel {
                    consumer_tag,
                    nowait: true,
                }));
                self.shared.method(self.key.channel, &m);
                self.request_flush();
            }
            Err(e) => self.fail_channel(e),
        }
    }

    /// After this consumer failed: the channel lets go of the deliveries it holds unacked
    /// (its queue requeues them), giving their credit back, and wakes the queues of
    /// consumers that channel-wide prefetch held back.
    fn detach_unacked(&self) {
        let mut d = self.deliveries.borrow_mut();
        let mut freed = 0usize;
        d.unacked.retain(|_, p| {
            let mine = p.gate.as_ref().is_some_and(|g| Arc::ptr_eq(g, &self.gate));
            if mine && !p.detached {
                p.detached = true;
                self.gate.settled();
                freed += 1;
            }
            true
        });
        if freed > 0 {
            for c in d.consumers.values() {
                if c.gate.take_blocked() {
                    c.queue.kick();
                }
            }
        }
    }
}

impl Actor for ConsumerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // nothing in the mailbox runs until the channel has written consume-ok
        if let Some(hold) = self.hold.take() {
            ctx.wait(actix::fut::wrap_future::<_, Self>(hold).map(|_, _, _| ()));
        }
    }
}

impl Supervisable for ConsumerActor {
    const KIND: Kind = Kind::Consumer;
}

/// After a panic anywhere in the consumer (`broker/supervise.rs`): it is cancelled as if
/// its queue had gone (basic.cancel to the client) and leaves its queue, which requeues
/// what it held, redelivered. Deliveries already on their way find it gone and go back.
/// The channel and its other consumers carry on.
impl Supervised for ConsumerActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        if !self.leave() {
            return;
        }
        {
            let _s = self.span.enter();
            tracing::warn!("consumer failed: cancelled, its deliveries requeued");
        }
        self.send_cancel();
        self.detach_unacked();
        self.queue.drop_consumer(self.key, self.tag.clone());
    }
}

/// The queue of this consumer was deleted, restarted or timed the consumer out.
impl Handler<ConsumerCancelled> for ConsumerActor {
    type Result = ();
    fn handle(&mut self, _: ConsumerCancelled, _: &mut Context<Self>) {
        if self.leave() {
            self.send_cancel();
        }
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::broker::fault::Fault> for ConsumerActor {
    type Result = ();
    fn handle(&mut self, f: crate::broker::fault::Fault, ctx: &mut Context<Self>) {
        crate::broker::fault::inject(f.at, ctx);
    }
}

/// A consumer of this channel met a channel error while delivering (a content header
/// larger than frame_max): the channel closes with it.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ChannelFail(pub AmqpError);

impl Handler<ChannelFail> for ChannelActor {
    type Result = ();
    fn handle(&mut self, m: ChannelFail, ctx: &mut Context<Self>) {
        self.fail(m.0, ctx);
    }
}
