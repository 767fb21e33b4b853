//! An in-process network for tests: RPCs are calls on the target's `Raft` handle. A node
//! can be removed (killed) or isolated (partitioned) from the others.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;

use super::{Raft, Tc as TypeConfig};

type NodeId = u64;

#[derive(Default)]
struct Inner {
    nodes: BTreeMap<NodeId, Raft>,
    isolated: BTreeSet<NodeId>,
}

/// The network of one group: every member's `Raft` by node id.
#[derive(Clone, Default)]
pub struct Net {
    inner: Arc<Mutex<Inner>>,
}

impl Net {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn add(&self, id: NodeId, raft: Raft) {
        self.lock().nodes.insert(id, raft);
    }
    pub fn remove(&self, id: NodeId) -> Option<Raft> {
        self.lock().nodes.remove(&id)
    }
    pub fn isolate(&self, id: NodeId, on: bool) {
        let mut g = self.lock();
        if on {
            g.isolated.insert(id);
        } else {
            g.isolated.remove(&id);
        }
    }
    /// The factory node `me` gives openraft.
    pub fn factory(&self, me: NodeId) -> Factory {
        Factory {
            net: self.clone(),
            me,
        }
    }
    fn route(&self, from: NodeId, to: NodeId) -> Result<Raft, Unreachable> {
        let g = self.lock();
        if g.isolated.contains(&from) || g.isolated.contains(&to) {
            return Err(Unreachable::new(&std::io::Error::other("partitioned")));
        }
        g.nodes
            .get(&to)
            .cloned()
            .ok_or_else(|| Unreachable::new(&std::io::Error::other("node down")))
    }
}

pub struct Factory {
    net: Net,
    me: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for Factory {
    type Network = Conn;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Conn {
        Conn {
            net: self.net.clone(),
            from: self.me,
            to: target,
        }
    }
}

pub struct Conn {
    net: Net,
    from: NodeId,
    to: NodeId,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

impl RaftNetwork<TypeConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        let raft = self
            .net
            .route(self.from, self.to)
            .map_err(RPCError::Unreachable)?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        let raft = self
            .net
            .route(self.from, self.to)
            .map_err(RPCError::Unreachable)?;
        raft.install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        let raft = self
            .net
            .route(self.from, self.to)
            .map_err(RPCError::Unreachable)?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }
}
