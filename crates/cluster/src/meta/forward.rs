//! Forwarding a metadata proposal from a follower to the leader (docs/design/cluster.md
//! §2): the follower calls the [`META_FORWARD_SERVICE`] on the leader's node, which runs
//! `client_write` and answers the entry's log index with its answer; the follower then
//! waits until its own state machine has applied that index, so its caller's next read
//! sees the entry (and, on `Conflict`, the entry that won).
//!
//! A forwarded command whose answer is lost (the leader fails after committing, the
//! connection drops) is sent again to the next leader and may apply twice: the guards
//! make that safe (the second copy answers `Conflict`, and the proposer decides again
//! from a state that holds its own first copy).

use super::cmd::{MetaCmd, MetaResp};
use super::MetaRaft;
use crate::net::{BoxFut, Service, ServiceId};
use crate::NodeId;
use bytes::Bytes;
use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};

/// The transport service a metadata leader answers forwarded proposals on.
pub const META_FORWARD_SERVICE: ServiceId = 0x6d65_7461_0001;

/// What the leader answers a forwarded proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ForwardReply {
    /// Committed and applied on the leader as the entry at `index`.
    Done {
        /// The entry's log index (the follower waits until it has applied it).
        index: u64,
        /// The state machine's answer.
        resp: MetaResp,
    },
    /// This node does not lead (any more): try `leader`, if known.
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
}

/// The leader's side: `client_write` of a forwarded command.
pub(crate) struct ForwardService {
    raft: MetaRaft,
}

/// The service to register as [`META_FORWARD_SERVICE`] on every node of the group (the
/// current leader answers; the others say who leads).
pub fn forward_service(raft: MetaRaft) -> std::sync::Arc<dyn Service> {
    std::sync::Arc::new(ForwardService { raft })
}

impl Service for ForwardService {
    fn handle(&self, _from: NodeId, payload: Bytes) -> BoxFut<Result<Bytes, String>> {
        let raft = self.raft.clone();
        Box::pin(async move {
            let cmd: MetaCmd = postcard::from_bytes(&payload)
                .map_err(|e| format!("undecodable metadata command: {e}"))?;
            if cmd.reserved_key().is_some() {
                return Err("metadata command names a reserved key".into());
            }
            let reply = match raft.client_write(cmd).await {
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

/// Postcard bytes of a command or reply.
pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Bytes, String> {
    postcard::to_allocvec(v)
        .map(Bytes::from)
        .map_err(|e| format!("unencodable metadata message: {e}"))
}

/// Decodes a leader's reply.
pub(crate) fn decode_reply(b: &[u8]) -> Result<ForwardReply, String> {
    postcard::from_bytes(b).map_err(|e| format!("undecodable forwarding reply: {e}"))
}
