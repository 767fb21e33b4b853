//! Channel state that is pure bookkeeping: delivery tags and the deliveries they stand for,
//! and publisher-confirm sequence numbers.

use crate::error::AmqpError;
use crate::names::DeliveryTag;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Deliveries awaiting ack on one channel, keyed by delivery tag. `U` is what the channel
/// needs to settle one (which queue, which message, which consumer).
#[derive(Debug)]
pub struct Unacked<U> {
    next_tag: u64,
    pending: BTreeMap<u64, U>,
}

impl<U> Default for Unacked<U> {
    fn default() -> Self {
        Self {
            next_tag: 1,
            pending: BTreeMap::new(),
        }
    }
}

impl<U> Unacked<U> {
    /// Allocates the next delivery tag without recording anything (no-ack deliveries).
    pub fn next_tag(&mut self) -> DeliveryTag {
        let t = self.next_tag;
        self.next_tag += 1;
        DeliveryTag(t)
    }

    /// Allocates a tag and records what it settles.
    pub fn record(&mut self, u: U) -> DeliveryTag {
        let t = self.next_tag();
        self.pending.insert(t.0, u);
        t
    }

    /// Number of deliveries awaiting ack.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing awaits ack.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Settles `tag` (and with `multiple`, every earlier tag; tag 0 with `multiple` means
    /// all). A tag that is not awaiting ack is 406 PRECONDITION_FAILED "unknown delivery
    /// tag N", with or without `multiple`, as RabbitMQ answers: a multiple ack must name a
    /// tag it holds, so a tag past the last delivery (`u64::MAX` included) settles nothing
    /// and closes the channel rather than acking everything before it.
    pub fn settle(&mut self, tag: u64, multiple: bool) -> Result<Vec<(DeliveryTag, U)>, AmqpError> {
        if multiple && tag == 0 {
            return Ok(self.take_all());
        }
        if !self.pending.contains_key(&tag) {
            return Err(unknown(tag));
        }
        if !multiple {
            return Ok(self
                .pending
                .remove(&tag)
                .map(|u| vec![(DeliveryTag(tag), u)])
                .unwrap_or_default());
        }
        // `tag` is pending, so the split keeps it on the taken side: everything after it
        // stays (no `tag + 1`, which would overflow at u64::MAX)
        let mut rest = self.pending.split_off(&tag);
        let last = rest.remove(&tag);
        let mut taken = std::mem::replace(&mut self.pending, rest);
        if let Some(u) = last {
            taken.insert(tag, u);
        }
        Ok(taken
            .into_iter()
            .map(|(t, u)| (DeliveryTag(t), u))
            .collect())
    }

    /// Takes every pending delivery (channel close, basic.recover).
    pub fn take_all(&mut self) -> Vec<(DeliveryTag, U)> {
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(t, u)| (DeliveryTag(t), u))
            .collect()
    }

    /// Puts a settled delivery back under its tag (tx.rollback of a buffered ack).
    pub fn reinsert(&mut self, tag: DeliveryTag, u: U) {
        self.pending.insert(tag.0, u);
    }

    /// Iterates pending deliveries.
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &U)> {
        self.pending.iter()
    }

    /// Removes pending deliveries for which `f` is true (their queue was deleted).
    pub fn retain(&mut self, f: impl FnMut(&u64, &mut U) -> bool) {
        self.pending.retain(f);
    }
}

fn unknown(tag: u64) -> AmqpError {
    AmqpError::precondition_failed(format!("unknown delivery tag {tag}"))
}

/// A confirm to send: basic.ack or basic.nack with its delivery tag and multiple flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfirmFrame {
    /// Ack (true) or nack (false).
    pub ack: bool,
    /// The publish sequence number.
    pub tag: u64,
    /// Covers every earlier unconfirmed sequence number too.
    pub multiple: bool,
}

/// Publisher confirms: sequence numbers, outstanding ones, and settled ones not yet sent.
#[derive(Debug, Default)]
pub struct Confirms {
    next_seq: u64,
    outstanding: BTreeSet<u64>,
    acked: BTreeSet<u64>,
    nacked: BTreeSet<u64>,
    /// Publishes that wait for more than one part (the store's fsync and each quorum
    /// queue's commit, say): the parts still to come, and whether every part so far was
    /// ok. A publish missing here has one part.
    parts: HashMap<u64, (u32, bool)>,
}

impl Confirms {
    /// Assigns the sequence number of the next publish (starting at 1) and marks it
    /// outstanding.
    pub fn next(&mut self) -> u64 {
        self.next_seq += 1;
        self.outstanding.insert(self.next_seq);
        self.next_seq
    }

    /// Says that publish `seq` is settled by `n` parts (each a [`Confirms::settle`]):
    /// it is confirmed once all have come, and nacked if any of them nacked. A publish
    /// has one part unless told otherwise; `n` of 0 or 1 changes nothing.
    pub fn expect_parts(&mut self, seq: u64, n: u32) {
        if n > 1 && self.outstanding.contains(&seq) {
            self.parts.insert(seq, (n, true));
        }
    }

    /// Settles one part of a publish (the whole of it, unless it has several parts).
    pub fn settle(&mut self, seq: u64, ack: bool) {
        let ack = match self.parts.get_mut(&seq) {
            None => ack,
            Some((left, ok)) => {
                *left -= 1;
                *ok &= ack;
                if *left > 0 {
                    return;
                }
                let ok = *ok;
                self.parts.remove(&seq);
                ok
            }
        };
        if self.outstanding.remove(&seq) {
            if ack {
                self.acked.insert(seq);
            } else {
                self.nacked.insert(seq);
            }
        }
    }

