//! The queue actor: one per queue, owning its [`QueueState`] and delivering to consumers'
//! channels. It sets the state's clock before each operation, runs its timers (message
//! TTL, x-expires, consumer timeout), and dead-letters what the state says died. It runs
//! under `broker/supervise.rs`: a panic in a handler, timer or continuation restarts it
//! at the same address; its consumers get basic.cancel, transient messages are lost and
//! a durable queue reloads its stored ones (docs/architecture.md).

mod consumer;
mod deadletter;
mod entry;
mod handlers;
mod inbox;
mod lifecycle;
mod ops;
mod paging;
mod peek;
mod quorum;
mod remote;
mod stored;
mod stream;

pub use consumer::{ConsumerCancelled, ConsumerHandle, Deliver, DeliverBatch};
use crossbeam_utils::CachePadded;
pub use entry::{may_refuse, QueueCounters, QueueEntry};
pub use handlers::*;
pub use inbox::{Inbox, Ticket};
pub use peek::{Peek, Peeked, PEEK_MAX};
pub use quorum::{outcome_channel, QuorumConfirmed, QuorumDeleted, QuorumShell};
pub use remote::{remote_home, wire as remote_wire, Outbox, RemoteGot};
pub use stored::{load_entry, load_stored, Recovered};
pub use stream::{retention, StreamCommitted, StreamQueue};

use crate::broker::flow::ConsumerGate;
use crate::broker::node::{now_ms, Node};
use crate::broker::supervise::{self, Kind, Supervisable};
use actix::prelude::*;
use broker_core::args::{Overflow, QueueArgs};
use broker_core::message::Slot;
use broker_core::names::ChannelKey;
use broker_core::queue::spill::{WINDOW_BYTES, WINDOW_MESSAGES};
use broker_core::queue::{Entry, QueueState};
use broker_core::store::MessageStore;
use broker_core::{AmqpError, Message};
use broker_wire::types::FieldTable;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Stored messages a durable queue reads into memory when it loads; those behind them
/// come back as references (spilled past the window) and are read from the store as
/// they near delivery.
pub const PAGE_WINDOW: usize = WINDOW_MESSAGES;

/// What a delayed exchange's waiting room's name starts with, before the exchange's
/// name (`broker/delayed.rs`; logs only: the room is in no table by name).
pub const ROOM_PREFIX: &str = "amq.delayed.";

/// Publishes a channel may have in a queue's mailbox before its connection stops reading
/// from the socket (credit flow, as RabbitMQ's channel-to-queue credit).
pub const QUEUE_CREDIT: usize = 2000;

/// A queue with more ready messages than this that is delivering to consumers paces its
/// publishers to its deliveries (see [`QueueEntry::paced`]).
pub const PACE_BACKLOG: usize = 10_000;

/// Ready messages in all queues together above which a queue with more than
/// [`PACE_SHARE`] paces its publishers too: one publisher fanning out to a thousand
/// queues builds a large total out of backlogs that are each small (memory for the
/// queued references, latency for every consumer).
pub const PACE_TOTAL: usize = 100_000;

/// A queue's backlog that paces its publishers while the total is over [`PACE_TOTAL`].
pub const PACE_SHARE: usize = 64;

/// The window over which a queue looks at whether its consumers take new messages.
const PACE_ACTIVE_MS: u64 = 50;

/// The window over which a queue looks at whether its consumers take new messages: long
/// enough that a consumer slowed by its socket still counts as taking.
const TAKING_WINDOW_MS: u64 = 1000;

/// First deliveries (not redeliveries) per window that make consumers count as taking
/// from the queue: stuck or requeue-looping consumers never pace a publisher.
const PACE_MIN_FRESH: u64 = 1;

/// Credit a drain reserves at once for a no-ack consumer.
const BULK_CREDIT: u32 = 64;

/// How long a queue waits before it records its delivered mark in the store (so that a
/// busy queue writes it a few times a second, not once per delivery).
const MARK_DELAY: Duration = Duration::from_millis(100);

