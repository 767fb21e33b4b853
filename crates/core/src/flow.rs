//! Flow control shared between threads without locks: how many deliveries a consumer may
//! still receive (prefetch and in-flight credit), and how much message data the queues
//! hold.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

/// Credit units of deliveries a queue may have sent to a channel that the channel has
/// not yet written to its socket buffer. Bounds a channel's mailbox and the connection's
/// write buffer for consumers that do not read, in messages and in bytes: a delivery
/// costs [`cost`] units, one per started [`UNIT_BYTES`] (so 512 small messages, or 4 MiB
/// of large ones, and always at least one message however large).
pub const MAX_OUTSTANDING: u32 = 512;

/// Bytes one credit unit stands for.
pub const UNIT_BYTES: usize = 8 << 10;

/// Credit units shared out among all consumers of the node: each has
/// [`MAX_OUTSTANDING`], or its share of this when there are many (at least
/// [`MIN_OUTSTANDING`]). Every consumer that reads slowly holds its credit's worth of
/// deliveries in its connection's write buffer: a fanout to 1,000 slow consumers with
/// full credit each held ~560 MiB there; at 65,536 units, 1,000 consumers sharing them
/// still kept the broker near 280 MiB, at 32,768 near 200 MiB with the same deliveries/s.
pub const NODE_OUTSTANDING: usize = 32_768;

/// The least credit a consumer gets however many there are.
pub const MIN_OUTSTANDING: u32 = 32;

/// How many consumers the node has (their credit shrinks as there are more); counted by
/// [`ConsumerGate`]s as they are made and dropped.
#[derive(Debug, Default)]
pub struct Consumers(AtomicUsize);

impl Consumers {
    /// Consumers now.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Credit units each consumer may have on their way now.
    pub fn credit(&self) -> u32 {
        let share = NODE_OUTSTANDING / self.count().max(1);
        u32::try_from(share)
            .unwrap_or(u32::MAX)
            .clamp(MIN_OUTSTANDING, MAX_OUTSTANDING)
    }
}

/// Credit units a delivery of `size` bytes costs: one, plus one per full [`UNIT_BYTES`].
pub fn cost(size: usize) -> u32 {
    u32::try_from(1 + size / UNIT_BYTES).unwrap_or(u32::MAX)
}

/// Takes `n` units of `counter` under `limit`; when nothing is taken yet, any amount
/// goes (a message larger than the whole credit is still delivered, alone).
fn try_add(counter: &AtomicU32, n: u32, limit: u32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| {
            (o == 0 || o.saturating_add(n) <= limit).then(|| o.saturating_add(n))
        })
        .is_ok()
}

fn sub(counter: &AtomicU32, n: u32) {
    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| {
        Some(o.saturating_sub(n))
    });
}

fn try_inc(counter: &AtomicU32, limit: u32) -> bool {
    if limit == 0 {
        counter.fetch_add(1, Ordering::AcqRel);
        return true;
    }
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
}

fn dec(counter: &AtomicU32) {
    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
        Some(n.saturating_sub(1))
    });
}

/// Channel-wide prefetch (basic.qos with global=true, as RabbitMQ interprets it).
#[derive(Debug, Default)]
pub struct ChannelGate {
    /// Shared limit for all consumers of the channel (0 = none).
    pub prefetch: AtomicU32,
    /// Unacked deliveries counted against it.
    pub unacked: AtomicU32,
    /// The node's consumers (their number shares out delivery credit).
    pub consumers: Arc<Consumers>,
}

impl ChannelGate {
    /// A gate of a channel on a node with these consumers.
    pub fn new(consumers: Arc<Consumers>) -> ChannelGate {
        ChannelGate {
            consumers,
            ..Default::default()
        }
    }
}

/// Per-consumer flow state, shared by the queue (which takes) and the channel (which
/// releases).
#[derive(Debug)]
pub struct ConsumerGate {
    /// Per-consumer prefetch (0 = none).
    pub prefetch: u32,
    /// Whether deliveries are pre-acknowledged.
    pub no_ack: bool,
    unacked: AtomicU32,
    outstanding: AtomicU32,
    /// Set by the queue when it had to skip this consumer; whoever releases room clears it
    /// and wakes the queue.
    blocked: AtomicBool,
    /// The channel-wide limit.
    pub channel: Arc<ChannelGate>,
}

