//! Delayed retry: a message a consumer gives back (nack or reject with requeue, a
//! closed channel) waits out a back-off before it is ready again, instead of coming
//! straight back to the consumer that just failed it. This replaces the chains of
//! TTL queues and dead-letter exchanges users build by hand for retries.
//!
//! The arguments are RabbitMQ 4.3's (`x-delayed-retry-type`, `x-delayed-retry-min`,
//! `x-delayed-retry-max`, and the policy keys without `x-`) and LavinMQ 2.11's
//! (`x-delayed-retry-min` alone enables it; `x-delayed-retry-multiplier` shapes the
//! back-off), plus `x-delayed-retry-jitter` of our own: exponential back-off with
//! jitter, which neither offers.
//!
//! The delay of the n-th return (n = the message's delivery count, at least 1) is
//! `min × n` (linear: RabbitMQ's only shape, LavinMQ's default), `min` with a
//! multiplier of 1, or `min × multiplier^(n−1)` with a multiplier of 2 or more; then
//! capped at `max` and at 2^32−1 ms (about 49.7 days, LavinMQ's cap); then, with a
//! jitter of J percent, drawn from `[delay × (100−J)/100, delay]`. The draw is a hash
//! of the message's id and count, not a random number: a quorum queue's replicas must
//! decide the same delay.
//!
//! Waiting messages are kept by [`Delayed`], ordered by the time they are due; the
//! queue's timer ([`super::QueueState::next_expiry`]) wakes the queue then. They count
//! as the queue's messages (bytes, `messages_delayed`), not as ready ones.

