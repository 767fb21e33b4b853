//! The snapshot bookkeeping every group's state machine does the same way: the last
//! snapshot it built or installed, kept as bytes to hand to openraft (which sends it to
//! lagging followers), a count of builds for unique snapshot ids, and the lock and
//! storage-error helpers its openraft traits need. What a snapshot holds, and where it
//! is made durable, stays with each state machine.
// openraft's traits fix the error type (`StorageError`, large); the helpers return it too
#![allow(clippy::result_large_err)]

use crate::{Node, NodeId};
use openraft::storage::{Snapshot, SnapshotMeta};
use openraft::{AnyError, LogId, RaftTypeConfig, StorageError, StorageIOError};
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// A snapshot's description (log id, membership, id) as openraft passes it.
pub(crate) type Meta = SnapshotMeta<NodeId, Node>;

/// Locks `m`, poisoned or not: every critical section of a state machine is one apply,
/// one store call or one assignment, and a panic inside apply stops the group anyway
/// (openraft sees no answer), so a half-changed value is never reused.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A state machine's read failure, as openraft takes it.
pub(crate) fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_state_machine(AnyError::new(&e)).into()
}

/// A state machine's write failure, as openraft takes it.
pub(crate) fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

/// The last snapshot a state machine built or installed, and its count of builds.
#[derive(Default)]
pub(crate) struct SnapshotSlot {
    current: Mutex<Option<(Meta, Vec<u8>)>>,
    builds: AtomicU64,
}

impl SnapshotSlot {
    /// A slot holding `current` (a snapshot found when the group opened).
    pub(crate) fn new(current: Option<(Meta, Vec<u8>)>) -> SnapshotSlot {
        SnapshotSlot {
            current: Mutex::new(current),
            builds: AtomicU64::new(0),
        }
    }

    /// The id of a snapshot being built at `applied`: the log id and the build's count
    /// (two builds at one log id differ).
    pub(crate) fn next_id(&self, applied: Option<LogId<NodeId>>) -> String {
        let n = self.builds.fetch_add(1, Ordering::Relaxed) + 1;
        match applied {
            Some(l) => format!("{}-{}-{n}", l.leader_id, l.index),
            None => format!("--{n}"),
        }
    }

    /// Keeps `meta` and `data` (installed from the leader) as the current snapshot.
    pub(crate) fn set(&self, meta: Meta, data: Vec<u8>) {
        *lock(&self.current) = Some((meta, data));
    }

    /// Keeps a snapshot just built as the current one and returns it for openraft.
    pub(crate) fn keep<C>(&self, meta: Meta, data: Vec<u8>) -> Snapshot<C>
    where
        C: RaftTypeConfig<NodeId = NodeId, Node = Node, SnapshotData = Cursor<Vec<u8>>>,
    {
        self.set(meta.clone(), data.clone());
        snapshot(meta, data)
    }

    /// The current snapshot, for openraft to send.
    pub(crate) fn current<C>(&self) -> Option<Snapshot<C>>
    where
        C: RaftTypeConfig<NodeId = NodeId, Node = Node, SnapshotData = Cursor<Vec<u8>>>,
    {
        let current = lock(&self.current).clone();
        current.map(|(meta, data)| snapshot(meta, data))
    }
}

fn snapshot<C>(meta: Meta, data: Vec<u8>) -> Snapshot<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = Node, SnapshotData = Cursor<Vec<u8>>>,
{
    Snapshot {
        meta,
        snapshot: Box::new(Cursor::new(data)),
    }
}
