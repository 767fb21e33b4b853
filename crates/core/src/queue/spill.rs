//! Where a queue's ready messages past its in-memory window wait: a spill, one per
//! priority level, that takes entries at the back and gives the oldest back in order.
//! A queue with no consumer and millions of messages keeps a bounded window in memory
//! and the rest in its spill (RabbitMQ's classic queues v2 do this for every message).
//! The store crate writes spills to files; this module only says what one does, and
//! holds an in-memory one for tests.

use super::Entry;
use std::collections::VecDeque;

/// Most entries a level keeps in memory before later ones go to its spill.
pub const WINDOW_MESSAGES: usize = 12288;
/// Most message bytes a level keeps in memory before later ones go to its spill.
pub const WINDOW_BYTES: usize = 16 << 20;

/// Entries a spill could not give back (a damaged record, or one the spill could not
/// read), so the queue's counts can drop them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lost {
    /// Entries.
    pub count: usize,
    /// What their [`crate::message::Slot::size`]s added up to.
    pub bytes: usize,
    /// Their body bytes.
    pub body_bytes: usize,
}

/// The oldest entries of a spill, and what was lost on the way.
#[derive(Debug, Default)]
pub struct Popped {
    /// Entries in order, each with its message loaded (a persisted message may come
    /// back paged: the queue reads it from the store).
    pub entries: Vec<Entry>,
    /// Entries lost.
    pub lost: Lost,
}

/// The back of one priority level's ready messages.
pub trait Spill: Send + std::fmt::Debug {
    /// Appends an entry. Gives it back if it cannot be written (the queue then keeps
    /// it in memory).
    fn push(&mut self, e: Entry) -> Result<(), Entry>;
    /// Takes up to `max` of the oldest entries back, stopping once their sizes reach
    /// `max_bytes` (at least one comes back). A read that fails for a reason that may
    /// pass (an I/O error) gives fewer, possibly none, and loses nothing: a later call
    /// tries again. A record that can never be read is reported and lost.
    fn pop(&mut self, max: usize, max_bytes: usize) -> Popped;
    /// Entries held.
    fn len(&self) -> usize;
    /// Whether it holds none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Forgets every entry (purge, delete); returns the store ids of the persisted ones
    /// (so the queue removes them from the store).
    fn clear(&mut self) -> Vec<u64>;
    /// Copies of up to `max` entries after the `skip` oldest, in order, leaving the
    /// spill as it is (the management API's browse). A spill that cannot read without
    /// taking says so.
    fn peek(&self, skip: usize, max: usize) -> Result<Vec<Entry>, String> {
        let _ = (skip, max);
        Err("this spill cannot be read without taking its entries".into())
    }
}

/// Makes spills for a queue's levels, when a level first needs one.
pub trait SpillFactory: Send + Sync + std::fmt::Debug {
    /// A new empty spill, or `None` if none can be made (the level stays in memory).
    fn create(&self) -> Option<Box<dyn Spill>>;
}

/// A spill in memory: for tests of the queue's logic.
#[derive(Debug, Default)]
pub struct MemorySpill(pub VecDeque<Entry>);

impl Spill for MemorySpill {
    fn push(&mut self, e: Entry) -> Result<(), Entry> {
        self.0.push_back(e);
        Ok(())
    }
    fn pop(&mut self, max: usize, max_bytes: usize) -> Popped {
        let mut out = Popped::default();
        let mut bytes = 0;
        while out.entries.len() < max && (bytes < max_bytes || out.entries.is_empty()) {
            let Some(e) = self.0.pop_front() else { break };
            bytes += e.msg.size();
            out.entries.push(e);
        }
        out
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn peek(&self, skip: usize, max: usize) -> Result<Vec<Entry>, String> {
        Ok(self.0.iter().skip(skip).take(max).cloned().collect())
    }
    fn clear(&mut self) -> Vec<u64> {
        self.0
            .drain(..)
            .filter_map(|e| e.msg.persist_id())
            .collect()
    }
}

/// Makes [`MemorySpill`]s.
#[derive(Debug, Default)]
pub struct MemorySpills;

impl SpillFactory for MemorySpills {
    fn create(&self) -> Option<Box<dyn Spill>> {
        Some(Box::new(MemorySpill::default()))
    }
}
