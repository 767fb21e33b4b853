//! [`MetaHandle::propose`]: how the server commits a metadata command. The command is
//! written through this node's Raft when it leads the group; the answer comes from this
//! node's own apply, so the caller's next read of the store (and of what the
//! materializer built) sees the entry.

use super::cmd::{MetaCmd, MetaResp};
use super::MetaRaft;
use crate::{Node, NodeId};
use broker_core::AmqpError;
use openraft::error::{ClientWriteError, RaftError};
use std::time::Duration;

/// How long a proposal may take before the server answers 541 (a group without a
/// majority, or a leader that does not answer).
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a proposal has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node does not lead the group: the command must go to `leader` over the
    /// cluster transport (the forwarding path, built with `crate::net`), then this node
    /// waits for its own apply with [`MetaHandle::wait_applied`].
    #[error("not the metadata leader (leader: {leader:?})")]
    ForwardToLeader {
        /// The leader, if this node knows one.
        leader: Option<NodeId>,
        /// Its address.
        node: Option<Node>,
    },
    /// No answer within the timeout.
    #[error("metadata store unavailable: no answer within {0:?}")]
    Timeout(Duration),
    /// The group stopped (shutdown, or a storage failure).
    #[error("metadata store unavailable: {0}")]
    Stopped(String),
    /// The command names a key reserved for the state machine's own records.
    #[error("metadata command names a reserved key")]
    ReservedKey,
}

impl ProposeError {
    /// The AMQP error the server answers with: 541, as RabbitMQ when its metadata
    /// store times out.
    pub fn to_amqp(&self) -> AmqpError {
        AmqpError::internal(self.to_string())
    }
}

/// Proposes commands to the metadata group through this node's `Raft`.
#[derive(Clone)]
pub struct MetaHandle {
    raft: MetaRaft,
    timeout: Duration,
}

impl MetaHandle {
    /// A handle on `raft` with the standard [`PROPOSE_TIMEOUT`].
    pub fn new(raft: MetaRaft) -> MetaHandle {
        MetaHandle::with_timeout(raft, PROPOSE_TIMEOUT)
    }

    /// A handle with another timeout (tests).
    pub fn with_timeout(raft: MetaRaft, timeout: Duration) -> MetaHandle {
        MetaHandle { raft, timeout }
    }

    /// The group's `Raft` (metrics, membership changes).
    pub fn raft(&self) -> &MetaRaft {
        &self.raft
    }

    /// Commits `cmd` and returns its answer once this node's state machine has applied
    /// it. On [`MetaResp::Conflict`] the caller's view was stale: its store is now at
    /// least as new as the entry, so it decides again from there.
    pub async fn propose(&self, cmd: MetaCmd) -> Result<MetaResp, ProposeError> {
        if cmd.reserved_key().is_some() {
            return Err(ProposeError::ReservedKey);
        }
        // openraft answers a leader's client_write from its own apply of the entry
        let written = tokio::time::timeout(self.timeout, self.raft.client_write(cmd))
            .await
            .map_err(|_| ProposeError::Timeout(self.timeout))?;
        match written {
            Ok(w) => Ok(w.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ProposeError::ForwardToLeader {
                    leader: f.leader_id,
                    node: f.leader_node,
                })
            }
            Err(e) => Err(ProposeError::Stopped(e.to_string())),
        }
    }

    /// Waits until this node has applied the entry at `index` (a command the leader
    /// committed for a forwarded proposal), within the timeout.
    pub async fn wait_applied(&self, index: u64) -> Result<(), ProposeError> {
        self.raft
            .wait(Some(self.timeout))
            .applied_index_at_least(Some(index), "metadata entry applied")
            .await
            .map(drop)
            .map_err(|e| match e {
                openraft::metrics::WaitError::Timeout(..) => ProposeError::Timeout(self.timeout),
                other => ProposeError::Stopped(other.to_string()),
            })
    }
}
