//! The metadata group of a node without cluster flags: a group of one, whose network has
//! nobody to send to, started and initialized by [`start_alone`]. Its commits are the
//! local log flush; the transport's router replaces [`Alone`] when peers are configured
//! (docs/design/cluster.md §7).

use super::{MetaHandle, MetaRaft, MetaSm, MetaTc};
use crate::{Node, NodeId};
use openraft::error::{InitializeError, InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::RaftLogStorage;
use openraft::{Config, SnapshotPolicy};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long a start may wait for the group to lead and replay its log.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A network for a group of one: there is nobody to send to.
#[derive(Clone, Default)]
pub struct Alone;

fn nobody() -> Unreachable {
    Unreachable::new(&std::io::Error::other("a group of one has no peers"))
}

impl RaftNetworkFactory<MetaTc> for Alone {
    type Network = Alone;
    async fn new_client(&mut self, _target: NodeId, _node: &Node) -> Alone {
        Alone
    }
}

impl RaftNetwork<MetaTc> for Alone {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<MetaTc>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        Err(RPCError::Unreachable(nobody()))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<MetaTc>,
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

/// The metadata group's Raft settings (docs/design/cluster.md §5: heartbeat 250 ms,
/// elections 1–2 s; a snapshot every 1000 entries).
pub fn meta_config() -> Result<Arc<Config>, String> {
    let c = Config {
        cluster_name: "broker-meta".into(),
        heartbeat_interval: 250,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(1000),
        ..Default::default()
    };
    c.validate()
        .map(Arc::new)
        .map_err(|e| format!("metadata group config: {e}"))
}

/// Starts this node's member of the metadata group as a group of one: initializes it
/// the first time (openraft refuses a second initialize with `NotAllowed`: the log is
/// not empty, the group exists), waits until it leads, and until it has applied every
/// entry of its log (a restart replays the tail the store had not yet flushed). Call on
/// the cluster runtime (openraft spawns its core with `tokio::spawn`).
pub async fn start_alone<LS>(id: NodeId, log: LS, sm: MetaSm) -> Result<MetaHandle, String>
where
    LS: RaftLogStorage<MetaTc>,
{
    let raft = MetaRaft::new(id, meta_config()?, Alone, log, sm)
        .await
        .map_err(|e| format!("cannot start the metadata group: {e}"))?;
    let members: BTreeMap<NodeId, Node> = [(id, Node::default())].into();
    match raft.initialize(members).await {
        Ok(()) => tracing::info!("metadata group initialized (a cluster of one)"),
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
        Err(e) => return Err(format!("cannot initialize the metadata group: {e}")),
    }
    raft.wait(Some(START_TIMEOUT))
        .metrics(|m| m.current_leader == Some(id), "leads its group of one")
        .await
        .map_err(|e| format!("the metadata group has no leader: {e}"))?;
    // the leader's first entry commits the log before it; wait until all of it applied
    raft.ensure_linearizable()
        .await
        .map_err(|e| format!("cannot replay the metadata log: {e}"))?;
    Ok(MetaHandle::new(raft))
}