/// What a queue asks of the vhost it lives in. The vhost implements it (dead letters in
/// `broker/publish.rs`, forgetting in `broker/topology.rs`), so a queue never imports
/// the vhost and a vhost-less test can stand one up.
pub trait QueueHost: Send + Sync {
    /// The vhost's name (for error texts).
    fn vhost_name(&self) -> &str;
    /// Routes a message that died in queue `from` to `target`'s exchange with each of its
    /// routing keys, then stores and enqueues it as a publish would.
    fn dead_letter(&self, from: &str, target: &broker_core::deadletter::Target, msg: Message);
    /// The queue deleted itself (auto-delete, x-expires): forget it under its name's lock.
    fn queue_gone(&self, name: Arc<str>);
    /// A delayed exchange's waiting room hands over the messages whose delay is over,
    /// earliest first: route them through its exchange, then remove them from the room's
    /// store (`store`: the room's, when it is durable) (`broker/delayed.rs`).
    fn forward_due(&self, room: &Arc<QueueEntry>, due: Vec<Entry>, store: StoredAt);
}

/// A queue's place in the message store: the store and the queue's id in it.
pub type StoredAt = Option<(Arc<dyn broker_core::store::MessageStore>, u64)>;

/// What a queue actor carries out besides the classic queue's rules.
pub enum QueueKind {
    /// A classic queue: its state is the queue.
    Classic,
    /// A stream: its log.
    Stream(Arc<broker_store::stream::StreamLog>),
    /// A quorum queue: its Raft group's shell.
    Quorum(Box<QuorumShell>),
}

/// The queue actor.
pub struct QueueActor {
    name: Arc<str>,
    me: Weak<QueueEntry>,
    /// The vhost it lives in, for dead letters and deleting itself.
    host: Weak<dyn QueueHost>,
    /// The node's services (settings, memory gauge, store).
    node: Arc<Node>,
    state: QueueState<ConsumerHandle>,
    deleted: bool,
    /// Highest store id delivered so far (see [`MessageStore::mark_delivered`]).
    delivered_upto: u64,
    /// The delivered mark last written to the store.
    delivered_written: u64,
    /// A write of the delivered mark is scheduled.
    mark_scheduled: bool,
    /// The TTL timer: when it fires, and its handle.
    expiry_timer: Option<(u64, SpawnHandle)>,
    /// When a client last used the queue (x-expires).
    last_used: u64,
    /// The x-expires check's timer (replaced when a policy changes the expiry).
    expires_timer: Option<SpawnHandle>,
    /// A consumer-timeout check is scheduled.
    timeout_check: bool,
    /// `--consumer-timeout-ms`, read once (it is checked after every operation).
    consumer_timeout: Option<u64>,
    /// The message store and this queue's id in it (durable queues), looked up once.
    store: std::cell::OnceCell<Option<(Arc<dyn MessageStore>, u64)>>,
    /// Pacing: when the current window began, first deliveries in it, and in the last
    /// complete one.
    window_start: u64,
    window_fresh: u64,
    last_window_fresh: u64,
    /// A re-check of pacing is scheduled.
    pace_check: bool,
    /// A retry of reads that failed (spill or store) is scheduled.
    read_retry: bool,
    /// What this queue adds to the node's `ready_total`.
    counted_ready: usize,
    /// A paged message could not be read from the store (it stays queued).
    page_in_failed: bool,
    /// The store id whose read failed last, and how many times in a row.
    failed_read: (u64, u32),
    /// Deliveries made this turn, per channel; sent as one message per channel at the
    /// end of the turn (or before anything else is sent to consumers' channels).
    outbox: Vec<(ChannelKey, Recipient<DeliverBatch>, Vec<Deliver>)>,
    /// A stream (`x-queue-type: stream`): its log and readers; the handlers hand over
    /// to it, and `state` stays empty.
    stream: Option<Box<StreamQueue>>,
    /// A quorum queue (`x-queue-type: quorum`): its Raft group; the handlers hand over
    /// to it, and `state` stays empty (it keeps the arguments, for dead letters).
    quorum: Option<Box<QuorumShell>>,
}

