//! What a quorum queue needs of the queue state beyond the classic queue's rules: a
//! return that goes to the back of the queue (RabbitMQ 3.10's quorum queues put a
//! message that a client rejected or nacked with requeue behind the others), a return
//! that does not count against the delivery limit (a leader change), and a snapshot of
//! the whole state that a replica can be rebuilt from.

use super::*;

/// A delivery awaiting ack, as a snapshot holds it.
#[derive(Debug, Clone)]
pub struct UnackedEntry {
    /// The message.
    pub entry: Entry,
    /// The channel it went to.
    pub channel: ChannelKey,
    /// The consumer's tag (`None` for basic.get).
    pub consumer: Option<Arc<str>>,
    /// When it was delivered (ms).
    pub at: u64,
}

/// Everything a [`QueueState`] holds, in a deterministic order (ready in delivery
/// order, unacked by id). Spilled messages are not part of it: a queue that spills is
/// not snapshotted this way.
#[derive(Debug, Clone)]
pub struct QueueSnapshot<C> {
    /// The arguments.
    pub args: QueueArgs,
    /// Ready messages, in delivery order.
    pub ready: Vec<Entry>,
    /// Deliveries awaiting ack, by id.
    pub unacked: Vec<UnackedEntry>,
    /// The next id.
    pub next_id: MsgId,
    /// Consumers in the state's order.
    pub consumers: Vec<Consumer<C>>,
    /// Where the next round-robin turn starts.
    pub next_consumer: usize,
    /// The single active consumer.
    pub active: Option<(ChannelKey, Arc<str>)>,
    /// Whether a consumer ever subscribed.
    pub had_consumer: bool,
    /// The clock.
    pub now: u64,
    /// Returned messages waiting out their retry back-off, earliest first.
    pub delayed: Vec<retry::Waiting>,
}

impl<C: Clone> QueueState<C> {
    /// The whole state (see [`QueueSnapshot`]).
    pub fn snapshot(&self) -> QueueSnapshot<C> {
        let mut unacked: Vec<UnackedEntry> = self
            .unacked
            .values()
            .map(|u| UnackedEntry {
                entry: u.entry.clone(),
                channel: u.channel,
                consumer: u.consumer.clone(),
                at: u.at,
            })
            .collect();
        unacked.sort_unstable_by_key(|u| u.entry.id);
        QueueSnapshot {
            args: self.args.clone(),
            ready: self.ready.iter().cloned().collect(),
            unacked,
            next_id: self.next_id,
            consumers: self.consumers.clone(),
            next_consumer: self.next_consumer,
            active: self.active.clone(),
            had_consumer: self.had_consumer,
            now: self.now,
            delayed: self.delayed.iter().cloned().collect(),
        }
    }

    /// The state a snapshot was taken of.
    pub fn from_snapshot(s: QueueSnapshot<C>) -> Self {
        let mut q = Self::new(s.args);
        for e in s.ready {
            q.ready.push_back(e);
        }
        for u in s.unacked {
            q.unacked_bytes += u.entry.msg.size();
            let unacked = Unacked {
                entry: u.entry,
                channel: u.channel,
                consumer: u.consumer,
                at: u.at,
            };
            q.unacked.insert(unacked.entry.id, unacked);
        }
        q.next_id = s.next_id;
        q.consumers = s.consumers;
        q.next_consumer = s.next_consumer;
        q.active = s.active;
        q.had_consumer = s.had_consumer;
        q.now = s.now;
        for w in s.delayed {
            q.delayed.insert(w);
        }
        q
    }
}

impl<C> QueueState<C> {
    /// Returns deliveries to the back of the queue, in the order given, as redelivered
    /// and counted against x-delivery-limit (over it, the message dies with reason
    /// `delivery_limit`). Each gets a new id, so it stays behind what is queued now.
    pub fn return_to_back(&mut self, ids: &[MsgId]) -> usize {
        let mut n = 0;
        for id in ids {
            let Some(u) = self.take_unacked(id) else {
                continue;
            };
            let mut e = u.entry;
            e.redelivered = true;
            e.returns = e.returns.saturating_add(1);
            if self
                .args
                .delivery_limit
                .is_some_and(|l| u64::from(e.returns) > l)
            {
                self.dead.push((e, Reason::DeliveryLimit));
                continue;
            }
            let Some(mut e) = self.delay(e, true, true) else {
                n += 1;
                continue;
            };
            e.id = self.next_id;
            self.next_id += 1;
            self.ready.push_back(e);
            n += 1;
        }
        self.enforce_limits();
        n
    }

    /// Puts deliveries back in their place as redelivered without counting a return (the
    /// queue, not the client, gave them up: a leader change).
    pub fn requeue_uncounted(&mut self, ids: &[MsgId]) -> usize {
        let mut back = Vec::new();
        for id in ids {
            if let Some(u) = self.take_unacked(id) {
                let mut e = u.entry;
                e.redelivered = true;
                back.extend(self.delay(e, false, false));
            }
        }
        self.put_back(back)
    }

    /// Ids of every delivery awaiting ack, ascending.
    pub fn unacked_ids(&self) -> Vec<MsgId> {
        let mut ids: Vec<MsgId> = self.unacked.keys().copied().collect();
        ids.sort_unstable();
        ids
    }
}
