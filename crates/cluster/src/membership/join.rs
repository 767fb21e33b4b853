//! Joining a formed cluster (docs/design/cluster.md §7): a node whose Raft state is
//! fresh and whose peers formed the metadata group without it calls [`JOIN_SERVICE`] on
//! any peer. A follower passes the request to the leader; the leader opens a link to the
//! new node, adds it as a learner (which waits until it caught up), then makes it a
//! voter. A node already a voter is answered `Joined` at once, so a node whose data dir
//! was lost comes back the same way.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};

use crate::meta::MetaRaft;
use crate::net::{BoxFut, PeerAddr, Service, ServiceId, Transport};
use crate::{node_id, NodeId};

/// The transport service that adds a node to the metadata group.
pub const JOIN_SERVICE: ServiceId = 0x6d65_7461_0002;

/// A node asks to be added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JoinRequest {
    /// Its node name.
    pub name: String,
    /// The address other nodes reach it at.
    pub addr: String,
}

/// What the asked node answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum JoinReply {
    /// The node is a voter of the metadata group.
    Joined,
    /// The asked node has no metadata group yet (the cluster is being formed).
    NotFormed,
}

struct JoinService {
    raft: MetaRaft,
    net: Transport,
}

/// The service to register as [`JOIN_SERVICE`] on every node.
pub(crate) fn service(raft: MetaRaft, net: Transport) -> Arc<dyn Service> {
    Arc::new(JoinService { raft, net })
}

impl Service for JoinService {
    fn handle(&self, _from: NodeId, payload: Bytes) -> BoxFut<Result<Bytes, String>> {
        let (raft, net) = (self.raft.clone(), self.net.clone());
        Box::pin(async move {
            let req: JoinRequest = postcard::from_bytes(&payload)
                .map_err(|e| format!("undecodable join request: {e}"))?;
            let reply = answer(&raft, &net, req, payload).await?;
            encode(&reply)
        })
    }
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Bytes, String> {
    postcard::to_allocvec(v)
        .map(Bytes::from)
        .map_err(|e| format!("unencodable join message: {e}"))
}

pub(crate) fn decode_reply(b: &[u8]) -> Result<JoinReply, String> {
    postcard::from_bytes(b).map_err(|e| format!("undecodable join reply: {e}"))
}

/// Adds the node when this node leads, passes the request to the leader otherwise.
async fn answer(
    raft: &MetaRaft,
    net: &Transport,
    req: JoinRequest,
    payload: Bytes,
) -> Result<JoinReply, String> {
    if !raft.is_initialized().await.map_err(|e| e.to_string())? {
        return Ok(JoinReply::NotFormed);
    }
    let leader = raft.metrics().borrow().current_leader;
    match leader {
        Some(l) if l == net.node_id() => add(raft, net, req).await,
        Some(l) => {
            let b = net
                .call(l, JOIN_SERVICE, payload)
                .await
                .map_err(|e| format!("cannot reach the metadata leader: {e}"))?;
            decode_reply(&b)
        }
        None => Err("the metadata group has no leader now".into()),
    }
}

/// The leader's part: link, learner, voter.
async fn add(raft: &MetaRaft, net: &Transport, req: JoinRequest) -> Result<JoinReply, String> {
    let id = node_id(&req.name);
    let voter = {
        let m = raft.metrics();
        let m = m.borrow();
        let mut voters = m.membership_config.membership().voter_ids();
        voters.any(|v| v == id)
    };
    if voter {
        return Ok(JoinReply::Joined);
    }
    tracing::info!(node = %req.name, addr = %req.addr, "adding a node to the metadata group");
    net.add_peer(PeerAddr {
        name: req.name.clone(),
        addr: req.addr.clone(),
    });
    raft.add_learner(id, BasicNode::new(&req.addr), true)
        .await
        .map_err(write_err)?;
    let ids: BTreeSet<NodeId> = [id].into();
    raft.change_membership(ChangeMembers::AddVoterIds(ids), false)
        .await
        .map_err(write_err)?;
    tracing::info!(node = %req.name, "node joined the metadata group");
    Ok(JoinReply::Joined)
}

fn write_err(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> String {
    format!("cannot change the metadata membership: {e}")
}