impl QueueActor {
    /// Starts a queue actor for `me` on a worker, under a supervisor.
    pub fn spawn(
        arbiter: &ArbiterHandle,
        name: Arc<str>,
        args: QueueArgs,
        me: Weak<QueueEntry>,
        host: Weak<dyn QueueHost>,
        node: Arc<Node>,
        kind: QueueKind,
    ) -> Addr<QueueActor> {
        let (stream, quorum) = match kind {
            QueueKind::Classic => (None, None),
            QueueKind::Stream(log) => (Some(log), None),
            QueueKind::Quorum(shell) => (None, Some(shell)),
        };
        let consumer_timeout = Some(node.config.consumer_timeout_ms).filter(|t| *t > 0);
        let state = paging::spilling(QueueState::new(args), &node, &name);
        supervise::start_in_arbiter(arbiter, move |_| QueueActor {
            name,
            me,
            host,
            node,
            state,
            deleted: false,
            delivered_upto: 0,
            delivered_written: 0,
            mark_scheduled: false,
            expiry_timer: None,
            last_used: now_ms(),
            expires_timer: None,
            timeout_check: false,
            consumer_timeout,
            outbox: Vec::new(),
            store: std::cell::OnceCell::new(),
            window_start: 0,
            window_fresh: 0,
            last_window_fresh: 0,
            pace_check: false,
            read_retry: false,
            counted_ready: 0,
            page_in_failed: false,
            failed_read: (0, 0),
            stream: stream.map(|log| Box::new(StreamQueue::new(log))),
            quorum,
        })
    }

    /// Runs `f` on the state, then carries out what it left to do: dead letters, timers,
    /// the counters channels read, memory accounting. A panic anywhere in the actor is
    /// the supervisor's (`broker/supervise.rs`): it restarts the queue through
    /// [`Supervised::restarting`].
    fn operate<R>(
        &mut self,
        ctx: &mut Context<Self>,
        f: impl FnOnce(&mut Self, &mut Context<Self>) -> R,
    ) -> R {
        let before = self.state.bytes();
        self.state.tick(now_ms());
        self.take_inbox();
        let r = f(self, ctx);
        self.after(ctx);
        let after = self.state.bytes();
        self.node.message_bytes.adjust(before, after);
        r
    }

    /// Housekeeping after every operation.
    fn after(&mut self, ctx: &mut Context<Self>) {
        if self.state.is_waiting_room() {
            self.forward_due();
        }
        let dead = self.state.take_dead();
        if !dead.is_empty() && !self.deleted {
            self.dead_letter(dead);
            // dead letters may have freed room or come back here
            let more = self.state.take_dead();
            if !more.is_empty() {
                self.dead_letter(more);
            }
        }
        if self.delivered_upto > self.delivered_written && !self.mark_scheduled {
            self.mark_scheduled = true;
            ctx.run_later(MARK_DELAY, |a, _| a.write_delivered_mark());
        }
        self.schedule_expiry(ctx);
        self.schedule_timeout_check(ctx);
        self.schedule_read_retry(ctx);
        if let Some(me) = self.me.upgrade() {
            // only when changed: a store, even of the same value, takes the line away
            // from the publishers that read it
            let (len, bytes) = (
                self.state.ready_count(),
                self.state.ready_body_bytes() as u64,
            );
            if me.ready.0.load(Ordering::Relaxed) != len {
                me.ready.0.store(len, Ordering::Relaxed);
            }
            if me.ready.1.load(Ordering::Relaxed) != bytes {
                me.ready.1.store(bytes, Ordering::Relaxed);
            }
            self.pace(&me, ctx);
        }
        self.flush_deliveries();
    }

