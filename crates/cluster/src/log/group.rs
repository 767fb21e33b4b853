//! One group's log for openraft 0.9 (`RaftLogReader` + `RaftLogStorage`, storage-v2)
//! over the node's Raft WAL.
//!
//! `append` returns once the entries are readable (in the WAL's buffer) and hands
//! openraft's `LogFlushed` callback to the flusher, which calls it after the round's
//! fdatasync (and the check that no failed write lost them): one fsync for every group
//! that appended meanwhile. `save_vote` waits for its round. Truncations and purges are
//! records ordered before every later one of the group, so the next append's round
//! makes them durable; nobody waits for them alone (as in openraft's own examples).

use super::{lock, read_err, write_err, GroupIndex, NodeLog};
use crate::GroupId;
use broker_store::raft::Kind;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, BasicNode, Entry, LogId, OptionalSend, RaftLogReader, RaftTypeConfig, StorageError,
    StorageIOError, Vote,
};
use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

/// The type configurations a [`GroupLog`] serves: node ids are `u64`, nodes are
/// `BasicNode`, entries are openraft's own (serde, so postcard encodes them).
pub trait GroupConfig: RaftTypeConfig<NodeId = u64, Node = BasicNode, Entry = Entry<Self>> {}

impl<C> GroupConfig for C where C: RaftTypeConfig<NodeId = u64, Node = BasicNode, Entry = Entry<C>> {}

/// One group's log. Clones (openraft's log readers) share the group's index.
pub struct GroupLog<C> {
    group: GroupId,
    node: Arc<NodeLog>,
    index: Arc<Mutex<GroupIndex>>,
    _c: PhantomData<fn() -> C>,
}

impl<C> Clone for GroupLog<C> {
    fn clone(&self) -> Self {
        GroupLog {
            group: self.group,
            node: self.node.clone(),
            index: self.index.clone(),
            _c: PhantomData,
        }
    }
}

impl<C: GroupConfig> GroupLog<C> {
    pub(super) fn new(group: GroupId, node: Arc<NodeLog>, index: Arc<Mutex<GroupIndex>>) -> Self {
        GroupLog {
            group,
            node,
            index,
            _c: PhantomData,
        }
    }

    /// The group this log belongs to.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The group's vote as last saved on this node: a quorum queue's state machine
    /// reads it when it applies, to know whether this node leads the term that wrote an
    /// entry (openraft saves a new vote before it appends or commits anything under it).
    pub fn vote(&self) -> Option<openraft::Vote<u64>> {
        self.index().vote
    }

    fn index(&self) -> MutexGuard<'_, GroupIndex> {
        lock(&self.index)
    }

    /// Reads entry `index` back from the WAL and decodes it.
    fn read_entry(
        &self,
        index: u64,
        at: &broker_store::segments::Location,
    ) -> Result<Entry<C>, StorageError<u64>> {
        let r = self.node.wal.read(at).map_err(|e| read_err(&e))?;
        if r.group != self.group || r.kind != Kind::Entry || r.index != index {
            let e = std::io::Error::other(format!(
                "raft log: the record at {}:{} is not entry {index} of group {}",
                at.segment, at.offset, self.group
            ));
            return Err(read_err(&e));
        }
        postcard::from_bytes(&r.payload).map_err(|e| read_err(&e))
    }

    /// Appends entries to the WAL and the index; returns the marks they took.
    fn push<I: IntoIterator<Item = Entry<C>>>(
        &self,
        entries: I,
    ) -> Result<Option<(u64, u64)>, StorageError<u64>> {
        let mut marks: Option<(u64, u64)> = None;
        for e in entries {
            let bytes = postcard::to_allocvec(&e).map_err(|err| write_err(&err))?;
            let i = e.log_id.index;
            let (mark, at) = self
                .node
                .wal
                .append(self.group, Kind::Entry, i, &bytes)
                .map_err(|err| write_err(&err))?;
            marks = Some((marks.map_or(mark - 1, |m| m.0), mark));
            let mut idx = self.index();
            // an entry replaces the one at its index and every later one
            idx.entries.split_off(&i);
            idx.entries.insert(i, at);
        }
        Ok(marks)
    }

    /// Appends entries and returns once a flusher round has made them durable: what
    /// `RaftLogStorage::append` does for callers outside openraft's core (whose
    /// `LogFlushed` callback cannot be built elsewhere), such as tests and tools.
    pub async fn append_durable(&self, entries: Vec<Entry<C>>) -> Result<(), StorageError<u64>> {
        let Some((since, upto)) = self.push(entries)? else {
            return Ok(());
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.node.flusher.request(since, upto, move |r| {
            let _ = tx.send(r);
        });
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(write_err(&e)),
            Err(e) => Err(write_err(&e)),
        }
    }

    /// Appends a record nobody waits for (a truncation or a purge).
    fn note(&self, kind: Kind, index: u64, payload: &[u8]) -> Result<(), StorageError<u64>> {
        self.node
            .wal
            .append(self.group, kind, index, payload)
            .map(|_| ())
            .map_err(|e| write_err(&e))
    }
}

impl<C: GroupConfig> RaftLogReader<C> for GroupLog<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, StorageError<u64>> {
        let places: Vec<_> = self
            .index()
            .entries
            .range(range)
            .map(|(i, at)| (*i, *at))
            .collect();
        places
            .iter()
            .map(|(i, at)| self.read_entry(*i, at))
            .collect()
    }
}

impl<C: GroupConfig> RaftLogStorage<C> for GroupLog<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<u64>> {
        let (purged, last) = {
            let idx = self.index();
            (
                idx.purged,
                idx.entries.last_key_value().map(|(i, at)| (*i, *at)),
            )
        };
        let last_log_id = match last {
            Some((i, at)) => Some(self.read_entry(i, &at)?.log_id),
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let vote_err = |e: &dyn std::error::Error| -> StorageError<u64> {
            StorageIOError::write_vote(AnyError::error(e.to_string())).into()
        };
        let bytes = postcard::to_allocvec(vote).map_err(|e| vote_err(&e))?;
        let (mark, _) = self
            .node
            .wal
            .append(self.group, Kind::Vote, 0, &bytes)
            .map_err(|e| vote_err(&e))?;
        self.index().vote = Some(*vote);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.node.flusher.request(mark - 1, mark, move |r| {
            let _ = tx.send(r);
        });
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(vote_err(&e)),
            Err(e) => Err(vote_err(&e)),
        }
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(self.index().vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        match self.push(entries)? {
            None => callback.log_io_completed(Ok(())),
            Some((since, upto)) => self.node.flusher.request(since, upto, move |r| {
                callback.log_io_completed(r.map_err(|e| std::io::Error::other(e.0)))
            }),
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.index().entries.split_off(&log_id.index);
        self.note(Kind::TruncateFrom, log_id.index, &[])
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        {
            let mut idx = self.index();
            if idx.purged.is_some_and(|p| p.index >= log_id.index) {
                return Ok(());
            }
            idx.entries = idx.entries.split_off(&(log_id.index + 1));
            idx.purged = Some(log_id);
        }
        let bytes = postcard::to_allocvec(&log_id).map_err(|e| write_err(&e))?;
        self.note(Kind::PurgeUpto, log_id.index, &bytes)?;
        // the purge record is appended before the floor moves, so the commit that lets
        // files go has made it durable
        self.node.wal.set_floor(self.group, log_id.index + 1);
        Ok(())
    }
}
