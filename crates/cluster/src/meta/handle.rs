//! [`MetaHandle::propose`]: how the server commits a metadata command. The command is
//! written through this node's Raft when it leads the group; the answer comes from this
//! node's own apply, so the caller's next read of the store (and of what the
//! materializer built) sees the entry. With a transport ([`MetaHandle::with_transport`])
//! a follower forwards the command to the leader (`forward.rs`) and waits for its own
//! apply of the entry; without one (a single node) it answers `ForwardToLeader`. The
//! retry loop that follows leader changes is every group's (`crate::group::propose`).

use super::cmd::{MetaCmd, MetaResp};
use super::forward::{META_FORWARD_SERVICE, WHAT};
use super::MetaRaft;
use crate::group::forward::{decode_reply, encode, ForwardReply};
use crate::group::propose::{until_done, Attempt};
use crate::net::{NetError, Transport};
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
    /// The cluster transport: proposals on a follower are forwarded over it.
    net: Option<Transport>,
}

impl MetaHandle {
    /// A handle on `raft` with the standard [`PROPOSE_TIMEOUT`].
    pub fn new(raft: MetaRaft) -> MetaHandle {
        MetaHandle::with_timeout(raft, PROPOSE_TIMEOUT)
    }

    /// A handle with another timeout (tests).
    pub fn with_timeout(raft: MetaRaft, timeout: Duration) -> MetaHandle {
        MetaHandle {
            raft,
            timeout,
            net: None,
        }
    }

    /// The same handle, forwarding proposals to the leader over `net` when this node
    /// does not lead (the leader's node serves [`super::forward_service`]).
    pub fn with_transport(mut self, net: Transport) -> MetaHandle {
        self.net = Some(net);
        self
    }

    /// The group's `Raft` (metrics, membership changes).
    pub fn raft(&self) -> &MetaRaft {
        &self.raft
    }

    /// Commits `cmd` and returns its answer once this node's state machine has applied
    /// it. On [`MetaResp::Conflict`] the caller's view was stale: its store is now at
    /// least as new as the entry, so it decides again from there.
    ///
    /// With a transport, a follower forwards the command to the leader and answers once
    /// it has applied the entry itself; a leader change on the way is followed, all
    /// within the timeout.
    pub async fn propose(&self, cmd: MetaCmd) -> Result<MetaResp, ProposeError> {
        if cmd.reserved_key().is_some() {
            return Err(ProposeError::ReservedKey);
        }
        let Some(net) = &self.net else {
            return self.propose_local(cmd).await;
        };
        let (this, cmd) = (self, &cmd);
        let timed_out = ProposeError::Timeout(self.timeout);
        until_done(
            &self.raft,
            "a metadata leader",
            self.timeout,
            timed_out,
            |next, left| async move {
                match next {
                    Some(target) if target != net.node_id() => {
                        this.forward(net, target, cmd, left).await
                    }
                    _ => this.local_attempt(net, cmd).await,
                }
            },
        )
        .await
    }

    /// An attempt on this node's Raft: done if it leads, else the leader it names (or,
    /// none known or lagging, this node: wait for another).
    async fn local_attempt(
        &self,
        net: &Transport,
        cmd: &MetaCmd,
    ) -> Result<Attempt<MetaResp>, ProposeError> {
        match self.propose_local(cmd.clone()).await {
            Ok(resp) => Ok(Attempt::Done(resp)),
            Err(ProposeError::ForwardToLeader {
                leader: Some(l), ..
            }) if l != net.node_id() => Ok(Attempt::Next(l)),
            Err(ProposeError::ForwardToLeader { leader, .. }) => Ok(Attempt::Wait(leader)),
            Err(e) => Err(e),
        }
    }

    /// One forwarding attempt to `target`: once it committed, this node waits for its
    /// own apply of the entry; a failed call waits for the leader to change.
    async fn forward(
        &self,
        net: &Transport,
        target: NodeId,
        cmd: &MetaCmd,
        left: Duration,
    ) -> Result<Attempt<MetaResp>, ProposeError> {
        let reply = match self.call(net, target, cmd, left).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::debug!(leader = target, "metadata forwarding failed: {e}");
                return Ok(Attempt::Wait(Some(target)));
            }
        };
        match reply.attempt(target) {
            Attempt::Done((index, resp)) => {
                self.wait_applied(index).await?;
                Ok(Attempt::Done(resp))
            }
            other => Ok(other.map(|(_, resp)| resp)),
        }
    }

    /// Calls `target` with `cmd` and decodes its reply.
    async fn call(
        &self,
        net: &Transport,
        target: NodeId,
        cmd: &MetaCmd,
        left: Duration,
    ) -> Result<ForwardReply<MetaResp>, String> {
        let payload = encode(cmd, WHAT)?;
        let call = net.call_timeout(target, META_FORWARD_SERVICE, payload, left);
        let answer = tokio::select! {
            answer = call => answer.map_err(|e: NetError| e.to_string())?,
            // a frozen leader keeps its links up and never answers: once this node
            // follows another leader, go there (a copy the old one commits after all
            // meets the guards as a conflict, §2 "Forwarding as built")
            moved = self.leader_moved_from(target) => {
                return Ok(ForwardReply::NotLeader { leader: moved })
            }
        };
        decode_reply(&answer)
    }

    /// Resolves once this node's metrics name a leader other than `target` and other
    /// than the one they named when the attempt started (so a node that hears of the
    /// new leader from a peer before its own metrics do is not sent back); never if
    /// the group stops (the call's timeout ends the attempt then).
    async fn leader_moved_from(&self, target: NodeId) -> Option<NodeId> {
        let mut metrics = self.raft.metrics();
        let start = metrics.borrow_and_update().current_leader;
        loop {
            let now = metrics.borrow_and_update().current_leader;
            if now.is_some() && now != start && now != Some(target) {
                return now;
            }
            if metrics.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// [`MetaHandle::propose`] on this node's Raft only: `ForwardToLeader` when it does
    /// not lead.
    pub async fn propose_local(&self, cmd: MetaCmd) -> Result<MetaResp, ProposeError> {
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
