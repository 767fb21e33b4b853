//! Shared pieces of the metadata group's tests: a store in a temporary data dir with its
//! flusher, an observer that records what it is told, entries, and a network for a
//! group of one (which never sends anything).
#![allow(dead_code)] // each test file uses part of it

pub mod mem_log;

use broker_cluster::meta::{Change, Materialize, MetaCmd, MetaEntry, MetaSm};
use broker_cluster::{Node, NodeId};
use broker_core::store::{DefinitionStore, MessageStore};
use broker_store::{Flusher, SledStore};
use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{CommittedLeaderId, EntryPayload, LogId};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// What the observer was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Applied(u64, Vec<Change>),
    Reset,
}

/// Records every call of the materializer.
#[derive(Default)]
pub struct Recorder {
    pub seen: Mutex<Vec<Seen>>,
}

impl Recorder {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Materialize for Recorder {
    fn applied(&self, index: u64, changes: &[Change]) {
        let mut s = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        s.push(Seen::Applied(index, changes.to_vec()));
    }
    fn reset(&self) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Seen::Reset);
    }
}

/// A state machine on a store in `dir`, with its flusher and observer.
pub struct Node1 {
    pub store: Arc<SledStore>,
    pub sm: MetaSm,
    pub seen: Arc<Recorder>,
}

impl Node1 {
    pub fn open(dir: &Path) -> Result<Node1, String> {
        let store = Arc::new(open_store(dir)?);
        let flusher = Flusher::start(store.clone() as Arc<dyn MessageStore>);
        let seen = Arc::new(Recorder::default());
        let sm = MetaSm::new(
            store.clone() as Arc<dyn DefinitionStore>,
            flusher,
            seen.clone(),
        );
        Ok(Node1 { store, sm, seen })
    }
}

/// Opens the store in `dir`, waiting while a store just dropped there still holds its
/// lock (sled's threads let go of it a moment after the last handle goes, and nothing
/// announces it).
pub fn open_store(dir: &Path) -> Result<SledStore, String> {
    SledStore::open_waiting(dir, Duration::from_secs(10))
}

pub fn log_id(index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

pub fn entry(index: u64, cmd: MetaCmd) -> MetaEntry {
    MetaEntry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(cmd),
    }
}

/// A network for a group of one: there is nobody to send to.
#[derive(Clone, Default)]
pub struct Alone;

fn nobody() -> Unreachable {
    Unreachable::new(&std::io::Error::other("a group of one has no peers"))
}

impl RaftNetworkFactory<broker_cluster::meta::MetaTc> for Alone {
    type Network = Alone;
    async fn new_client(&mut self, _target: NodeId, _node: &Node) -> Alone {
        Alone
    }
}

impl RaftNetwork<broker_cluster::meta::MetaTc> for Alone {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<broker_cluster::meta::MetaTc>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        Err(RPCError::Unreachable(nobody()))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<broker_cluster::meta::MetaTc>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(RPCError::Unreachable(nobody()))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        Err(RPCError::Unreachable(nobody()))
    }
}
