//! An in-memory `RaftLogStorage` for the metadata group's tests (the real log on the
//! store's segments is `broker_cluster::log`, built separately): entries, vote and purge
//! point in a map shared by clones, every append "flushed" at once. Keeping the same
//! `MemLog` across a `Raft` restart stands for a log that survived the restart.

use broker_cluster::meta::{LogId, MetaEntry, MetaTc, StorageError};
use broker_cluster::NodeId;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, Vote};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct State {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    log: BTreeMap<u64, MetaEntry>,
}

/// One group's log in memory; clones share it.
#[derive(Clone, Default)]
pub struct MemLog {
    state: Arc<Mutex<State>>,
}

impl MemLog {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The index of the last entry written (held, or purged behind a snapshot).
    pub fn last_index(&self) -> Option<u64> {
        let st = self.state();
        let purged = st.purged.map(|p| p.index);
        st.log.keys().next_back().copied().or(purged)
    }

    /// Whether nothing was ever written (the group is not initialized yet).
    pub fn is_fresh(&self) -> bool {
        let st = self.state();
        st.log.is_empty() && st.purged.is_none() && st.vote.is_none()
    }
}

impl RaftLogReader<MetaTc> for MemLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<MetaEntry>, StorageError> {
        Ok(self
            .state()
            .log
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<MetaTc> for MemLog {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<MetaTc>, StorageError> {
        let st = self.state();
        let last = st.log.values().next_back().map(|e| e.log_id).or(st.purged);
        Ok(LogState {
            last_purged_log_id: st.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.state().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.state().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.state().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.state().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<MetaTc>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = MetaEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        {
            let mut st = self.state();
            for e in entries {
                st.log.insert(e.log_id.index, e);
            }
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.state().log.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut st = self.state();
        st.log = st.log.split_off(&(log_id.index + 1));
        st.purged = Some(log_id);
        Ok(())
    }
}
