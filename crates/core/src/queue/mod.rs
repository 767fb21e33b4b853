//! The state of one queue: ready messages in delivery order, deliveries awaiting ack,
//! consumers by priority, and the queue's arguments (TTL, length limits, priorities,
//! single active consumer, delivery limit). The queue actor owns one of these, sets the
//! clock with [`QueueState::tick`], and carries out what it decides; messages that die
//! (rejected, expired, dropped by a limit, over the delivery limit) collect in an outbox
//! the actor empties with [`QueueState::take_dead`] to dead-letter them.
//!
//! `C` is whatever the actor needs to reach a consumer (an address, a flow gate); this
//! module never looks inside it.

mod consumers;
mod ready;
pub mod retry;
mod returns;
pub mod spill;
#[cfg(test)]
mod spill_tests;
#[cfg(test)]
mod tests;
mod waiting_room;

use crate::args::{Overflow, QueueArgs};
use crate::deadletter::Reason;
use crate::error::AmqpError;
use crate::message::{Message, Meta, Slot};
use crate::names::ChannelKey;
use ready::Ready;
use retry::Delayed;
pub use returns::{QueueSnapshot, UnackedEntry};
use std::collections::HashMap;
use std::sync::Arc;

/// A queue-local message number, increasing in publish order.
pub type MsgId = u64;

/// A message waiting in the queue.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Position in publish order.
    pub id: MsgId,
    /// The shared message, or where to read it back from the store.
    pub msg: Slot,
    /// Whether it was delivered before (so the next delivery carries `redelivered`).
    pub redelivered: bool,
    /// Its priority level (0 in a queue without priorities).
    pub priority: u8,
    /// Times it came back after a delivery (`x-delivery-count`).
    pub returns: u32,
    /// Body bytes.
    pub body_len: u32,
    /// When it expires (ms since the epoch), if a TTL applies.
    pub expires_at: Option<u64>,
}

/// What a purge dropped.
#[derive(Debug)]
pub struct Purged {
    /// Messages dropped.
    pub count: usize,
    /// The dropped messages that were in memory.
    pub entries: Vec<Entry>,
    /// Store ids of dropped persisted messages that were spilled.
    pub spilled_persisted: Vec<u64>,
}

/// A delivery not yet acked.
#[derive(Debug, Clone)]
struct Unacked {
    entry: Entry,
    channel: ChannelKey,
    /// The consumer it went to (`None` for basic.get).
    consumer: Option<Arc<str>>,
    /// When it was delivered (ms).
    at: u64,
}

/// One consumer of this queue.
#[derive(Debug, Clone)]
pub struct Consumer<C> {
    /// The channel it was created on.
    pub channel: ChannelKey,
    /// Its tag, unique on that channel.
    pub tag: Arc<str>,
    /// Deliveries need no ack.
    pub no_ack: bool,
    /// Whether it holds the queue exclusively.
    pub exclusive: bool,
    /// `x-priority`: higher goes first while it has room.
    pub priority: i64,
    /// The actor's handle for it.
    pub data: C,
}

/// What to deliver to whom.
#[derive(Debug)]
pub struct Delivery<'a, C> {
    /// The consumer.
    pub consumer: &'a Consumer<C>,
    /// The message.
    pub entry: Entry,
}

/// The queue record.
#[derive(Debug)]
pub struct QueueState<C> {
    /// The arguments it acts on.
    args: QueueArgs,
    /// Messages waiting for a consumer, in delivery order.
    ready: Ready,
    /// Returned messages waiting out their retry back-off (`x-delayed-retry-*`).
    delayed: Delayed,
    /// Delivered messages awaiting ack, by id.
    unacked: HashMap<MsgId, Unacked>,
    /// Bytes held by `unacked`.
    unacked_bytes: usize,
    /// Next message id to assign.
    next_id: MsgId,
    /// Consumers, highest priority first, in subscription order within a priority.
    consumers: Vec<Consumer<C>>,
    /// Index where the next round-robin turn starts.
    next_consumer: usize,
    /// Tag of the active consumer of a single-active-consumer queue.
    active: Option<(ChannelKey, Arc<str>)>,
    /// Whether a consumer ever subscribed (auto-delete applies only after that).
    had_consumer: bool,
    /// The clock (ms since the epoch), set by the actor.
    now: u64,
    /// Messages that died, for the actor to dead-letter.
    dead: Vec<(Entry, Reason)>,
    /// A waiting room's messages whose delay is over, for the actor to route
    /// (`waiting_room.rs`).
    forwards: Vec<Entry>,
}

