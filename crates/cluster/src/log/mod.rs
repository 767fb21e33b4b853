//! The Raft log of every group on the node, on the store's files and flusher.
//!
//! [`NodeLog`] is the node-wide half: `broker-store`'s Raft WAL (`data/raft/`, see
//! `broker_store::raft`) and the store's [`Flusher`], whose commit round writes and
//! fdatasyncs the classic queues' segments, the streams and every group's Raft records
//! at once. [`GroupLog`] is one group's openraft log storage over it (see [`group`]):
//! an in-memory index (log index → place in the WAL) per group, shared by every handle
//! of the group, and entries read back by `pread` (or from the WAL's buffer before it
//! is written out) and decoded with postcard.

// openraft's storage traits return its (large) `StorageError`; the helpers here return
// the same so that `?` carries it through unchanged
#![allow(clippy::result_large_err)]

mod group;

pub use group::GroupLog;

use crate::GroupId;
use broker_store::raft::{RaftWal, RecoveredGroup};
use broker_store::segments::Location;
use broker_store::{Flusher, SledStore};
use openraft::{AnyError, LogId, StorageError, StorageIOError, Vote};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// What the node keeps in memory of one group's log.
#[derive(Debug, Default)]
pub(crate) struct GroupIndex {
    pub(crate) vote: Option<Vote<u64>>,
    pub(crate) purged: Option<LogId<u64>>,
    /// Live entries after the purge point, by index.
    pub(crate) entries: BTreeMap<u64, Location>,
}

/// The node's Raft log: the store's WAL and flusher, and the index of each open group.
pub struct NodeLog {
    pub(crate) wal: Arc<RaftWal>,
    pub(crate) flusher: Flusher,
    /// Groups found on disk and not opened yet.
    recovered: Mutex<BTreeMap<GroupId, RecoveredGroup>>,
    /// Open groups: every [`GroupLog`] of a group shares its index.
    open: Mutex<HashMap<GroupId, Arc<Mutex<GroupIndex>>>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // each change to an index is one call that cannot half-happen, so a poisoned lock
    // still holds a consistent index
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn read_err<E: std::error::Error + 'static>(e: &E) -> StorageError<u64> {
    StorageIOError::read_logs(AnyError::new(e)).into()
}

pub(crate) fn write_err<E: std::error::Error + 'static>(e: &E) -> StorageError<u64> {
    StorageIOError::write_logs(AnyError::new(e)).into()
}

impl NodeLog {
    /// The node's log over `store`'s Raft WAL, committed by `flusher` (the store's).
    /// Returns it and the groups recovered from disk. A recovered group's purge point
    /// becomes its floor (its files below it can go), until the cluster layer sets
    /// floors of its own.
    pub fn open(store: &SledStore, flusher: Flusher) -> (Arc<NodeLog>, Vec<GroupId>) {
        let wal = store.raft();
        let recovered = wal.take_recovered();
        for (g, r) in &recovered {
            if let Some((index, _)) = r.purged {
                wal.set_floor(*g, index.saturating_add(1));
            }
        }
        let ids = recovered.keys().copied().collect();
        let log = NodeLog {
            wal,
            flusher,
            recovered: Mutex::new(recovered),
            open: Mutex::new(HashMap::new()),
        };
        (Arc::new(log), ids)
    }

    /// The log storage of group `id` for openraft: what was recovered for it, or an
    /// empty log for a new group. Every call for one group shares its index (one
    /// `RaftCore` per group writes to it).
    pub fn group<C>(self: &Arc<Self>, id: GroupId) -> Result<GroupLog<C>, StorageError<u64>>
    where
        C: group::GroupConfig,
    {
        let mut open = lock(&self.open);
        if let Some(index) = open.get(&id) {
            return Ok(GroupLog::new(id, self.clone(), index.clone()));
        }
        let found = lock(&self.recovered).remove(&id).unwrap_or_default();
        let vote =
            match &found.vote {
                Some(b) => Some(postcard::from_bytes::<Vote<u64>>(b).map_err(|e| {
                    StorageError::from(StorageIOError::read_vote(AnyError::new(&e)))
                })?),
                None => None,
            };
        let purged = match &found.purged {
            Some((_, b)) => Some(postcard::from_bytes::<LogId<u64>>(b).map_err(|e| read_err(&e))?),
            None => None,
        };
        let index = Arc::new(Mutex::new(GroupIndex {
            vote,
            purged,
            entries: found.entries,
        }));
        open.insert(id, index.clone());
        Ok(GroupLog::new(id, self.clone(), index))
    }

    /// Group `id` is gone (its queue was deleted): its records hold no file from now on.
    pub fn drop_group(&self, id: GroupId) -> Result<(), StorageError<u64>> {
        lock(&self.open).remove(&id);
        lock(&self.recovered).remove(&id);
        let mark = self.wal.drop_group(id).map_err(|e| write_err(&e))?;
        // durable with the next round; nobody waits for it
        self.flusher.request(mark - 1, mark, |_| {});
        Ok(())
    }

    /// The store's Raft WAL (its commit counters, its files).
    pub fn wal(&self) -> &Arc<RaftWal> {
        &self.wal
    }
}
