//! [`QqSm`]: a quorum queue group's state machine, the deterministic
//! [`QqState`] in memory behind a mutex. Apply feeds it each command and hands the
//! effects to the [`EffectSink`]; snapshots are the state's export with the applied log
//! id and membership, saved to the group's snapshot file (durably, before openraft may
//! purge the log behind it) and read back when the group opens.
// openraft's traits fix the error type (`StorageError`, large); the helpers return it too
#![allow(clippy::result_large_err)]

use super::QqTc;
use crate::group::snapshot::{lock, read_err, write_err, Meta, SnapshotSlot};
use crate::log::GroupLog;
use crate::meta::{LogId, StorageError, StoredMembership};
use crate::{GroupId, NodeId};
use broker_core::quorum::{Effect, QqConfig, QqResp, QqState};
use broker_store::raft::snapshots::SnapshotFiles;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Where a group's effects go. The server's queue shell implements it. A replicated
/// member's state machine ([`QqSm::open_member`]) hands it only the effects of entries
/// this node wrote in the term it still leads, so followers and deposed leaders get
/// none; a group of one gets every effect.
pub trait EffectSink: Send + Sync {
    /// The effects of the entry at `index`, in apply order. Runs on the group's apply
    /// task before the proposer gets its answer: hand them to an actor, never block.
    fn effects(&self, index: u64, effects: Vec<Effect>);

    /// The group is opening with entries up to `last` in its log (`None`: a new group).
    /// Called before anything is applied: those entries are applied again from the
    /// last snapshot, and their effects were carried out by the process that first
    /// applied them (or lost with it: dead letters are at most once), so a sink drops
    /// them.
    fn opened(&self, last: Option<u64>) {
        let _ = last;
    }
}

/// The queue's counts after the last applied entry (for the management API, without
/// a round trip to the group).
#[derive(Debug, Default)]
pub struct Counts {
    /// Messages ready.
    pub ready: AtomicU64,
    /// Messages delivered and not settled.
    pub unacked: AtomicU64,
    /// Consumers.
    pub consumers: AtomicU64,
    /// Returned messages waiting out their retry back-off.
    pub delayed: AtomicU64,
}

/// What a snapshot file and a snapshot sent to a follower hold.
#[derive(Serialize, Deserialize)]
struct Body {
    applied: Option<LogId>,
    membership: StoredMembership,
    snapshot_id: String,
    /// [`QqState::export`].
    #[serde(with = "serde_bytes")]
    state: Vec<u8>,
}

struct Inner {
    state: QqState,
    applied: Option<LogId>,
    membership: StoredMembership,
}

/// How a replicated group's state machine knows, entry by entry, whether this node
/// carries the effects out: it does when the entry was written by this node in the term
/// it still leads by its saved vote. openraft saves a new vote (a higher term, or the
/// leader's committed vote) before it appends or applies anything under it, so the
/// answer at apply time is this node's own, and a node that lost the term drops the
/// effects of the rest: the new leader's `LeaderChanged` gives their messages back.
struct Gate {
    me: NodeId,
    log: GroupLog<QqTc>,
}

impl Gate {
    fn leads(&self, entry: &LogId) -> bool {
        entry.leader_id.node_id == self.me
            && self
                .log
                .vote()
                .is_some_and(|v| v.committed && v.leader_id == entry.leader_id)
    }
}

struct Shared {
    group: GroupId,
    /// `None`: a group of one, which leads whatever it applies.
    gate: Option<Gate>,
    inner: Mutex<Inner>,
    sink: Arc<dyn EffectSink>,
    files: SnapshotFiles,
    /// The last snapshot built, saved or installed (its meta and [`Body`] bytes).
    snapshots: SnapshotSlot,
    counts: Counts,
}

/// A quorum queue's state machine (clones share it; the snapshot builder is one).
#[derive(Clone)]
pub struct QqSm {
    shared: Arc<Shared>,
}

impl QqSm {
    /// The state machine of group `group`: from its snapshot file when it has one, else
    /// empty (the configuration comes with the queue's first `UpdateConfig`).
    pub fn open(
        group: GroupId,
        files: SnapshotFiles,
        sink: Arc<dyn EffectSink>,
    ) -> Result<QqSm, String> {
        Self::open_with(group, files, sink, None)
    }

    /// The state machine of a member of a replicated group: as [`QqSm::open`], but the
    /// sink only gets the effects of entries this node (`me`) wrote in the term it still
    /// leads, by the vote saved in `log` (the group's log on this node).
    pub fn open_member(
        group: GroupId,
        files: SnapshotFiles,
        sink: Arc<dyn EffectSink>,
        me: NodeId,
        log: GroupLog<QqTc>,
    ) -> Result<QqSm, String> {
        Self::open_with(group, files, sink, Some(Gate { me, log }))
    }

