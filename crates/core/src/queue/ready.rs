//! The ready messages of a queue, in delivery order: one FIFO per priority level
//! (a queue without `x-max-priority` has one level). The highest non-empty level is
//! delivered first; within a level, message ids give the order, so a requeued message
//! goes back to its original place.
//!
//! Each level keeps its head in memory, up to a window of messages and bytes; with a
//! spill factory set, later messages go to the level's spill and come back, oldest
//! first, as the head drains. Every id in a level's head is lower than every id in its
//! spill: entries move from the spill to the back of the head only, and a requeued
//! entry (which came from the head) goes back into the head.

use super::spill::{Lost, Spill, SpillFactory, WINDOW_BYTES, WINDOW_MESSAGES};
use super::{Entry, MsgId};
use std::collections::VecDeque;
use std::sync::Arc;

/// One priority level.
#[derive(Debug, Default)]
struct Level {
    /// The oldest messages, in memory.
    head: VecDeque<Entry>,
    /// Sizes of `head`'s messages (against the window).
    head_bytes: usize,
    /// Later messages, when the head was full; made when first needed.
    tail: Option<Box<dyn Spill>>,
}

impl Level {
    fn tail_len(&self) -> usize {
        self.tail.as_ref().map_or(0, |t| t.len())
    }
}

/// Ready messages by priority level.
#[derive(Debug)]
pub struct Ready {
    /// `levels[p]` holds the messages of priority `p`.
    levels: Vec<Level>,
    /// Messages in all levels, spilled ones included.
    len: usize,
    /// What their [`crate::message::Slot::size`]s add up to (memory accounting).
    bytes: usize,
    /// Their body bytes (`x-max-length-bytes`).
    body_bytes: usize,
    /// Makes spills; without one everything stays in memory.
    spills: Option<Arc<dyn SpillFactory>>,
    /// Most entries a level's head holds before later ones spill.
    window_messages: usize,
    /// Most bytes a level's head holds before later ones spill.
    window_bytes: usize,
    /// Entries lost by spills that could not read them back, not yet reported.
    lost: Lost,
}

impl Ready {
    /// An empty list with priority levels 0..=max_priority.
    pub fn new(max_priority: Option<u8>) -> Ready {
        let n = max_priority.map_or(1, |p| usize::from(p) + 1);
        Ready {
            levels: (0..n).map(|_| Level::default()).collect(),
            len: 0,
            bytes: 0,
            body_bytes: 0,
            spills: None,
            window_messages: WINDOW_MESSAGES,
            window_bytes: WINDOW_BYTES,
            lost: Lost::default(),
        }
    }

    /// Lets levels spill past a window of `messages` and `bytes`.
    pub fn set_spills(&mut self, f: Arc<dyn SpillFactory>, messages: usize, bytes: usize) {
        self.spills = Some(f);
        self.window_messages = messages.max(1);
        self.window_bytes = bytes.max(1);
    }

    fn level(&self, e: &Entry) -> usize {
        usize::from(e.priority).min(self.levels.len() - 1)
    }

    fn count_in(&mut self, e: &Entry) {
        self.len += 1;
        self.bytes += e.msg.size();
        self.body_bytes += e.body_len as usize;
    }

    fn count_out(&mut self, e: &Entry) {
        self.len -= 1;
        self.bytes -= e.msg.size();
        self.body_bytes -= e.body_len as usize;
    }

