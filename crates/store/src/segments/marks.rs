//! Append numbers ("marks") for writers outside the segment files: stream logs
//! ([`crate::stream`]) number their appends in the same sequence, so a channel's commit
//! request (`since`, `upto`) covers its stream appends too, and a stream's failed write
//! or fsync fails exactly the commits that may have lost something.

use super::{lock, Segments};
use std::sync::atomic::Ordering;

impl Segments {
    /// Takes the next append number for a record written elsewhere (a stream chunk).
    pub fn take_mark(&self) -> u64 {
        let mut w = lock(&self.writer);
        w.appended += 1;
        self.appended.store(w.appended, Ordering::SeqCst);
        w.appended
    }

    /// Appends numbered in `(since, upto]` may have been lost (a stream's write or fsync
    /// failed): every commit covering one of them fails.
    pub fn lose_marks(&self, since: u64, upto: u64) {
        if upto <= since {
            return;
        }
        let mut w = lock(&self.writer);
        w.lost.push((since, upto));
        if w.lost.len() > 64 {
            let (a0, b0) = w.lost[0];
            let (a1, b1) = w.lost[1];
            w.lost.splice(0..2, [(a0.min(a1), b0.max(b1))]);
        }
    }
}