    fn open_with(
        group: GroupId,
        files: SnapshotFiles,
        sink: Arc<dyn EffectSink>,
        gate: Option<Gate>,
    ) -> Result<QqSm, String> {
        let found = files
            .load(group)
            .map_err(|e| format!("group {group}: cannot read its snapshot: {e}"))?;
        let mut current = None;
        let inner = match found {
            None => Inner {
                state: QqState::new(QqConfig::default()),
                applied: None,
                membership: StoredMembership::default(),
            },
            Some(bytes) => {
                let body: Body = postcard::from_bytes(&bytes)
                    .map_err(|e| format!("group {group}: its snapshot is damaged: {e}"))?;
                let state = QqState::import(&body.state)
                    .map_err(|e| format!("group {group}: its snapshot is damaged: {e}"))?;
                current = Some((
                    Meta {
                        last_log_id: body.applied,
                        last_membership: body.membership.clone(),
                        snapshot_id: body.snapshot_id.clone(),
                    },
                    bytes,
                ));
                Inner {
                    state,
                    applied: body.applied,
                    membership: body.membership,
                }
            }
        };
        let sm = QqSm {
            shared: Arc::new(Shared {
                group,
                gate,
                inner: Mutex::new(inner),
                sink,
                files,
                snapshots: SnapshotSlot::new(current),
                counts: Counts::default(),
            }),
        };
        sm.count(&lock(&sm.shared.inner).state);
        Ok(sm)
    }

    /// The queue's counts after the last applied entry.
    pub fn counts(&self) -> &Counts {
        &self.shared.counts
    }

    /// The state's export (`QqState::export`, bodies included): equal on members that
    /// applied the same entries, however they got them (log or snapshot).
    pub fn export(&self) -> Vec<u8> {
        lock(&self.shared.inner).state.export()
    }

    /// The ready count and copies of up to `count` ready messages from position
    /// `offset` of the state as this member applied it (the management API's browse;
    /// a follower may be an entry or two behind its leader).
    pub fn peek(
        &self,
        offset: usize,
        count: usize,
    ) -> Result<(u64, Vec<broker_core::queue::Entry>), String> {
        let inner = lock(&self.shared.inner);
        Ok((
            inner.state.ready_count() as u64,
            inner.state.peek(offset, count)?,
        ))
    }

    /// The state's next message expiry (ms since the epoch), for the leader's timer.
    pub fn next_expiry(&self) -> Option<u64> {
        lock(&self.shared.inner).state.next_expiry()
    }

    /// The replicated settings the state runs with.
    pub fn config(&self) -> QqConfig {
        lock(&self.shared.inner).state.config().clone()
    }

    fn count(&self, s: &QqState) {
        let c = &self.shared.counts;
        c.ready.store(s.ready_count() as u64, Ordering::Relaxed);
        c.unacked.store(s.unacked_count() as u64, Ordering::Relaxed);
        c.consumers
            .store(s.consumer_count() as u64, Ordering::Relaxed);
        c.delayed.store(s.delayed_count() as u64, Ordering::Relaxed);
    }
}

impl RaftSnapshotBuilder<QqTc> for QqSm {
    async fn build_snapshot(&mut self) -> Result<Snapshot<QqTc>, StorageError> {
        let body = {
            let inner = lock(&self.shared.inner);
            Body {
                applied: inner.applied,
                membership: inner.membership.clone(),
                snapshot_id: self.shared.snapshots.next_id(inner.applied),
                state: inner.state.export(),
            }
        };
        let data = postcard::to_stdvec(&body).map_err(write_err)?;
        // durable before openraft may purge the log it replaces
        let (files, group, bytes) = (self.shared.files.clone(), self.shared.group, data.clone());
        tokio::task::spawn_blocking(move || files.save(group, &bytes))
            .await
            .map_err(|e| write_err(std::io::Error::other(e.to_string())))?
            .map_err(write_err)?;
        let meta = Meta {
            last_log_id: body.applied,
            last_membership: body.membership,
            snapshot_id: body.snapshot_id,
        };
        Ok(self.shared.snapshots.keep(meta, data))
    }
}

impl RaftStateMachine<QqTc> for QqSm {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let inner = lock(&self.shared.inner);
        Ok((inner.applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<QqResp>, StorageError>
    where
        I: IntoIterator<Item = openraft::Entry<QqTc>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        let mut inner = lock(&self.shared.inner);
        for entry in entries {
            let index = entry.log_id.index;
            inner.applied = Some(entry.log_id);
            let resp = match entry.payload {
                EntryPayload::Blank => QqResp::Ok,
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m);
                    QqResp::Ok
                }
                EntryPayload::Normal(cmd) => {
                    let (resp, effects) = inner.state.apply(index, &cmd);
                    let leads = self
                        .shared
                        .gate
                        .as_ref()
                        .is_none_or(|g| g.leads(&entry.log_id));
                    if leads && !effects.is_empty() {
                        self.shared.sink.effects(index, effects);
                    }
                    resp
                }
            };
            out.push(resp);
        }
        self.count(&inner.state);
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
        let body: Body = postcard::from_bytes(&data).map_err(read_err)?;
        let state = QqState::import(&body.state).map_err(read_err)?;
        let (files, group, bytes) = (self.shared.files.clone(), self.shared.group, data.clone());
        tokio::task::spawn_blocking(move || files.save(group, &bytes))
            .await
            .map_err(|e| write_err(std::io::Error::other(e.to_string())))?
            .map_err(write_err)?;
        {
            let mut inner = lock(&self.shared.inner);
            inner.state = state;
            inner.applied = meta.last_log_id;
            inner.membership = meta.last_membership.clone();
            self.count(&inner.state);
        }
        self.shared.snapshots.set(meta.clone(), data);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<QqTc>>, StorageError> {
        Ok(self.shared.snapshots.current())
    }
}