impl ConsumerGate {
    /// A gate for a new consumer (counted among the node's consumers until dropped).
    pub fn new(prefetch: u32, no_ack: bool, channel: Arc<ChannelGate>) -> Self {
        channel.consumers.0.fetch_add(1, Ordering::Relaxed);
        Self {
            prefetch,
            no_ack,
            unacked: AtomicU32::new(0),
            outstanding: AtomicU32::new(0),
            blocked: AtomicBool::new(false),
            channel,
        }
    }

    fn take_once(&self, units: u32) -> bool {
        if !try_add(&self.outstanding, units, self.channel.consumers.credit()) {
            return false;
        }
        if self.no_ack {
            return true;
        }
        if !try_inc(&self.unacked, self.prefetch) {
            sub(&self.outstanding, units);
            return false;
        }
        let global = self.channel.prefetch.load(Ordering::Acquire);
        if !try_inc(&self.channel.unacked, global) {
            dec(&self.unacked);
            sub(&self.outstanding, units);
            return false;
        }
        true
    }

    /// Reserves room for one delivery of `units` credit units ([`cost`]). When there is
    /// none, marks the consumer blocked (and checks once more, so a release racing with
    /// us is never missed).
    pub fn try_take(&self, units: u32) -> bool {
        if self.take_once(units) {
            return true;
        }
        self.blocked.store(true, Ordering::Release);
        self.take_once(units)
    }

    /// Takes room for one delivery of `units` whatever the limits: a quorum queue's
    /// deliveries are decided by its replicated credit (the prefetch, in the log), so
    /// the local gate only counts them, for the socket credit and the acks that give
    /// them back.
    pub fn force_take(&self, units: u32) {
        self.outstanding.fetch_add(units, Ordering::AcqRel);
        if !self.no_ack {
            self.unacked.fetch_add(1, Ordering::AcqRel);
            self.channel.unacked.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Reserves up to `n` credit units at once for a no-ack consumer, whose only limit is
    /// [`MAX_OUTSTANDING`] (a queue's drain takes credit in bulk instead of one atomic
    /// update per message, and spends [`cost`] units per delivery). Returns how many; 0
    /// marks the consumer blocked, as [`ConsumerGate::try_take`] does.
    pub fn try_take_bulk(&self, n: u32) -> u32 {
        let max = self.channel.consumers.credit();
        let take = || {
            self.outstanding
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| {
                    (o < max).then(|| o + n.min(max - o))
                })
                .map_or(0, |o| n.min(max.saturating_sub(o)))
        };
        let got = take();
        if got > 0 {
            return got;
        }
        self.blocked.store(true, Ordering::Release);
        take()
    }

    /// Returns `n` bulk reservations the drain did not use.
    pub fn give_back(&self, n: u32) {
        if n > 0 {
            let _ = self
                .outstanding
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| {
                    Some(o.saturating_sub(n))
                });
        }
    }

    /// Gives back a reservation of `units` for a delivery that was not made after all
    /// (cancelled consumer): both credits.
    pub fn undo(&self, units: u32) {
        sub(&self.outstanding, units);
        if !self.no_ack {
            dec(&self.unacked);
            dec(&self.channel.unacked);
        }
    }

    /// Deliveries worth `n` credit units reached the socket buffer. Returns true if the
    /// queue should be woken.
    pub fn written_n(&self, n: u32) -> bool {
        let _ = self
            .outstanding
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| {
                Some(o.saturating_sub(n))
            });
        self.blocked.swap(false, Ordering::AcqRel)
    }

    /// An ack-mode delivery was settled. Returns true if the queue should be woken.
    pub fn settled(&self) -> bool {
        dec(&self.unacked);
        dec(&self.channel.unacked);
        self.blocked.swap(false, Ordering::AcqRel)
    }

    /// Clears the blocked flag (after a channel-wide release); true if it was set.
    pub fn take_blocked(&self) -> bool {
        self.blocked.swap(false, Ordering::AcqRel)
    }
}

