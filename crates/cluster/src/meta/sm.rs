//! [`MetaSm`]: the metadata group's state machine over the definitions store. Apply
//! checks a transaction's guards and writes its changes with the applied log id (and
//! membership) in one staged sled batch; snapshots are the whole keyspace. The store is
//! the state: nothing is kept in memory but the last snapshot's bytes.
// openraft's traits fix the error type (`StorageError`, large); the helpers return it too
#![allow(clippy::result_large_err)]

use super::cmd::{Change, MetaResp};
use super::txn::{evaluate, Outcome};
use super::{LogId, MetaEntry, MetaTc, StorageError, StoredMembership};
use crate::group::snapshot::{lock, read_err, write_err, Meta, SnapshotSlot};
use broker_core::replicated::{DefinitionBatch, DefinitionSnapshot, ReplicatedState};
use broker_core::store::DefinitionStore;
use broker_store::Flusher;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::{Arc, Mutex};

/// What the server does with applied changes: update its in-memory registries,
/// topology and actors from the records.
pub trait Materialize: Send + Sync {
    /// Called once per applied log entry, in log order, after its batch is written and
    /// before the proposer gets its answer, with the keys it changed (none for a
    /// conflict, a blank or a membership entry). It runs on the group's apply task:
    /// hand slow work to actors, and never fail (replicas must not diverge).
    fn applied(&self, index: u64, changes: &[Change]);
    /// The keyspace was replaced by a snapshot from the leader: reload everything.
    fn reset(&self);
}

/// A materializer that does nothing (tools and tests that only read the store).
pub struct NoMaterialize;

impl Materialize for NoMaterialize {
    fn applied(&self, _index: u64, _changes: &[Change]) {}
    fn reset(&self) {}
}

/// A snapshot's bytes: every definition record, and the log id and membership they
/// correspond to (the meta says the same; the body stands alone for inspection).
#[derive(Serialize, Deserialize)]
struct Body {
    records: Vec<(Vec<u8>, Vec<u8>)>,
    applied: Option<LogId>,
    membership: StoredMembership,
}

struct Shared {
    store: Arc<dyn DefinitionStore>,
    flusher: Flusher,
    observer: Arc<dyn Materialize>,
    /// Held while apply reads and writes, and while a snapshot reads, so a snapshot is
    /// one applied state (openraft builds snapshots on a task of their own).
    apply: Mutex<()>,
    /// The last snapshot built or installed (openraft sends it to lagging followers).
    snapshots: SnapshotSlot,
}

/// The metadata group's state machine (clones share it; the snapshot builder is one).
#[derive(Clone)]
pub struct MetaSm {
    shared: Arc<Shared>,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    postcard::to_stdvec(value).map_err(write_err)
}

fn decode<T: for<'a> Deserialize<'a> + Default>(
    bytes: &Option<Vec<u8>>,
) -> Result<T, StorageError> {
    match bytes {
        Some(b) => postcard::from_bytes(b).map_err(read_err),
        None => Ok(T::default()),
    }
}

impl MetaSm {
    /// The state machine over `store` (whose definitions tree it owns from now on).
    /// `flusher` makes sled durable before a snapshot lets openraft purge the log;
    /// `observer` hears of every applied change.
    pub fn new(
        store: Arc<dyn DefinitionStore>,
        flusher: Flusher,
        observer: Arc<dyn Materialize>,
    ) -> MetaSm {
        MetaSm {
            shared: Arc::new(Shared {
                store,
                flusher,
                observer,
                apply: Mutex::new(()),
                snapshots: SnapshotSlot::default(),
            }),
        }
    }

    /// The store the state lives in (the server reads its records from it).
    pub fn store(&self) -> &Arc<dyn DefinitionStore> {
        &self.shared.store
    }

    /// Applies one entry: evaluates it and writes its batch, under the apply lock.
    fn apply_one(&self, entry: MetaEntry) -> Result<(MetaResp, Vec<Change>), StorageError> {
        let log_id = entry.log_id;
        let applied = MetaResp::Applied {
            index: log_id.index,
        };
        let _apply = lock(&self.shared.apply);
        let store = &*self.shared.store;
        let mut batch = DefinitionBatch {
            applied: encode(&Some(log_id))?,
            ..Default::default()
        };
        let (resp, changes) = match entry.payload {
            EntryPayload::Blank => (applied, Vec::new()),
            EntryPayload::Membership(m) => {
                batch.membership = Some(encode(&StoredMembership::new(Some(log_id), m))?);
                (applied, Vec::new())
            }
            EntryPayload::Normal(cmd) => match evaluate(store, &cmd).map_err(read_err)? {
                Outcome::Applied { changes, writes } => {
                    batch.writes = writes;
                    (applied, changes)
                }
                Outcome::Conflict(guard) => (MetaResp::Conflict { guard }, Vec::new()),
            },
        };
        store
            .apply_definitions(&batch)
            .map_err(|e| StorageIOError::apply(log_id, AnyError::new(&e)))?;
        Ok((resp, changes))
    }

    /// The applied log id and membership the store recorded.
    fn recorded(
        state: &ReplicatedState,
    ) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied: Option<LogId> = decode(&state.applied)?;
        Ok((applied, decode(&state.membership)?))
    }
}

impl RaftSnapshotBuilder<MetaTc> for MetaSm {
    async fn build_snapshot(&mut self) -> Result<Snapshot<MetaTc>, StorageError> {
        let snap = {
            let _apply = lock(&self.shared.apply);
            self.shared.store.definitions_snapshot().map_err(read_err)?
        };
        // what was read must be on disk before openraft purges the log it came from: the
        // index flush covers every write made before it was asked for
        self.shared.flusher.sync_index().await.map_err(write_err)?;
        let (applied, membership) = Self::recorded(&snap.state)?;
        let body = Body {
            records: snap.records,
            applied,
            membership: membership.clone(),
        };
        let data = encode(&body)?;
        let meta = Meta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id: self.shared.snapshots.next_id(applied),
        };
        Ok(self.shared.snapshots.keep(meta, data))
    }
}

impl RaftStateMachine<MetaTc> for MetaSm {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.shared.store.replicated_state().map_err(read_err)?;
        Self::recorded(&state)
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetaResp>, StorageError>
    where
        I: IntoIterator<Item = MetaEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            let (resp, changes) = self.apply_one(entry)?;
            self.shared.observer.applied(index, &changes);
            out.push(resp);
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
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let body: Body = postcard::from_bytes(&data).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e))
        })?;
        let replacement = DefinitionSnapshot {
            records: body.records,
            state: ReplicatedState {
                applied: Some(encode(&meta.last_log_id)?),
                membership: Some(encode(&meta.last_membership)?),
            },
        };
        {
            let _apply = lock(&self.shared.apply);
            self.shared
                .store
                .replace_definitions(&replacement)
                .map_err(write_err)?;
        }
        // openraft drops the log up to the snapshot next: the keyspace must be on disk
        self.shared.flusher.sync_index().await.map_err(write_err)?;
        self.shared.snapshots.set(meta.clone(), data);
        self.shared.observer.reset();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<MetaTc>>, StorageError> {
        Ok(self.shared.snapshots.current())
    }
}