    /// Decides whether publishers are paced (a backlog over [`PACE_BACKLOG`], or over
    /// [`PACE_SHARE`] while all queues hold more than [`PACE_TOTAL`], that consumers are
    /// taking new messages from), and wakes the connections that wait for this queue
    /// once its inbox is back under credit and it is not paced.
    fn pace(&mut self, me: &QueueEntry, ctx: &mut Context<Self>) {
        let now = now_ms();
        if now.saturating_sub(self.window_start) >= TAKING_WINDOW_MS {
            self.last_window_fresh = self.window_fresh;
            self.window_fresh = 0;
            self.window_start = now;
        }
        let taking = self.last_window_fresh.max(self.window_fresh) >= PACE_MIN_FRESH;
        let ready = self.state.ready_count();
        // the total counts the backlogs consumers are taking from (an idle backlog is
        // spilled, and paces nobody)
        let counted = if taking && !self.deleted { ready } else { 0 };
        if counted != self.counted_ready {
            let total = &self.node.ready_total;
            if counted > self.counted_ready {
                total.fetch_add(counted - self.counted_ready, Ordering::Relaxed);
            } else {
                total.fetch_sub(self.counted_ready - counted, Ordering::Relaxed);
            }
            self.counted_ready = counted;
        }
        let crowded =
            counted > PACE_SHARE && self.node.ready_total.load(Ordering::Relaxed) > PACE_TOTAL;
        let paced = counted > PACE_BACKLOG || crowded;
        me.crowded.store(crowded, Ordering::SeqCst);
        me.paced.store(paced, Ordering::SeqCst);
        if !paced && me.inbox.len() <= QUEUE_CREDIT / 2 {
            me.inbox.wake_waiters();
        }
        // consumers that stop taking must not leave publishers paced
        if paced && !self.pace_check {
            self.pace_check = true;
            ctx.run_later(Duration::from_millis(PACE_ACTIVE_MS), |a, ctx| {
                a.pace_check = false;
                a.operate(ctx, |_, _| {});
            });
        }
    }

    /// Sends the deliveries made so far: one message per channel.
    fn flush_deliveries(&mut self) {
        for (_, channel, v) in self.outbox.drain(..) {
            channel.do_send(DeliverBatch(v));
        }
    }

    /// Keeps one timer for the earliest expiry at a head.
    fn schedule_expiry(&mut self, ctx: &mut Context<Self>) {
        let Some(at) = self.state.next_expiry() else {
            return;
        };
        if let Some((when, handle)) = self.expiry_timer {
            if when <= at {
                return;
            }
            ctx.cancel_future(handle);
        }
        // a waiting room fires at its due millisecond (and reads the clock itself then:
        // the coarse clock may be a millisecond behind); TTLs one millisecond after
        let room = self.state.is_waiting_room();
        let fire_us = if room { at } else { at + 1 }.saturating_mul(1000);
        let delay = Duration::from_micros(fire_us.saturating_sub(crate::broker::node::wall_us()));
        let handle = ctx.run_later(delay, move |a, ctx| {
            a.expiry_timer = None;
            a.operate(ctx, |a, _| {
                if room {
                    a.state.tick(crate::broker::node::wall_us() / 1000);
                }
                a.state.expire();
                a.drain();
            });
        });
        self.expiry_timer = Some((at, handle));
    }

    /// The consumer timeout: a policy's `consumer-timeout`, else `--consumer-timeout-ms`.
    fn consumer_timeout(&self) -> Option<u64> {
        self.state.args().consumer_timeout.or(self.consumer_timeout)
    }

    /// While deliveries are unacked, checks now and then for consumers over the timeout.
    fn schedule_timeout_check(&mut self, ctx: &mut Context<Self>) {
        let Some(timeout) = self.consumer_timeout() else {
            return;
        };
        if self.timeout_check || self.state.unacked_count() == 0 {
            return;
        }
        self.timeout_check = true;
        let every = Duration::from_millis((timeout / 4).clamp(50, 60_000));
        ctx.run_later(every, |a, ctx| {
            a.timeout_check = false;
            a.operate(ctx, |a, _| a.cancel_timed_out());
        });
    }