    /// Whether settled confirms wait to be sent.
    pub fn has_pending(&self) -> bool {
        !self.acked.is_empty() || !self.nacked.is_empty()
    }

    /// The frames to send now, using `multiple` where it covers a whole run.
    pub fn drain(&mut self) -> Vec<ConfirmFrame> {
        let mut out = Vec::new();
        let low = self.outstanding.first().copied().unwrap_or(u64::MAX);
        if self.nacked.is_empty() {
            let above = self.acked.split_off(&low);
            let below = std::mem::replace(&mut self.acked, above);
            if let Some(&max) = below.last() {
                out.push(ConfirmFrame {
                    ack: true,
                    tag: max,
                    multiple: below.len() > 1,
                });
            }
        }
        let mut rest: Vec<(u64, bool)> = self.acked.iter().map(|&s| (s, true)).collect();
        rest.extend(self.nacked.iter().map(|&s| (s, false)));
        rest.sort_unstable();
        self.acked.clear();
        self.nacked.clear();
        out.extend(rest.into_iter().map(|(tag, ack)| ConfirmFrame {
            ack,
            tag,
            multiple: false,
        }));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settle_single_multiple_and_unknown() {
        let mut u = Unacked::default();
        for i in 0..5 {
            u.record(i);
        }
        assert_eq!(u.settle(2, false).unwrap().len(), 1);
        assert_eq!(
            u.settle(2, false).unwrap_err().code,
            crate::ReplyCode::PreconditionFailed
        );
        let got: Vec<u64> = u
            .settle(4, true)
            .unwrap()
            .iter()
            .map(|(t, _)| t.0)
            .collect();
        assert_eq!(got, vec![1, 3, 4]);
        assert_eq!(u.settle(0, true).unwrap().len(), 1);
        assert!(u.is_empty());
        assert!(u.settle(99, true).is_err());
    }

    #[test]
    fn multiple_needs_a_pending_tag_as_rabbitmq() {
        let mut u = Unacked::default();
        for i in 0..3 {
            u.record(i);
        }
        // past the last delivery, the largest tag included: refused, nothing settled
        for tag in [u64::MAX, 10] {
            let e = u.settle(tag, true).unwrap_err();
            assert_eq!(e.code, crate::ReplyCode::PreconditionFailed);
            assert_eq!(
                e.reply_text(),
                format!("PRECONDITION_FAILED - unknown delivery tag {tag}")
            );
            assert_eq!(u.len(), 3);
        }
        // an already settled tag is unknown even with earlier ones pending
        u.settle(2, false).unwrap();
        assert!(u.settle(2, true).is_err());
        assert_eq!(u.len(), 2);
        assert_eq!(
            u.settle(0, false).unwrap_err().reply_text(),
            "PRECONDITION_FAILED - unknown delivery tag 0"
        );
        let got: Vec<u64> = u
            .settle(3, true)
            .unwrap()
            .iter()
            .map(|(t, _)| t.0)
            .collect();
        assert_eq!(got, vec![1, 3]);
    }

    #[test]
    fn the_largest_tag_settles_when_pending() {
        let mut u = Unacked::default();
        u.reinsert(DeliveryTag(u64::MAX - 1), 'a');
        u.reinsert(DeliveryTag(u64::MAX), 'b');
        let got: Vec<u64> = u
            .settle(u64::MAX, true)
            .unwrap()
            .iter()
            .map(|(t, _)| t.0)
            .collect();
        assert_eq!(got, vec![u64::MAX - 1, u64::MAX]);
        assert!(u.is_empty());
    }

    #[test]
    fn a_publish_of_several_parts_waits_for_all_and_any_nack_wins() {
        let mut c = Confirms::default();
        let (a, b, one) = (c.next(), c.next(), c.next());
        c.expect_parts(a, 3);
        c.expect_parts(b, 2);
        c.expect_parts(one, 1);
        c.settle(a, true);
        c.settle(b, false);
        c.settle(a, true);
        assert!(!c.has_pending());
        c.settle(one, true);
        c.settle(b, true);
        c.settle(a, true);
        let frames = c.drain();
        assert_eq!(
            frames,
            vec![
                ConfirmFrame {
                    ack: true,
                    tag: a,
                    multiple: false
                },
                ConfirmFrame {
                    ack: false,
                    tag: b,
                    multiple: false
                },
                ConfirmFrame {
                    ack: true,
                    tag: one,
                    multiple: false
                },
            ]
        );
        // a late part of a settled publish changes nothing
        c.settle(a, false);
        assert!(!c.has_pending());
    }

    #[test]
    fn confirms_collapse_into_multiple() {
        let mut c = Confirms::default();
        let seqs: Vec<u64> = (0..5).map(|_| c.next()).collect();
        for s in &seqs {
            c.settle(*s, true);
        }
        assert_eq!(
            c.drain(),
            vec![ConfirmFrame {
                ack: true,
                tag: 5,
                multiple: true
            }]
        );
    }

    #[test]
    fn confirms_with_gap_are_individual() {
        let mut c = Confirms::default();
        let a = c.next();
        let b = c.next();
        let d = c.next();
        c.settle(b, true);
        c.settle(d, false);
        let frames = c.drain();
        assert_eq!(frames.len(), 2);
        assert!(frames.iter().all(|f| !f.multiple));
        c.settle(a, true);
        assert_eq!(
            c.drain(),
            vec![ConfirmFrame {
                ack: true,
                tag: 1,
                multiple: false
            }]
        );
    }
}