    /// Every message in memory, highest priority level first, in order within a level
    /// (spilled ones are not visited).
    pub fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.levels.iter().rev().flat_map(|l| l.head.iter())
    }

    /// Copies of up to `count` entries from position `offset` in delivery order (highest
    /// priority level first; within a level its head, then its spill), leaving every
    /// one where it is: the management API's browse. Spilled entries are read from the
    /// spill without taking them; a level whose spill cannot be read fails the browse.
    pub fn peek(&self, offset: usize, count: usize) -> Result<Vec<Entry>, String> {
        let mut skip = offset;
        let mut out = Vec::new();
        for level in self.levels.iter().rev() {
            if out.len() >= count {
                break;
            }
            let head = level.head.len();
            if skip >= head {
                skip -= head;
            } else {
                let want = count - out.len();
                out.extend(level.head.iter().skip(skip).take(want).cloned());
                skip = 0;
            }
            let Some(tail) = level.tail.as_ref() else {
                continue;
            };
            let spilled = tail.len();
            if skip >= spilled {
                skip -= spilled;
                continue;
            }
            if out.len() < count {
                out.extend(tail.peek(skip, count - out.len())?);
                skip = 0;
            }
        }
        Ok(out)
    }

    /// Appends a newly published message: to its level's head while that is under the
    /// window and nothing is spilled, else to the spill.
    pub fn push_back(&mut self, e: Entry) {
        let l = self.level(&e);
        self.count_in(&e);
        let (wm, wb) = (self.window_messages, self.window_bytes);
        let level = &mut self.levels[l];
        let full = level.head.len() >= wm || level.head_bytes >= wb;
        let e = if full || level.tail_len() > 0 {
            if level.tail.is_none() {
                level.tail = self.spills.as_ref().and_then(|f| f.create());
            }
            match level.tail.as_mut() {
                Some(t) => match t.push(e) {
                    Ok(()) => return,
                    Err(e) => e,
                },
                None => e,
            }
        } else {
            e
        };
        // no spill, or it could not take the entry: it stays in memory, after the
        // spilled ones if any (a level keeps its order; it comes back only in order)
        level.head_bytes += e.msg.size();
        level.head.push_back(e);
    }

    /// Puts a message back at its place by id (requeue).
    pub fn put_back(&mut self, e: Entry) {
        let l = self.level(&e);
        self.count_in(&e);
        let level = &mut self.levels[l];
        level.head_bytes += e.msg.size();
        match level.head.front() {
            Some(f) if f.id < e.id => {
                let pos = level.head.partition_point(|x| x.id < e.id);
                level.head.insert(pos, e);
            }
            _ => level.head.push_front(e),
        }
    }

    /// The next message to deliver.
    pub fn front(&self) -> Option<&Entry> {
        self.levels.iter().rev().find_map(|l| l.head.front())
    }

    /// Takes the head of level `l` and refills the head from the spill when it runs
    /// low.
    fn pop_level(&mut self, l: usize) -> Option<Entry> {
        let level = &mut self.levels[l];
        let e = level.head.pop_front()?;
        level.head_bytes -= e.msg.size();
        self.count_out(&e);
        self.refill(l);
        Some(e)
    }

    /// Reads entries back from level `l`'s spill once its head is down to half the
    /// window in both messages and bytes (so a draining consumer finds the next
    /// messages in memory, and each read brings back half a window at once).
    fn refill(&mut self, l: usize) {
        let (wm, wb) = (self.window_messages, self.window_bytes);
        let level = &mut self.levels[l];
        if level.tail_len() == 0 || level.head.len() > wm / 2 || level.head_bytes > wb / 2 {
            return;
        }
        let Some(tail) = level.tail.as_mut() else {
            return;
        };
        let popped = tail.pop(
            wm.saturating_sub(level.head.len()).max(1),
            wb.saturating_sub(level.head_bytes).max(1),
        );
        for e in popped.entries {
            level.head_bytes += e.msg.size();
            level.head.push_back(e);
        }
        let lost = popped.lost;
        if lost.count > 0 {
            self.len -= lost.count.min(self.len);
            self.bytes -= lost.bytes.min(self.bytes);
            self.body_bytes -= lost.body_bytes.min(self.body_bytes);
            self.lost.count += lost.count;
            self.lost.bytes += lost.bytes;
            self.lost.body_bytes += lost.body_bytes;
        }
    }

    /// Takes the next message to deliver.
    pub fn pop_front(&mut self) -> Option<Entry> {
        let l = self.levels.iter().rposition(|l| !l.head.is_empty())?;
        self.pop_level(l)
    }

    /// Takes the head of every level whose head has expired by `now` (RabbitMQ expires
    /// messages when they reach the head), repeatedly.
    pub fn pop_expired(&mut self, now: u64) -> Vec<Entry> {
        let mut out = Vec::new();
        for l in 0..self.levels.len() {
            while self.levels[l]
                .head
                .front()
                .is_some_and(|e| e.expires_at.is_some_and(|t| now > t))
            {
                if let Some(e) = self.pop_level(l) {
                    out.push(e);
                }
            }
        }
        out
    }

    /// The earliest expiry among the heads of the levels.
    pub fn next_expiry(&self) -> Option<u64> {
        self.levels
            .iter()
            .filter_map(|l| l.head.front().and_then(|e| e.expires_at))
            .min()
    }

    /// Takes every message in memory, and forgets the spilled ones: returns the
    /// entries, and the store ids of spilled persisted messages.
    pub fn drain_all(&mut self) -> (Vec<Entry>, Vec<u64>) {
        self.len = 0;
        self.bytes = 0;
        self.body_bytes = 0;
        let mut spilled = Vec::new();
        let mut out = Vec::new();
        for level in &mut self.levels {
            level.head_bytes = 0;
            out.extend(level.head.drain(..));
            if let Some(t) = level.tail.as_mut() {
                spilled.extend(t.clear());
            }
        }
        (out, spilled)
    }

    /// Tries again to read back levels whose head is empty while their spill is not
    /// (a read that failed before); true if anything came back.
    pub fn retry_refill(&mut self) -> bool {
        let mut any = false;
        for l in 0..self.levels.len() {
            if self.levels[l].head.is_empty() && self.levels[l].tail_len() > 0 {
                self.refill(l);
                any |= !self.levels[l].head.is_empty();
            }
        }
        any
    }

    /// Whether some level holds spilled messages but none in memory (its spill could
    /// not be read: the queue retries later).
    pub fn stalled(&self) -> bool {
        self.levels
            .iter()
            .any(|l| l.head.is_empty() && l.tail_len() > 0)
    }

    /// Entries lost by spills since the last call (to report them).
    pub fn take_lost(&mut self) -> Lost {
        std::mem::take(&mut self.lost)
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Messages held in memory (not spilled).
    pub fn in_memory(&self) -> usize {
        self.levels.iter().map(|l| l.head.len()).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Accounted bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Body bytes.
    pub fn body_bytes(&self) -> usize {
        self.body_bytes
    }

    /// Ids in memory in delivery order (tests).
    pub fn ids(&self) -> Vec<MsgId> {
        self.levels
            .iter()
            .rev()
            .flat_map(|l| l.head.iter().map(|e| e.id))
            .collect()
    }
}