    /// A consumer holding a delivery longer than the consumer timeout is cancelled
    /// (basic.cancel) and what it holds goes back to the queue, redelivered.
    fn cancel_timed_out(&mut self) {
        let Some(timeout) = self.consumer_timeout() else {
            return;
        };
        self.flush_deliveries();
        for (channel, tag) in self.state.timed_out_consumers(timeout) {
            if let Some(c) = self.state.remove_consumer(channel, &tag) {
                tracing::warn!(queue = %self.name, consumer = %tag, timeout_ms = timeout, "consumer timed out holding a delivery: cancelled, its deliveries requeued");
                c.data.cancel.do_send(ConsumerCancelled {
                    consumer_tag: c.tag.clone(),
                });
            }
            self.state.requeue_consumer(channel, &tag);
        }
        self.maybe_auto_delete();
        self.drain();
    }

    /// Schedules the x-expires check.
    fn schedule_expires(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.expires_timer.take() {
            ctx.cancel_future(h);
        }
        let Some(ms) = self.state.args().expires else {
            return;
        };
        let due = self.last_used.saturating_add(ms);
        let delay = due.saturating_sub(now_ms()) + 1;
        self.expires_timer = Some(ctx.run_later(Duration::from_millis(delay), |a, ctx| {
            a.expires_timer = None;
            let Some(ms) = a.state.args().expires else {
                return;
            };
            if a.deleted {
                return;
            }
            if a.state.consumer_count() == 0 && now_ms() >= a.last_used.saturating_add(ms) {
                tracing::info!(queue = %a.name, expires_ms = ms, "queue unused for x-expires: deleted");
                a.delete_self();
            } else {
                a.schedule_expires(ctx);
            }
        }));
    }

    /// The name of this queue's vhost (for error texts).
    fn vhost_name(&self) -> String {
        self.host
            .upgrade()
            .map_or_else(|| "/".to_owned(), |v| v.vhost_name().to_owned())
    }

    /// A client used the queue (consume, get, declare): x-expires starts over.
    fn touch(&mut self) {
        self.last_used = now_ms();
    }

    /// Notes a delivery of a stored message (an ack-mode one: a no-ack delivery is
    /// removed from the store at once).
    fn note_delivered(&mut self, e: &Entry) {
        if let Some(pid) = e.msg.persist_id() {
            self.delivered_upto = self.delivered_upto.max(pid);
        }
    }

    fn write_delivered_mark(&mut self) {
        self.mark_scheduled = false;
        if self.deleted || self.delivered_upto <= self.delivered_written {
            return;
        }
        if let Some((s, qid)) = self.stored() {
            if let Err(e) = s.mark_delivered(qid, self.delivered_upto) {
                tracing::warn!(queue = %self.name, "cannot record deliveries in the store: {e}");
            }
        }
        self.delivered_written = self.delivered_upto;
    }

    /// The message store and this queue's id in it, if the queue is durable.
    fn stored(&self) -> StoredAt {
        self.store
            .get_or_init(|| {
                let id = self.me.upgrade()?.store_id?;
                Some((self.node.store.as_ref()?.messages.clone(), id))
            })
            .clone()
    }

    /// Removes settled persistent messages from the store.
    fn forget(&self, entries: &[Entry]) {
        let ids: Vec<u64> = entries.iter().filter_map(|e| e.msg.persist_id()).collect();
        self.forget_ids(&ids);
    }

    /// Removes stored messages by store id.
    fn forget_ids(&self, ids: &[u64]) {
        let Some((store, qid)) = self.stored() else {
            return;
        };
        for &pid in ids {
            if let Err(err) = store.remove(qid, pid) {
                tracing::error!(queue = %self.name, "cannot remove stored message: {err}");
            }
        }
    }

    /// The message of an entry, read back from the store if it was paged out.
    fn load(&self, e: &Entry) -> Result<Arc<Message>, String> {
        stored::load_entry(&self.stored(), e)
    }

