//! Multi-raft over the links: every group's RPCs share the node's connections, each frame
//! naming its group. Sending: [`Router`] is one group's `RaftNetworkFactory` (openraft
//! makes one [`GroupConn`] per target), encoding RPCs with postcard. Receiving: the
//! transport's registry maps a group id to a type-erased [`GroupRpc`] ([`RaftGroup`]
//! adapts any `openraft::Raft`), so groups of different type configs sit side by side
//! and come and go at run time.
//!
//! An append above the transport's frame limit is cut into consecutive appends that fit
//! (`GroupConn::append_split`).
//!
//! Failures the receiver reports (unknown group, undecodable request), a link that is
//! down and a closed connection are all `Unreachable` to openraft, which backs off and
//! retries; Raft's own errors travel back as `RemoteError`.

use std::marker::PhantomData;

use bytes::Bytes;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft, RaftLogId, RaftTypeConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::conn::Lane;
use super::frame::Kind;
use super::{BoxFut, NetError, Transport};
use crate::{GroupId, NodeId};

/// Which Raft RPC a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcKind {
    /// `append_entries` (and heartbeats).
    Append,
    /// `vote`.
    Vote,
    /// `install_snapshot`, one chunk.
    Snapshot,
}

/// One group's receiving end, type-erased: takes an RPC's postcard bytes, answers the
/// postcard bytes of `Result<Response, RaftError>`; `Err` is a text for the sender's log
/// (the request could not even be decoded).
pub trait GroupRpc: Send + Sync + 'static {
    /// Handles one RPC for this group.
    fn handle(&self, kind: RpcKind, payload: Bytes) -> BoxFut<Result<Bytes, String>>;
}

/// [`GroupRpc`] for an `openraft::Raft` of any type config with our node ids.
pub struct RaftGroup<C: RaftTypeConfig>(pub Raft<C>);

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    postcard::from_bytes(b).map_err(|e| format!("undecodable Raft RPC: {e}"))
}

fn encode<T: Serialize>(v: &T) -> Result<Bytes, String> {
    postcard::to_allocvec(v)
        .map(Bytes::from)
        .map_err(|e| format!("unencodable Raft RPC: {e}"))
}

impl<C> GroupRpc for RaftGroup<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = BasicNode>,
{
    fn handle(&self, kind: RpcKind, payload: Bytes) -> BoxFut<Result<Bytes, String>> {
        let raft = self.0.clone();
        Box::pin(async move {
            match kind {
                RpcKind::Append => encode(
                    &raft
                        .append_entries(decode::<AppendEntriesRequest<C>>(&payload)?)
                        .await,
                ),
                RpcKind::Vote => encode(&raft.vote(decode::<VoteRequest<NodeId>>(&payload)?).await),
                RpcKind::Snapshot => encode(
                    &raft
                        .install_snapshot(decode::<InstallSnapshotRequest<C>>(&payload)?)
                        .await,
                ),
            }
        })
    }
}

/// One group's `RaftNetworkFactory` over the node's transport.
pub struct Router<C> {
    net: Transport,
    group: GroupId,
    _c: PhantomData<fn() -> C>,
}

impl<C> Router<C> {
    /// The factory for `group` over `net`.
    pub fn new(net: Transport, group: GroupId) -> Self {
        Router {
            net,
            group,
            _c: PhantomData,
        }
    }
}

impl<C> RaftNetworkFactory<C> for Router<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = BasicNode>,
{
    type Network = GroupConn<C>;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> GroupConn<C> {
        // The address comes from the transport's peer list, not from the membership: the
        // link to each peer is shared by every group.
        GroupConn {
            net: self.net.clone(),
            group: self.group,
            target,
            _c: PhantomData,
        }
    }
}

/// One group's connection to one target: frames on the shared link to that peer.
pub struct GroupConn<C> {
    net: Transport,
    group: GroupId,
    target: NodeId,
    _c: PhantomData<fn() -> C>,
}

type RpcErr<E> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

impl<C> GroupConn<C> {
    async fn rpc<Req, Resp, E>(
        &self,
        kind: Kind,
        lane: Lane,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload =
            postcard::to_allocvec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let ttl = option.hard_ttl();
        let res = self
            .net
            .request(
                self.target,
                kind,
                self.group,
                Bytes::from(payload),
                lane,
                ttl,
            )
            .await;
        let bytes = res.map_err(|e| match e {
            NetError::Timeout { .. } => RPCError::Timeout(Timeout {
                action: match kind {
                    Kind::Vote => RPCTypes::Vote,
                    Kind::Snapshot => RPCTypes::InstallSnapshot,
                    _ => RPCTypes::AppendEntries,
                },
                id: self.net.node_id(),
                target: self.target,
                timeout: ttl,
            }),
            other => RPCError::Unreachable(Unreachable::new(&other)),
        })?;
        let answer: Result<Resp, RaftError<NodeId, E>> =
            postcard::from_bytes(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl<C> GroupConn<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = BasicNode>,
{
    /// An append above the frame limit (openraft bounds appends by entry count only) is
    /// sent as consecutive appends of whole entries that each fit, every one after the
    /// last entry of the one before; what the follower accepted is the answer: all
    /// (`Success`), or up to the end of the last part it took (`PartialSuccess`). An
    /// entry above the limit on its own still fails (`Unreachable`).
    async fn append_split(
        &self,
        rpc: AppendEntriesRequest<C>,
        option: &RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        // the request's own fields (vote, log ids, lengths) take far less than this
        let budget = self.net.max_frame().saturating_sub(4096);
        let AppendEntriesRequest {
            vote,
            mut prev_log_id,
            entries,
            leader_commit,
        } = rpc;
        let mut parts: Vec<Vec<C::Entry>> = vec![Vec::new()];
        let mut size = 0;
        for e in entries {
            let n = postcard::experimental::serialized_size(&e).unwrap_or(0);
            if size + n > budget && parts.last().is_some_and(|p| !p.is_empty()) {
                parts.push(Vec::new());
                size = 0;
            }
            size += n;
            if let Some(p) = parts.last_mut() {
                p.push(e);
            }
        }
        for (i, part) in parts.into_iter().enumerate() {
            let last = part.last().map(|e| *e.get_log_id());
            let req = AppendEntriesRequest::<C> {
                vote,
                prev_log_id,
                entries: part,
                leader_commit: leader_commit.min(last),
            };
            match self.rpc(Kind::Append, Lane::Bulk, &req, option).await? {
                AppendEntriesResponse::Success => prev_log_id = last,
                AppendEntriesResponse::Conflict if i > 0 => {
                    return Ok(AppendEntriesResponse::PartialSuccess(prev_log_id))
                }
                other => return Ok(other),
            }
        }
        Ok(AppendEntriesResponse::Success)
    }
}

impl<C> RaftNetwork<C> for GroupConn<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = BasicNode>,
{
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        // Heartbeats carry no entries: they go with votes, ahead of bulk appends.
        let lane = if rpc.entries.is_empty() {
            Lane::Control
        } else {
            Lane::Bulk
        };
        let size = postcard::experimental::serialized_size(&rpc).unwrap_or(0);
        if size > self.net.max_frame() && rpc.entries.len() > 1 {
            return self.append_split(rpc, &option).await;
        }
        self.rpc(Kind::Append, lane, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.rpc(Kind::Snapshot, Lane::Bulk, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        self.rpc(Kind::Vote, Lane::Control, &rpc, &option).await
    }
}