impl<C> Default for QueueState<C> {
    fn default() -> Self {
        Self::new(QueueArgs::default())
    }
}

impl<C> QueueState<C> {
    /// An empty queue with these arguments.
    pub fn new(args: QueueArgs) -> Self {
        Self {
            ready: Ready::new(args.max_priority),
            delayed: Delayed::default(),
            args,
            unacked: HashMap::new(),
            unacked_bytes: 0,
            next_id: 1,
            consumers: Vec::new(),
            next_consumer: 0,
            active: None,
            had_consumer: false,
            now: 0,
            dead: Vec::new(),
            forwards: Vec::new(),
        }
    }

    /// An empty state that goes on numbering after this one, for a queue restarted after
    /// a failure: delivery tags that channels still hold for the old state can never
    /// match a new message.
    pub fn emptied(&self) -> Self {
        let mut s = Self::new(self.args.clone());
        s.next_id = self.next_id;
        s.now = self.now;
        s
    }

    /// The queue's arguments.
    pub fn args(&self) -> &QueueArgs {
        &self.args
    }

    /// New arguments from a policy change: drop-head trims at once; a new TTL holds for
    /// messages queued from now on (as RabbitMQ); `x-max-priority` never changes.
    pub fn set_args(&mut self, args: QueueArgs) {
        let max_priority = self.args.max_priority;
        self.args = QueueArgs {
            max_priority,
            ..args
        };
        if self.args.retry.is_none() && !self.args.waiting_room {
            // retry turned off: nothing waits any more
            let all = self.delayed.take_all();
            self.make_ready(all);
        }
        self.enforce_limits();
    }

    /// Sets the clock (ms since the epoch). The actor calls it before each operation.
    pub fn tick(&mut self, now: u64) {
        self.now = now;
    }

