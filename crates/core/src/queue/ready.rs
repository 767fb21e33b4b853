//! The ready messages of a queue, in delivery order: one FIFO per priority level
//! (a queue without `x-max-priority` has one level). The highest non-empty level is
//! delivered first; within a level, message ids give the order, so a requeued message
//! goes back to its original place.

use super::{Entry, MsgId};
use std::collections::VecDeque;

/// Ready messages by priority level.
#[derive(Debug)]
pub struct Ready {
    /// `levels[p]` holds the messages of priority `p`.
    levels: Vec<VecDeque<Entry>>,
    /// Messages in all levels.
    len: usize,
    /// What their [`crate::message::Slot::size`]s add up to (memory accounting).
    bytes: usize,
    /// Their body bytes (`x-max-length-bytes`).
    body_bytes: usize,
    /// Level of the most recent push (to page that message out).
    last_level: usize,
}

impl Ready {
    /// An empty list with priority levels 0..=max_priority.
    pub fn new(max_priority: Option<u8>) -> Ready {
        let n = max_priority.map_or(1, |p| usize::from(p) + 1);
        Ready {
            levels: (0..n).map(|_| VecDeque::new()).collect(),
            len: 0,
            bytes: 0,
            body_bytes: 0,
            last_level: 0,
        }
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

    /// Appends a newly published message.
    /// Every message, highest priority level first, in order within a level.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.levels.iter().rev().flat_map(|l| l.iter())
    }

    /// Appends a newly published message.
    pub fn push_back(&mut self, e: Entry) {
        let l = self.level(&e);
        self.count_in(&e);
        self.levels[l].push_back(e);
        self.last_level = l;
    }

    /// Puts a message back at its place by id (requeue).
    pub fn put_back(&mut self, e: Entry) {
        let l = self.level(&e);
        self.count_in(&e);
        let level = &mut self.levels[l];
        match level.front() {
            Some(f) if f.id < e.id => {
                let pos = level.partition_point(|x| x.id < e.id);
                level.insert(pos, e);
            }
            _ => level.push_front(e),
        }
    }

    /// The next message to deliver.
    pub fn front(&self) -> Option<&Entry> {
        self.levels.iter().rev().find_map(|l| l.front())
    }

    /// Takes the next message to deliver.
    pub fn pop_front(&mut self) -> Option<Entry> {
        let l = self.levels.iter().rposition(|l| !l.is_empty())?;
        let e = self.levels[l].pop_front()?;
        self.count_out(&e);
        Some(e)
    }

    /// Takes the head of every level whose head has expired by `now` (RabbitMQ expires
    /// messages when they reach the head), repeatedly.
    pub fn pop_expired(&mut self, now: u64) -> Vec<Entry> {
        let mut out = Vec::new();
        for l in 0..self.levels.len() {
            while self.levels[l]
                .front()
                .is_some_and(|e| e.expires_at.is_some_and(|t| now > t))
            {
                if let Some(e) = self.levels[l].pop_front() {
                    self.len -= 1;
                    self.bytes -= e.msg.size();
                    self.body_bytes -= e.body_len as usize;
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
            .filter_map(|l| l.front().and_then(|e| e.expires_at))
            .min()
    }

    /// The most recently pushed message.
    pub fn last_mut(&mut self) -> Option<&mut Entry> {
        self.levels[self.last_level].back_mut()
    }

    /// Takes every message.
    pub fn drain_all(&mut self) -> Vec<Entry> {
        self.len = 0;
        self.bytes = 0;
        self.body_bytes = 0;
        self.levels.iter_mut().flat_map(|l| l.drain(..)).collect()
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.len
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

    /// Ids in delivery order (tests).
    pub fn ids(&self) -> Vec<MsgId> {
        self.levels
            .iter()
            .rev()
            .flat_map(|l| l.iter().map(|e| e.id))
            .collect()
    }
}
