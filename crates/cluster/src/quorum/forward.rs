//! Forwarding a quorum queue command from a member that does not lead to the one that
//! does (docs/design/cluster.md §6): the proposer's node calls [`QQ_FORWARD_SERVICE`] on
//! the leader's node with the group id and the command; the handler finds the group in
//! the node's registry, runs `client_write` and answers the entry's log index with the
//! state machine's answer. The effects happen on the leader's node, so the proposer
//! does not wait for its own apply.

use super::member::QuorumGroups;
use crate::net::{BoxFut, Service, ServiceId};
use crate::{GroupId, NodeId};
use broker_core::quorum::{QqCmd, QqResp};
use bytes::Bytes;
use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The transport service a node answers forwarded quorum queue commands on.
pub const QQ_FORWARD_SERVICE: ServiceId = 0x7171_0000_0001;

/// A forwarded command, as received.
#[derive(Deserialize)]
struct ForwardReq {
    group: GroupId,
    cmd: QqCmd,
}

/// A forwarded command, as sent (the same encoding, without copying the command).
#[derive(Serialize)]
pub(crate) struct ForwardOut<'a> {
    pub(crate) group: GroupId,
    pub(crate) cmd: &'a QqCmd,
}

/// What the target answers.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ForwardReply {
    /// Committed and applied on the leader as the entry at `index`.
    Done {
        /// The entry's log index.
        index: u64,
        /// The state machine's answer.
        resp: QqResp,
    },
    /// This node does not lead the group (any more): try `leader`, if known.
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// The group does not run on this node (not started yet, or stopped).
    NoGroup,
}

struct ForwardService {
    groups: QuorumGroups,
}

/// The service to register as [`QQ_FORWARD_SERVICE`] ([`super::QuorumNode::new`] does).
pub(crate) fn forward_service(groups: QuorumGroups) -> Arc<dyn Service> {
    Arc::new(ForwardService { groups })
}

impl Service for ForwardService {
    fn handle(&self, _from: NodeId, payload: Bytes) -> BoxFut<Result<Bytes, String>> {
        let groups = self.groups.clone();
        Box::pin(async move {
            let req: ForwardReq = postcard::from_bytes(&payload)
                .map_err(|e| format!("undecodable quorum queue command: {e}"))?;
            let Some(raft) = groups.get(req.group) else {
                return encode(&ForwardReply::NoGroup);
            };
            let reply = match raft.client_write(req.cmd).await {
                Ok(w) => ForwardReply::Done {
                    index: w.log_id.index,
                    resp: w.data,
                },
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    ForwardReply::NotLeader {
                        leader: f.leader_id,
                    }
                }
                Err(e) => return Err(e.to_string()),
            };
            encode(&reply)
        })
    }
}

/// Postcard bytes of a request or reply.
pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Bytes, String> {
    postcard::to_allocvec(v)
        .map(Bytes::from)
        .map_err(|e| format!("unencodable quorum queue message: {e}"))
}

/// Decodes a target's reply.
pub(crate) fn decode_reply(b: &[u8]) -> Result<ForwardReply, String> {
    postcard::from_bytes(b).map_err(|e| format!("undecodable forwarding reply: {e}"))
}