    /// A new entry; TTLs count from `base` (ms).
    fn entry(&mut self, msg: Slot, meta: Meta, base: u64) -> Entry {
        let id = self.next_id;
        self.next_id += 1;
        let ttl = match (self.args.message_ttl, meta.ttl_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Entry {
            id,
            msg,
            redelivered: false,
            priority: meta.priority,
            returns: 0,
            body_len: meta.body_len,
            expires_at: ttl.map(|t| base.saturating_add(t)),
        }
    }

    /// Whether a queue with a reject-publish overflow has no room for a message of
    /// `body_len` bytes (`extra` more messages are on their way to it).
    pub fn is_full(&self, extra: usize, body_len: usize) -> bool {
        full(
            &self.args,
            self.ready.len() + extra,
            self.ready.body_bytes(),
            body_len,
        )
    }

    /// Appends a published message. Returns its id, or `None` when the queue is full and
    /// refuses it (x-overflow reject-publish; with reject-publish-dlx it is also
    /// dead-lettered). With drop-head, the oldest messages make room and are
    /// dead-lettered.
    pub fn publish(&mut self, msg: Arc<Message>) -> Option<MsgId> {
        if self.args.waiting_room {
            return Some(self.hold(msg));
        }
        let meta = msg.meta();
        let refuse =
            self.args.overflow != Overflow::DropHead && self.is_full(0, meta.body_len as usize);
        // counted from arrival, but never before now: a TTL of 0 still lets a waiting
        // consumer have the message, as in RabbitMQ
        let e = self.entry(Slot::Loaded(msg), meta, meta.arrival_ms.max(self.now));
        if refuse {
            if self.args.overflow == Overflow::RejectPublishDlx {
                self.dead.push((e, Reason::Maxlen));
            }
            return None;
        }
        let id = e.id;
        self.ready.push_back(e);
        self.enforce_limits();
        Some(id)
    }

    /// A message the channel refused for this full queue (reject-publish-dlx): it dies
    /// with reason maxlen without ever being queued.
    pub fn refused(&mut self, msg: Arc<Message>) {
        let meta = msg.meta();
        let e = self.entry(Slot::Loaded(msg), meta, meta.arrival_ms);
        self.dead.push((e, Reason::Maxlen));
    }

    /// Appends a message recovered from the store (in memory or paged); `delivered` marks
    /// it redelivered. Limits are not applied: the queue held it before.
    pub fn publish_recovered(&mut self, msg: Slot, meta: Meta, delivered: bool) -> MsgId {
        if self.args.waiting_room {
            return self.hold_recovered(msg, meta);
        }
        let mut e = self.entry(msg, meta, meta.arrival_ms);
        e.redelivered = delivered;
        let id = e.id;
        self.ready.push_back(e);
        id
    }

    /// Drop-head: while over a limit, the oldest ready messages die (reason maxlen).
    fn enforce_limits(&mut self) {
        if self.args.overflow != Overflow::DropHead {
            return;
        }
        while over(&self.args, self.ready.len(), self.ready.body_bytes()) {
            match self.ready.pop_front() {
                Some(e) => self.dead.push((e, Reason::Maxlen)),
                None => break,
            }
        }
    }

    /// Moves ready messages whose TTL has passed (at the head) to the outbox, after
    /// making ready the returned messages whose retry back-off is over.
    pub fn expire(&mut self) {
        if self.args.waiting_room {
            return self.release_due();
        }
        if !self.delayed.is_empty() {
            let due = self.delayed.take_due(self.now);
            self.make_ready(due);
        }
        for e in self.ready.pop_expired(self.now) {
            self.dead.push((e, Reason::Expired));
        }
    }

    /// Like [`QueueState::expire`], also taking messages that expire this very
    /// millisecond: after a publish has been offered to the consumers, a message with a
    /// TTL of 0 that none could take dies at once (as in RabbitMQ).
    pub fn expire_due(&mut self) {
        for e in self.ready.pop_expired(self.now.saturating_add(1)) {
            self.dead.push((e, Reason::Expired));
        }
    }

    /// When the state next needs the clock (a ready message at a head expires, or a
    /// retry back-off is over), for the actor's timer: [`QueueState::expire`] then.
    pub fn next_expiry(&self) -> Option<u64> {
        match (self.ready.next_expiry(), self.delayed.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes the messages that died since the last call, with the reason.
    pub fn take_dead(&mut self) -> Vec<(Entry, Reason)> {
        std::mem::take(&mut self.dead)
    }

    /// Copies of up to `count` ready messages from position `offset` in delivery
    /// order, the queue unchanged (the management API's browse). Spilled messages
    /// come back as their spill holds them (a persisted one paged: the caller reads
    /// it from the store).
    pub fn peek(&self, offset: usize, count: usize) -> Result<Vec<Entry>, String> {
        self.ready.peek(offset, count)
    }

    /// Messages ready for delivery.
    pub fn ready_count(&self) -> usize {
        self.ready.len()
    }

    /// Body bytes of the ready messages.
    pub fn ready_body_bytes(&self) -> usize {
        self.ready.body_bytes()
    }

    /// Messages delivered and not yet acked.
    pub fn unacked_count(&self) -> usize {
        self.unacked.len()
    }

    /// Store ids of the persistent messages that went out to a client and are not settled
    /// (unacked, or back in the queue as redelivered): a queue that starts over from the
    /// store marks them redelivered, as the store may not have recorded the delivery yet.
    pub fn delivered_persist_ids(&self) -> std::collections::HashSet<u64> {
        let unacked = self.unacked.values().map(|u| &u.entry);
        let ready = self.ready.iter().filter(|e| e.redelivered);
        let delayed = self.delayed.iter().map(|w| &w.entry);
        unacked
            .chain(ready)
            .chain(delayed)
            .filter_map(|e| e.msg.persist_id())
            .collect()
    }

    /// Bytes of ready, delayed and unacked messages.
    pub fn bytes(&self) -> usize {
        self.ready.bytes() + self.delayed.bytes() + self.unacked_bytes
    }

    /// A single-active-consumer queue hands over to the longest-waiting consumer.
    fn pick_active(&mut self) {
        if !self.args.single_active_consumer {
            return;
        }
        let still = self.active.as_ref().is_some_and(|(ch, tag)| {
            self.consumers
                .iter()
                .any(|c| c.channel == *ch && c.tag == *tag)
        });
        if !still {
            // consumers are kept in subscription order within a priority; SAC queues
            // take the first subscribed, whatever its priority
            self.active = self.consumers.first().map(|c| (c.channel, c.tag.clone()));
        }
    }

    /// Takes the next ready message for the next consumer that `can_take` accepts:
    /// highest priority first, round-robin among equals. `can_take` is asked at most
    /// once per consumer, with the size of the message, and when it says yes has
    /// reserved room for the delivery. Expired messages at the head die first.
    pub fn next_delivery(
        &mut self,
        mut can_take: impl FnMut(&Consumer<C>, usize) -> bool,
    ) -> Option<Delivery<'_, C>> {
        self.expire();
        if self.consumers.is_empty() {
            return None;
        }
        let size = self.ready.front()?.msg.size();
        let idx = self.choose(&mut |c: &Consumer<C>| can_take(c, size))?;
        let entry = self.ready.pop_front()?;
        let consumer = &self.consumers[idx];
        if !consumer.no_ack {
            self.unacked_bytes += entry.msg.size();
            self.unacked.insert(
                entry.id,
                Unacked {
                    entry: entry.clone(),
                    channel: consumer.channel,
                    consumer: Some(consumer.tag.clone()),
                    at: self.now,
                },
            );
        }
        Some(Delivery { consumer, entry })
    }

    fn choose(&mut self, can_take: &mut impl FnMut(&Consumer<C>) -> bool) -> Option<usize> {
        if let Some((ch, tag)) = &self.active {
            let idx = self
                .consumers
                .iter()
                .position(|c| c.channel == *ch && c.tag == *tag)?;
            return can_take(&self.consumers[idx]).then_some(idx);
        }
        let n = self.consumers.len();
        let mut start = 0;
        while start < n {
            let prio = self.consumers[start].priority;
            let end = start
                + self.consumers[start..]
                    .iter()
                    .take_while(|c| c.priority == prio)
                    .count();
            let len = end - start;
            let from = if (start..end).contains(&self.next_consumer) {
                self.next_consumer - start
            } else {
                0
            };
            for i in 0..len {
                let idx = start + (from + i) % len;
                if can_take(&self.consumers[idx]) {
                    self.next_consumer = if idx + 1 < end { idx + 1 } else { start };
                    return Some(idx);
                }
            }
            start = end;
        }
        None
    }

    /// basic.get: takes the head message; if `no_ack` is false it waits for an ack from
    /// `channel`.
    pub fn get(&mut self, channel: ChannelKey, no_ack: bool) -> Option<Entry> {
        self.expire();
        let entry = self.ready.pop_front()?;
        if !no_ack {
            self.unacked_bytes += entry.msg.size();
            self.unacked.insert(
                entry.id,
                Unacked {
                    entry: entry.clone(),
                    channel,
                    consumer: None,
                    at: self.now,
                },
            );
        }
        Some(entry)
    }

    fn take_unacked(&mut self, id: &MsgId) -> Option<Unacked> {
        let u = self.unacked.remove(id)?;
        self.unacked_bytes -= u.entry.msg.size();
        Some(u)
    }

    /// Acks deliveries; unknown ids are ignored (the channel has already checked its tags).
    /// Returns the acked messages (so the store can forget them).
    pub fn ack(&mut self, ids: &[MsgId]) -> Vec<Entry> {
        ids.iter()
            .filter_map(|id| self.take_unacked(id))
            .map(|u| u.entry)
            .collect()
    }

    /// Rejects deliveries for good (reject or nack without requeue): they die with
    /// reason `rejected`.
    pub fn discard(&mut self, ids: &[MsgId]) {
        for id in ids {
            if let Some(u) = self.take_unacked(id) {
                self.dead.push((u.entry, Reason::Rejected));
            }
        }
    }

    /// Drops a message whose body could not be read back (no dead-lettering: there is
    /// nothing to send). Returns it if it was unacked.
    pub fn lose(&mut self, id: MsgId) -> Option<Entry> {
        self.take_unacked(&id).map(|u| u.entry)
    }

    /// Puts deliveries back in their original place. `delivered` marks them redelivered
    /// (false only for deliveries that never reached the client) and counts a return
    /// against x-delivery-limit: over the limit, the message dies instead.
    pub fn requeue(&mut self, ids: &[MsgId], delivered: bool) -> usize {
        let mut back = Vec::new();
        for id in ids {
            if let Some(u) = self.take_unacked(id) {
                let mut e = u.entry;
                e.redelivered |= delivered;
                if delivered {
                    e.returns = e.returns.saturating_add(1);
                    if self
                        .args
                        .delivery_limit
                        .is_some_and(|l| u64::from(e.returns) > l)
                    {
                        self.dead.push((e, Reason::DeliveryLimit));
                        continue;
                    }
                    back.extend(self.delay(e, true, false));
                    continue;
                }
                back.push(e);
            }
        }
        self.put_back(back)
    }

    fn put_back(&mut self, back: Vec<Entry>) -> usize {
        let n = back.len();
        for e in back {
            self.ready.put_back(e);
        }
        // a requeue can take the queue over its length limit too
        self.enforce_limits();
        n
    }

    /// Puts back deliveries that never reached a client, unchanged (their consumer was
    /// cancelled while they were on the way).
    /// Ack-mode deliveries are put back only if still unacked (a channel close may
    /// already have requeued them); no-ack ones always.
    pub fn restore(&mut self, entries: Vec<Entry>, no_ack: bool) -> usize {
        let mut back = Vec::new();
        for e in entries {
            if no_ack || self.take_unacked(&e.id).is_some() {
                back.push(e);
            }
        }
        self.put_back(back)
    }

    /// The channel is gone: drops its consumers and requeues everything it had unacked.
    /// Returns the number of consumers removed.
    pub fn channel_closed(&mut self, channel: ChannelKey) -> usize {
        let before = self.consumers.len();
        self.consumers.retain(|c| c.channel != channel);
        if self.next_consumer >= self.consumers.len() {
            self.next_consumer = 0;
        }
        self.pick_active();
        let mut ids: Vec<MsgId> = self
            .unacked
            .iter()
            .filter(|(_, u)| u.channel == channel)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        self.requeue(&ids, true);
        before - self.consumers.len()
    }

    /// Drops every ready message and every one waiting out a retry back-off: returns
    /// how many, the ones that were in memory, and the store ids of the spilled
    /// persisted ones.
    pub fn purge(&mut self) -> Purged {
        let count = self.ready.len() + self.delayed.len();
        let (mut entries, spilled_persisted) = self.ready.drain_all();
        entries.extend(self.delayed.take_all().into_iter().map(|w| w.entry));
        Purged {
            count,
            entries,
            spilled_persisted,
        }
    }

    /// Lets ready messages past a window of `messages` and `bytes` per priority level
    /// wait in spills that `f` makes, instead of in memory.
    pub fn set_spills(&mut self, f: Arc<dyn spill::SpillFactory>, messages: usize, bytes: usize) {
        self.ready.set_spills(f, messages, bytes);
    }

    /// Ready messages held in memory (the others are spilled).
    pub fn ready_in_memory(&self) -> usize {
        self.ready.in_memory()
    }

    /// Whether ready messages wait in a spill that could not be read back (the actor
    /// retries with [`QueueState::retry_spills`]).
    pub fn spills_stalled(&self) -> bool {
        self.ready.stalled()
    }

    /// Reads back spilled messages that an earlier read failed to; true if any came.
    pub fn retry_spills(&mut self) -> bool {
        self.ready.retry_refill()
    }

    /// Messages that spills lost since the last call (damaged records), to report.
    pub fn take_spill_losses(&mut self) -> spill::Lost {
        self.ready.take_lost()
    }

    /// Ready ids in delivery order (tests and diagnostics).
    pub fn ready_ids(&self) -> Vec<MsgId> {
        self.ready.ids()
    }

    /// The next message to deliver.
    pub fn head(&self) -> Option<&Entry> {
        self.ready.front()
    }

    /// Checks queue.delete's if-unused and if-empty conditions.
    pub fn check_delete(
        &self,
        if_unused: bool,
        if_empty: bool,
        name: &str,
        vhost: &str,
    ) -> Result<(), AmqpError> {
        if if_unused && !self.consumers.is_empty() {
            return Err(AmqpError::precondition_failed(format!(
                "queue '{name}' in vhost '{vhost}' in use"
            )));
        }
        if if_empty && !(self.ready.is_empty() && self.delayed.is_empty()) {
            return Err(AmqpError::precondition_failed(format!(
                "queue '{name}' in vhost '{vhost}' not empty"
            )));
        }
        Ok(())
    }
}

/// Whether `len` ready messages and `bytes` body bytes exceed the queue's limits.
fn over(args: &QueueArgs, len: usize, bytes: usize) -> bool {
    args.max_length.is_some_and(|m| len as u64 > m)
        || args.max_length_bytes.is_some_and(|m| bytes as u64 > m)
}

/// Whether one more message of `body_len` bytes would exceed the limits (reject-publish).
pub fn full(args: &QueueArgs, len: usize, bytes: usize, body_len: usize) -> bool {
    over(args, len + 1, bytes + body_len)
}