impl Drop for ConsumerGate {
    fn drop(&mut self) {
        let _ = self
            .channel
            .consumers
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }
}

/// Bytes of message data held in all queues (a figure the management API and metrics
/// report; the memory alarm looks at what the whole process uses instead).
#[derive(Debug, Default)]
pub struct MemoryGauge {
    used: AtomicUsize,
}

impl MemoryGauge {
    /// An empty gauge.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a change in bytes held.
    pub fn adjust(&self, before: usize, after: usize) {
        if after > before {
            self.used.fetch_add(after - before, Ordering::Relaxed);
        } else if before > after {
            let d = before - after;
            let _ = self
                .used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                    Some(u.saturating_sub(d))
                });
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_limits_and_release_wakes() {
        let ch = Arc::new(ChannelGate::default());
        let g = ConsumerGate::new(2, false, ch);
        assert!(g.try_take(1));
        assert!(g.written_n(1) == false);
        assert!(g.try_take(1));
        g.written_n(1);
        assert!(!g.try_take(1));
        assert!(g.settled(), "a blocked consumer is woken by a settle");
        assert!(g.try_take(1));
    }

    #[test]
    fn large_deliveries_cost_more_credit_but_one_always_goes() {
        assert_eq!(cost(100), 1);
        assert_eq!(cost(UNIT_BYTES), 2);
        assert_eq!(cost(1 << 20), 129);
        let g = ConsumerGate::new(0, false, Arc::new(ChannelGate::default()));
        // 4 MiB of 1 MiB messages in flight at most, not 512 of them
        let mut n = 0;
        while g.try_take(cost(1 << 20)) {
            n += 1;
        }
        assert_eq!(n, 3, "3 x 129 units fit under 512");
        g.written_n(3 * cost(1 << 20));
        // a message larger than the whole credit still goes, alone
        assert!(g.try_take(cost(64 << 20)));
        assert!(!g.try_take(1));
    }

    #[test]
    fn many_consumers_share_the_node_credit() {
        let node = Arc::new(Consumers::default());
        let ch = Arc::new(ChannelGate::new(node.clone()));
        let one = ConsumerGate::new(0, true, ch.clone());
        assert_eq!(node.credit(), MAX_OUTSTANDING);
        let many: Vec<_> = (0..511)
            .map(|_| ConsumerGate::new(0, true, ch.clone()))
            .collect();
        assert_eq!(node.count(), 512);
        assert_eq!(node.credit(), 64);
        assert_eq!(one.try_take_bulk(MAX_OUTSTANDING), 64);
        drop(many);
        assert_eq!(node.count(), 1);
        one.give_back(64);
        assert_eq!(one.try_take_bulk(MAX_OUTSTANDING), MAX_OUTSTANDING);
        let crowd: Vec<_> = (0..10_000)
            .map(|_| ConsumerGate::new(0, true, ch.clone()))
            .collect();
        assert_eq!(node.credit(), MIN_OUTSTANDING, "never below the minimum");
        drop(crowd);
    }

    #[test]
    fn bulk_reservations_stop_at_the_outstanding_limit_and_wake() {
        let g = ConsumerGate::new(0, true, Arc::new(ChannelGate::default()));
        assert_eq!(g.try_take_bulk(MAX_OUTSTANDING - 10), MAX_OUTSTANDING - 10);
        assert_eq!(g.try_take_bulk(64), 10, "only what is left under the limit");
        assert_eq!(g.try_take_bulk(64), 0);
        assert!(g.written_n(20), "the blocked consumer's queue is woken");
        g.give_back(5);
        assert_eq!(g.try_take_bulk(64), 25);
    }

    #[test]
    fn global_prefetch_is_shared() {
        let ch = Arc::new(ChannelGate::default());
        ch.prefetch.store(1, Ordering::Release);
        let a = ConsumerGate::new(0, false, ch.clone());
        let b = ConsumerGate::new(0, false, ch);
        assert!(a.try_take(1));
        assert!(!b.try_take(1));
        a.settled();
        assert!(b.try_take(1));
    }
}
