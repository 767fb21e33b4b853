//! A toy queue state machine in memory (the spike's): enqueue (the leader stamps the
//! time) and settle, JSON snapshots.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::{Cmd, Resp, Tc as TypeConfig};

type NodeId = u64;
type LogId = openraft::LogId<NodeId>;
type Entry = openraft::Entry<TypeConfig>;
type StorageError = openraft::StorageError<NodeId>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QueueSm {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership<NodeId, BasicNode>,
    pub next_id: u64,
    /// id → (body, enqueue time chosen by the leader)
    pub messages: BTreeMap<u64, (Vec<u8>, u64)>,
}

impl QueueSm {
    fn apply_cmd(&mut self, cmd: &Cmd) -> Resp {
        match cmd {
            Cmd::Enqueue { body, ts_ms } => {
                let id = self.next_id;
                self.next_id += 1;
                self.messages.insert(id, (body.clone(), *ts_ms));
                Resp::Enqueued { id }
            }
            Cmd::Settle { id } => Resp::Settled {
                found: self.messages.remove(id).is_some(),
            },
        }
    }
}

#[derive(Debug, Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

#[derive(Clone, Default)]
pub struct QueueStateMachine {
    sm: Arc<Mutex<QueueSm>>,
    snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
    builds: Arc<Mutex<u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl QueueStateMachine {
    /// A copy of the current state (tests read it).
    pub fn state(&self) -> QueueSm {
        lock(&self.sm).clone()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for QueueStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let sm = self.state();
        let data = serde_json::to_vec(&sm)
            .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))?;
        let n = {
            let mut b = lock(&self.builds);
            *b += 1;
            *b
        };
        let snapshot_id = match sm.last_applied {
            Some(l) => format!("{}-{}-{n}", l.leader_id, l.index),
            None => format!("--{n}"),
        };
        let meta = SnapshotMeta {
            last_log_id: sm.last_applied,
            last_membership: sm.last_membership,
            snapshot_id,
        };
        *lock(&self.snapshot) = Some(StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        });
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for QueueStateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, BasicNode>), StorageError> {
        let sm = lock(&self.sm);
        Ok((sm.last_applied, sm.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Resp>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut sm = lock(&self.sm);
        let mut out = Vec::new();
        for entry in entries {
            sm.last_applied = Some(entry.log_id);
            out.push(match entry.payload {
                EntryPayload::Blank => Resp::None,
                EntryPayload::Normal(cmd) => sm.apply_cmd(&cmd),
                EntryPayload::Membership(m) => {
                    sm.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    Resp::None
                }
            });
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let mut new: QueueSm = serde_json::from_slice(&data).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e))
        })?;
        new.last_applied = meta.last_log_id;
        new.last_membership = meta.last_membership.clone();
        *lock(&self.sm) = new;
        *lock(&self.snapshot) = Some(StoredSnapshot {
            meta: meta.clone(),
            data,
        });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(lock(&self.snapshot).as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}
