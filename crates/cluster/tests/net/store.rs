//! In-memory Raft storage for the transport's tests (after the spike's pieces): a log
//! whose appends are "durable" at once and a state machine holding the applied numbers.
//! Clones share their state, so a test "restarts" a node by building new `Raft`s over
//! the same stores, as a real node reopens its disk.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, EntryPayload, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// The test groups' type config: commands are numbers appended to a list.
    pub Tc:
        D = u64,
        R = usize,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<Tc>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Entry = openraft::Entry<Tc>;
type LogId = openraft::LogId<u64>;
type Vote = openraft::Vote<u64>;
type SErr = StorageError<u64>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
struct LogInner {
    vote: Option<Vote>,
    purged: Option<LogId>,
    log: BTreeMap<u64, Entry>,
}

/// One group's log on one node.
#[derive(Clone, Default)]
pub struct MemLog(Arc<Mutex<LogInner>>);

impl RaftLogReader<Tc> for MemLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, SErr> {
        Ok(lock(&self.0)
            .log
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<Tc> for MemLog {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<Tc>, SErr> {
        let st = lock(&self.0);
        let last = st.log.last_key_value().map(|(_, e)| e.log_id).or(st.purged);
        Ok(LogState {
            last_purged_log_id: st.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), SErr> {
        lock(&self.0).vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, SErr> {
        Ok(lock(&self.0).vote)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<Tc>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        {
            let mut st = lock(&self.0);
            for e in entries {
                st.log.insert(e.log_id.index, e);
            }
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), SErr> {
        lock(&self.0).log.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), SErr> {
        let mut st = lock(&self.0);
        st.log = st.log.split_off(&(log_id.index + 1));
        st.purged = Some(log_id);
        Ok(())
    }
}

/// The applied state: every number in log order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SmState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership<u64, BasicNode>,
    pub values: Vec<u64>,
}

/// The last snapshot built or installed, with its bytes.
type Stored = Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>;

/// One group's state machine on one node.
#[derive(Clone, Default)]
pub struct MemSm {
    sm: Arc<Mutex<SmState>>,
    snapshot: Arc<Mutex<Stored>>,
}

impl MemSm {
    /// The numbers applied so far.
    pub fn values(&self) -> Vec<u64> {
        lock(&self.sm).values.clone()
    }
}

fn snap_err(e: &serde_json::Error) -> SErr {
    StorageIOError::read_state_machine(AnyError::new(e)).into()
}

impl RaftSnapshotBuilder<Tc> for MemSm {
    async fn build_snapshot(&mut self) -> Result<Snapshot<Tc>, SErr> {
        let st = lock(&self.sm).clone();
        let data = serde_json::to_vec(&st).map_err(|e| snap_err(&e))?;
        let snapshot_id = format!("{:?}", st.last_applied);
        let meta = SnapshotMeta {
            last_log_id: st.last_applied,
            last_membership: st.membership,
            snapshot_id,
        };
        *lock(&self.snapshot) = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<Tc> for MemSm {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<u64, BasicNode>), SErr> {
        let st = lock(&self.sm);
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<usize>, SErr>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut st = lock(&self.sm);
        let mut out = Vec::new();
        for e in entries {
            st.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(v) => st.values.push(v),
                EntryPayload::Membership(m) => {
                    st.membership = StoredMembership::new(Some(e.log_id), m)
                }
            }
            out.push(st.values.len());
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        let data = snapshot.into_inner();
        let mut st: SmState = serde_json::from_slice(&data).map_err(|e| snap_err(&e))?;
        st.last_applied = meta.last_log_id;
        st.membership = meta.last_membership.clone();
        *lock(&self.sm) = st;
        *lock(&self.snapshot) = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<Tc>>, SErr> {
        Ok(lock(&self.snapshot).as_ref().map(|(m, d)| Snapshot {
            meta: m.clone(),
            snapshot: Box::new(Cursor::new(d.clone())),
        }))
    }
}