    /// Delivers while there are messages and consumers with room.
    fn drain(&mut self) {
        let Some(me) = self.me.upgrade() else { return };
        let store = self.stored();
        let counted = self.state.args().delivery_limit.is_some();
        // counted here and added once per drain, not one atomic update per delivery
        let (mut delivered, mut redelivered) = (0u64, 0u64);
        // no-ack consumers' credit is reserved in bulk; what is left goes back at the end
        let mut bulk: Vec<(Arc<ConsumerGate>, u32)> = Vec::new();
        loop {
            let mut units = 1;
            let d = self.state.next_delivery(|c, size| {
                units = broker_core::flow::cost(size);
                reserve(&mut bulk, &c.data.gate, units)
            });
            let Some(mut d) = d else { break };
            let mut msg = match &d.entry.msg {
                Slot::Loaded(m) => m.clone(),
                Slot::Paged { persist_id, .. } => match stored::page_in(&store, *persist_id) {
                    Ok(m) => {
                        d.entry.msg = Slot::Loaded(m.clone());
                        m
                    }
                    Err(e) => {
                        let pid = *persist_id;
                        d.consumer.data.gate.undo(units);
                        let (entry, no_ack) = (d.entry.clone(), d.consumer.no_ack);
                        drop(d);
                        if self.read_failed(pid, &e) {
                            // tried again later; it keeps its place at the head
                            self.state.restore(vec![entry], no_ack);
                            break;
                        }
                        if !no_ack {
                            self.state.lose(entry.id);
                        }
                        self.forget(std::slice::from_ref(&entry));
                        continue;
                    }
                },
            };
            // queues with a delivery limit tell consumers how often a message came back
            if counted && d.entry.returns > 0 {
                msg = Arc::new(deadletter::with_delivery_count(&msg, d.entry.returns));
            }
            delivered += 1;
            if d.entry.redelivered {
                redelivered += 1;
            }
            let no_ack = d.consumer.no_ack;
            if !no_ack {
                if let Some(pid) = d.entry.msg.persist_id() {
                    self.delivered_upto = self.delivered_upto.max(pid);
                }
            } else if let (Some((s, qid)), Some(pid)) = (&store, d.entry.msg.persist_id()) {
                let _ = s.remove(*qid, pid);
            }
            let deliver = Deliver {
                queue: me.clone(),
                consumer_tag: d.consumer.tag.clone(),
                no_ack,
                entry: d.entry,
                msg,
                gate: d.consumer.data.gate.clone(),
                units,
            };
            let key = d.consumer.channel;
            match self.outbox.iter_mut().find(|(k, _, _)| *k == key) {
                Some((_, _, v)) => v.push(deliver),
                None => self
                    .outbox
                    .push((key, d.consumer.data.deliver.clone(), vec![deliver])),
            }
        }
        for (g, n) in bulk {
            g.give_back(n);
        }
        self.window_fresh += delivered - redelivered;
        if delivered > 0 {
            me.counters
                .delivered
                .fetch_add(delivered, Ordering::Relaxed);
            if redelivered > 0 {
                me.counters
                    .redelivered
                    .fetch_add(redelivered, Ordering::Relaxed);
            }
        }
    }
}

/// Reserves credit for one delivery of `units` to a consumer. Small no-ack deliveries are
/// served from credit a drain takes in bulk (`bulk`, what is left per consumer, given
/// back at the end of the drain); others reserve their own.
fn reserve(bulk: &mut Vec<(Arc<ConsumerGate>, u32)>, g: &Arc<ConsumerGate>, units: u32) -> bool {
    if !g.no_ack || units > 1 {
        return g.try_take(units);
    }
    let held = bulk.iter().position(|(b, _)| Arc::ptr_eq(b, g));
    if let Some(i) = held {
        if bulk[i].1 > 0 {
            bulk[i].1 -= 1;
            return true;
        }
    }
    let got = g.try_take_bulk(BULK_CREDIT);
    match (got, held) {
        (0, _) => return false,
        (_, Some(i)) => bulk[i].1 = got - 1,
        (_, None) => bulk.push((g.clone(), got - 1)),
    }
    true
}