use super::{Entry, MsgId};
use crate::args::{str_value, Checker, MAX_MILLIS};
use crate::error::AmqpError;
use crate::message::Slot;
use amq_protocol::types::FieldTable;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which returns wait out the back-off (`x-delayed-retry-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetryKind {
    /// Every return.
    All,
    /// Returns that count against `x-delivery-limit` (a client's nack, reject or
    /// recover, a closed channel, a consumer timeout).
    Failed,
    /// Returns that do not (a quorum queue's leader change).
    Returned,
}

/// A queue's delayed-retry settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Which returns are delayed.
    pub kind: RetryKind,
    /// The first delay (ms), and the step of the linear back-off.
    pub min_ms: u64,
    /// The longest delay (ms).
    pub max_ms: Option<u64>,
    /// `None`: linear; 1: constant; 2 or more: exponential.
    pub multiplier: Option<u32>,
    /// Percent of each delay drawn at random below it (0: none).
    pub jitter_pct: u8,
}

/// The longest delay whatever `max` says: 2^32−1 ms, as LavinMQ caps it.
pub const DELAY_CAP_MS: u64 = u32::MAX as u64;

/// The delivery limit of a classic queue with delayed retry and no `x-delivery-limit`
/// (LavinMQ's default; a quorum queue has RabbitMQ 4.x's 20 anyway).
pub const RETRY_DELIVERY_LIMIT: u64 = 20;

/// The queue arguments of delayed retry, and the policy keys (without `x-`) that become
/// them.
pub const RETRY_ARGS: &[&str] = &[
    "x-delayed-retry-type",
    "x-delayed-retry-min",
    "x-delayed-retry-max",
    "x-delayed-retry-multiplier",
    "x-delayed-retry-jitter",
];

impl RetryPolicy {
    /// Whether a return waits: `counted` says whether it counted against the delivery
    /// limit.
    pub fn applies(&self, counted: bool) -> bool {
        match self.kind {
            RetryKind::All => true,
            RetryKind::Failed => counted,
            RetryKind::Returned => !counted,
        }
    }

    /// The delay (ms) of a message's return: `count` is its delivery count after the
    /// return, `id` makes the jitter's draw.
    pub fn delay(&self, count: u32, id: MsgId) -> u64 {
        let n = u64::from(count.max(1));
        let base = match self.multiplier {
            None => self.min_ms.saturating_mul(n),
            Some(m) if m <= 1 => self.min_ms,
            Some(m) => {
                let exp = u32::try_from(n - 1).unwrap_or(u32::MAX).min(64);
                u64::from(m)
                    .checked_pow(exp)
                    .map_or(u64::MAX, |f| self.min_ms.saturating_mul(f))
            }
        };
        let capped = base.min(self.max_ms.unwrap_or(u64::MAX)).min(DELAY_CAP_MS);
        if self.jitter_pct == 0 {
            return capped;
        }
        let span = capped * u64::from(self.jitter_pct) / 100;
        let draw = mix(id ^ (u64::from(count) << 48));
        capped - if span == 0 { 0 } else { draw % (span + 1) }
    }
}

/// A 64-bit mixer (splitmix64's finaliser): spreads ids that differ in a few bits
/// over the whole range, so consecutive messages get unrelated jitter.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Reads a queue's delayed-retry arguments (after its type read the others): `None`
/// when retry is off. On, with RabbitMQ's `x-delayed-retry-type` other than
/// `disabled`, or LavinMQ's way, `x-delayed-retry-min` without a type (every return
/// waits).
pub(crate) fn parse(c: &Checker<'_>, table: &FieldTable) -> Result<Option<RetryPolicy>, AmqpError> {
    let t = table.inner();
    let kind = match t.get("x-delayed-retry-type") {
        None => None,
        Some(v) => match str_value(v).as_deref() {
            Some("disabled") => return Ok(None),
            Some("all") => Some(RetryKind::All),
            Some("failed") => Some(RetryKind::Failed),
            Some("returned") => Some(RetryKind::Returned),
            Some(other) => {
                let why = format!(
                    "\"unknown retry type '{other}': expected disabled, all, failed or returned\""
                );
                return Err(c.invalid("x-delayed-retry-type", why));
            }
            None => {
                let why = format!("{{unacceptable_type,{}}}", crate::args::type_name(v));
                return Err(c.invalid("x-delayed-retry-type", why));
            }
        },
    };
    let millis = |key: &str| -> Result<Option<u64>, AmqpError> {
        t.get(key)
            .map(|v| c.millis(key, v, false).map(|ms| ms.min(MAX_MILLIS)))
            .transpose()
    };
    let min_ms = millis("x-delayed-retry-min")?;
    let max_ms = millis("x-delayed-retry-max")?;
    let multiplier = match t.get("x-delayed-retry-multiplier") {
        None => None,
        Some(v) => {
            Some(u32::try_from(c.positive("x-delayed-retry-multiplier", v)?).unwrap_or(u32::MAX))
        }
    };
    let jitter_pct = match t.get("x-delayed-retry-jitter") {
        None => 0,
        Some(v) => {
            let j = c.non_neg("x-delayed-retry-jitter", v)?;
            if j > 100 {
                let why = format!("\"{j} is not a percentage (0 to 100)\"");
                return Err(c.invalid("x-delayed-retry-jitter", why));
            }
            j as u8
        }
    };
    let Some(min_ms) = min_ms else {
        if kind.is_some() {
            let why =
                "\"x-delayed-retry-min is required when x-delayed-retry-type is not disabled\"";
            return Err(c.invalid("x-delayed-retry-type", why.into()));
        }
        return Ok(None);
    };
    if max_ms.is_some_and(|m| m < min_ms) {
        let why = format!(
            "\"{} is less than x-delayed-retry-min ({min_ms})\"",
            max_ms.unwrap_or_default()
        );
        return Err(c.invalid("x-delayed-retry-max", why));
    }
    Ok(Some(RetryPolicy {
        kind: kind.unwrap_or(RetryKind::All),
        min_ms,
        max_ms,
        multiplier,
        jitter_pct,
    }))
}

/// One waiting message.
#[derive(Debug, Clone)]
pub struct Waiting {
    /// When it is ready again (ms since the epoch).
    pub due: u64,
    /// Whether it goes to the back of the queue then (a quorum queue's return) or
    /// back to its place (a classic queue's).
    pub to_back: bool,
    /// The message.
    pub entry: Entry,
}

/// Messages waiting out their back-off, by due time (then id).
#[derive(Debug, Default)]
pub struct Delayed {
    by_due: BTreeMap<(u64, MsgId), Waiting>,
    /// What their [`Slot::size`]s add up to.
    bytes: usize,
    /// Sizes of those held in memory (against [`Delayed::PAGE_BYTES`]).
    loaded_bytes: usize,
}

impl Delayed {
    /// Past this many bytes held in memory, a persisted message waits as a reference
    /// to its store record (read back when it is delivered), as a spilled one does.
    pub const PAGE_BYTES: usize = 8 << 20;

    /// Adds a waiting message.
    pub fn insert(&mut self, mut w: Waiting) {
        if let Slot::Loaded(m) = &w.entry.msg {
            match m.persist_id {
                Some(persist_id) if self.loaded_bytes >= Self::PAGE_BYTES => {
                    let size = u32::try_from(m.size()).unwrap_or(u32::MAX);
                    w.entry.msg = Slot::Paged { persist_id, size };
                }
                _ => self.loaded_bytes += m.size(),
            }
        }
        self.bytes += w.entry.msg.size();
        self.by_due.insert((w.due, w.entry.id), w);
    }

    fn count_out(&mut self, w: &Waiting) {
        self.bytes -= w.entry.msg.size();
        if let Slot::Loaded(m) = &w.entry.msg {
            self.loaded_bytes -= m.size();
        }
    }

    /// Takes the messages due at `now`, earliest first.
    pub fn take_due(&mut self, now: u64) -> Vec<Waiting> {
        let mut out = Vec::new();
        while let Some(entry) = self.by_due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let w = entry.remove();
            self.count_out(&w);
            out.push(w);
        }
        out
    }

    /// Takes every waiting message, earliest first.
    pub fn take_all(&mut self) -> Vec<Waiting> {
        self.bytes = 0;
        self.loaded_bytes = 0;
        std::mem::take(&mut self.by_due).into_values().collect()
    }

    /// When the next message is due.
    pub fn next_due(&self) -> Option<u64> {
        self.by_due.keys().next().map(|(due, _)| *due)
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.by_due.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.by_due.is_empty()
    }

    /// Their sizes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The waiting messages, earliest first.
    pub fn iter(&self) -> impl Iterator<Item = &Waiting> + '_ {
        self.by_due.values()
    }
}

/// What the queue state does with returned messages under a retry policy.
impl<C> super::QueueState<C> {
    /// Returned messages waiting out their retry back-off.
    pub fn delayed_count(&self) -> usize {
        self.delayed.len()
    }

    /// A returned message waits out its back-off if the queue's retry policy says so
    /// (`counted`: the return counted against the delivery limit); otherwise it is
    /// handed back to be queued at once.
    pub(super) fn delay(&mut self, e: Entry, counted: bool, to_back: bool) -> Option<Entry> {
        match self.args.retry {
            Some(p) if p.applies(counted) => {
                let due = self.now.saturating_add(p.delay(e.returns, e.id));
                self.delayed.insert(Waiting {
                    due,
                    to_back,
                    entry: e,
                });
                None
            }
            _ => Some(e),
        }
    }

    /// Makes waiting messages ready: to their place, or (a quorum queue's return) to
    /// the back with a new id.
    pub(super) fn make_ready(&mut self, waiting: Vec<Waiting>) {
        if waiting.is_empty() {
            return;
        }
        for w in waiting {
            let mut e = w.entry;
            if w.to_back {
                e.id = self.next_id;
                self.next_id += 1;
                self.ready.push_back(e);
            } else {
                self.ready.put_back(e);
            }
        }
        self.enforce_limits();
    }

    /// Puts deliveries back in their place as they were, by id: the broker took them,
    /// not a client (the management API's move could not place them, or they never
    /// reached their consumer), so the return is not counted against the delivery
    /// limit and waits out no retry back-off.
    pub fn give_back(&mut self, ids: &[MsgId]) -> usize {
        let back = ids
            .iter()
            .filter_map(|id| self.take_unacked(id))
            .map(|u| u.entry)
            .collect();
        self.put_back(back)
    }
}

#[cfg(test)]
#[path = "retry_tests.rs"]
mod tests;
