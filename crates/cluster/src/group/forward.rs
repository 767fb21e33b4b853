//! Forwarding a command to the group's leader: what the node a command was forwarded to
//! answers ([`ForwardReply`], built from its own `client_write`), how the proposer reads
//! that answer (the next [`Attempt`]), and the postcard codec both sides use. Each group
//! keeps its own service (what it decodes, how it finds its `Raft`); the answers are the
//! same for every group.

use super::propose::Attempt;
use crate::{Node, NodeId};
use bytes::Bytes;
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::RaftTypeConfig;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// What a node answers a forwarded command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ForwardReply<R> {
    /// Committed and applied on the leader as the entry at `index`.
    Done {
        /// The entry's log index.
        index: u64,
        /// The leader's state machine's answer.
        resp: R,
    },
    /// This node does not lead the group (any more): try `leader`, if known.
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// The group does not run on this node (a quorum queue group not started yet, or
    /// stopped; the metadata group runs on every node and never answers this).
    NoGroup,
}

/// What `client_write` answers on a group whose node ids are ours.
pub(crate) type Written<C> =
    Result<ClientWriteResponse<C>, RaftError<NodeId, ClientWriteError<NodeId, Node>>>;

impl<R> ForwardReply<R> {
    /// The reply to a forwarded command from this node's `client_write` of it: its
    /// answer, or who leads when this node does not; any other failure is the call's.
    pub(crate) fn of<C>(written: Written<C>) -> Result<ForwardReply<R>, String>
    where
        C: RaftTypeConfig<NodeId = NodeId, Node = Node, R = R>,
    {
        match written {
            Ok(w) => Ok(ForwardReply::Done {
                index: w.log_id.index,
                resp: w.data,
            }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Ok(ForwardReply::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The proposer's next step after `target` answered this: done with the entry's
    /// index and answer, on to the leader `target` named, or (no other leader named,
    /// the group not there) wait for the leader to change from `target`.
    pub(crate) fn attempt(self, target: NodeId) -> Attempt<(u64, R)> {
        match self {
            ForwardReply::Done { index, resp } => Attempt::Done((index, resp)),
            ForwardReply::NotLeader { leader: Some(l) } if l != target => Attempt::Next(l),
            ForwardReply::NotLeader { .. } | ForwardReply::NoGroup => Attempt::Wait(Some(target)),
        }
    }
}

/// Postcard bytes of a forwarded command or reply; `what` names the group's messages
/// in the error.
pub(crate) fn encode<T: Serialize>(v: &T, what: &str) -> Result<Bytes, String> {
    postcard::to_allocvec(v)
        .map(Bytes::from)
        .map_err(|e| format!("unencodable {what} message: {e}"))
}

/// Decodes a forwarding reply.
pub(crate) fn decode_reply<R: DeserializeOwned>(b: &[u8]) -> Result<ForwardReply<R>, String> {
    postcard::from_bytes(b).map_err(|e| format!("undecodable forwarding reply: {e}"))
}
