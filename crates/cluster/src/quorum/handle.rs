//! [`QuorumHandle::propose`]: how the server commits a quorum queue command wherever the
//! group's leader is. On the leader it is this node's `client_write`; elsewhere the
//! command goes to the leader's node over [`QQ_FORWARD_SERVICE`] (`forward.rs`), and a
//! leader change on the way (the target no longer leads, no leader known yet, the
//! leader's node unreachable) is waited out and followed, within [`PROPOSE_TIMEOUT`].
//! A batch stays one command, so one `Enqueue` entry per batch wherever it is proposed.
//! The retry loop is every group's (`crate::group::propose`).
//!
//! A leader that stops answering without dropping its links (a frozen process, a
//! partition before TCP gives up) would hold a forwarded command until the timeout, and
//! the shell's proposals of that queue behind it: a forwarding attempt is abandoned as
//! soon as this node's member sees a newer term with another leader, and the command
//! goes to that one (the same dedup makes the retry safe).
//!
//! A command whose answer is lost may have been committed: proposing it again may apply
//! it twice. `Enqueue` deduplicates by (publisher, seq), settles of messages no longer
//! checked out are ignored; other commands are idempotent or (a second consume with the
//! same tag) refused by the state machine.

use super::forward::{ForwardOut, QQ_FORWARD_SERVICE, WHAT};
use super::QqRaft;
use crate::group::forward::{decode_reply, encode, ForwardReply};
use crate::group::propose::{until_done, Attempt};
use crate::net::{NetError, Transport};
use crate::{GroupId, NodeId};
use broker_core::quorum::{QqCmd, QqResp};
use broker_core::AmqpError;
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::ClientWriteResult;
use openraft::ServerState;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a proposal may take (a group without a majority, or a leader that does not
/// answer), as the metadata group's.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// A committed command: the entry's log index and the state machine's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposed {
    /// The entry's log index.
    pub index: u64,
    /// The leader's state machine's answer.
    pub resp: QqResp,
}

/// Why a proposal has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// No answer within the timeout (the outcome is unknown: it may still commit).
    #[error("quorum queue unavailable: no answer within {0:?}")]
    Timeout(Duration),
    /// The group stopped on this node (shutdown, or a storage failure).
    #[error("quorum queue unavailable: {0}")]
    Stopped(String),
    /// The command does not fit in one cluster frame (the shell bounds its batches).
    #[error("quorum queue command too large to forward: {0}")]
    TooLarge(String),
    /// The command could not be encoded or the answer decoded.
    #[error("quorum queue forwarding failed: {0}")]
    Codec(String),
}

impl ProposeError {
    /// The AMQP error the server answers with: 541, as for the metadata store.
    pub fn to_amqp(&self) -> AmqpError {
        AmqpError::internal(self.to_string())
    }
}

/// Proposes commands to one quorum queue group through this node's member.
#[derive(Clone)]
pub struct QuorumHandle {
    raft: QqRaft,
    group: GroupId,
    timeout: Duration,
    net: Option<Transport>,
}

impl QuorumHandle {
    /// A handle on this node's member `raft` of `group`, local only (a group of one):
    /// on a follower it waits for this node to lead until the timeout.
    pub fn new(raft: QqRaft, group: GroupId) -> QuorumHandle {
        QuorumHandle {
            raft,
            group,
            timeout: PROPOSE_TIMEOUT,
            net: None,
        }
    }

    /// The same handle with another timeout (tests).
    pub fn with_timeout(mut self, timeout: Duration) -> QuorumHandle {
        self.timeout = timeout;
        self
    }

    /// The same handle, forwarding to the leader's node over `net`.
    pub fn with_transport(mut self, net: Transport) -> QuorumHandle {
        self.net = Some(net);
        self
    }

    /// How long a proposal may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Hands `cmd` to this node's member without waiting for its commit, when that member
    /// leads; `None` when it does not (or stopped): [`QuorumHandle::propose`] then. Commands
    /// submitted one after the other are entries in that order, so a proposer may keep
    /// several in flight and still see them commit in order (the log of one leader).
    pub async fn submit(&self, cmd: QqCmd) -> Option<Pending> {
        {
            let m = self.raft.metrics();
            let m = m.borrow();
            if m.state != ServerState::Leader || m.current_leader != Some(m.id) {
                return None;
            }
        }
        self.raft.client_write_ff(cmd).await.ok().map(Pending)
    }

    /// The group's member on this node.
    pub fn raft(&self) -> &QqRaft {
        &self.raft
    }

    /// Commits `cmd` on the group's leader and returns its answer (from the leader's
    /// apply) with the entry's index.
    pub async fn propose(&self, cmd: QqCmd) -> Result<Proposed, ProposeError> {
        let (this, cmd) = (self, &cmd);
        let timed_out = ProposeError::Timeout(self.timeout);
        until_done(
            &self.raft,
            "a quorum queue leader",
            self.timeout,
            timed_out,
            |next, left| async move {
                match (next, &this.net) {
                    (Some(target), Some(net)) if target != net.node_id() => {
                        this.forward(net, target, cmd, left).await
                    }
                    _ => this.local(cmd, left).await,
                }
            },
        )
        .await
    }

    /// `client_write` on this node's member.
    async fn local(&self, cmd: &QqCmd, left: Duration) -> Result<Attempt<Proposed>, ProposeError> {
        let written = tokio::time::timeout(left, self.raft.client_write(cmd.clone()))
            .await
            .map_err(|_| ProposeError::Timeout(self.timeout))?;
        let me = self.raft.metrics().borrow().id;
        match written {
            Ok(w) => Ok(Attempt::Done(Proposed {
                index: w.log_id.index,
                resp: w.data,
            })),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Ok(match f.leader_id {
                    Some(l) if l != me && self.net.is_some() => Attempt::Next(l),
                    other => Attempt::Wait(other),
                })
            }
            Err(e) => Err(ProposeError::Stopped(e.to_string())),
        }
    }

    /// One forwarding attempt to `target`.
    async fn forward(
        &self,
        net: &Transport,
        target: NodeId,
        cmd: &QqCmd,
        left: Duration,
    ) -> Result<Attempt<Proposed>, ProposeError> {
        let out = ForwardOut {
            group: self.group,
            cmd,
        };
        let payload = encode(&out, WHAT).map_err(ProposeError::Codec)?;
        let call = net.call_timeout(target, QQ_FORWARD_SERVICE, payload, left);
        let answer = tokio::select! {
            a = call => a,
            l = self.deposed(target, left) => {
                tracing::debug!(group = self.group, old = target, leader = l,
                    "leader changed while forwarding: trying the new one");
                return Ok(Attempt::Next(l));
            }
        };
        let answer = match answer {
            Ok(a) => a,
            Err(e @ NetError::TooLarge { .. }) => {
                return Err(ProposeError::TooLarge(e.to_string()))
            }
            Err(e) => {
                tracing::debug!(
                    group = self.group,
                    leader = target,
                    "forwarding failed: {e}"
                );
                return Ok(Attempt::Wait(Some(target)));
            }
        };
        let reply: ForwardReply<QqResp> = decode_reply(&answer).map_err(ProposeError::Codec)?;
        Ok(reply
            .attempt(target)
            .map(|(index, resp)| Proposed { index, resp }))
    }

    /// Resolves with the new leader once this node's member sees a term newer than now
    /// led by a node other than `target` (so `target`'s answer may never come: frozen
    /// or cut off); never resolves otherwise (the call's own timeout answers then).
    async fn deposed(&self, target: NodeId, left: Duration) -> NodeId {
        let term = self.raft.metrics().borrow().current_term;
        let moved = self
            .raft
            .wait(Some(left))
            .metrics(
                |m| m.current_term > term && m.current_leader.is_some_and(|l| l != target),
                "a newer quorum queue leader",
            )
            .await;
        match moved.ok().and_then(|m| m.current_leader) {
            Some(l) => l,
            None => std::future::pending().await,
        }
    }
}

/// A command submitted to this node's leading member ([`QuorumHandle::submit`]).
pub struct Pending(oneshot::Receiver<ClientWriteResult<super::QqTc>>);

impl Pending {
    /// The command's answer once applied; `None` when it was not committed by this
    /// member (it lost the lead, or stopped): its outcome is unknown, as for any lost
    /// answer, and the caller proposes it again or gives up. Cancelling the wait loses
    /// nothing: wait again.
    pub async fn outcome(&mut self) -> Option<Proposed> {
        match (&mut self.0).await {
            Ok(Ok(w)) => Some(Proposed {
                index: w.log_id.index,
                resp: w.data,
            }),
            Ok(Err(_)) | Err(_) => None,
        }
    }
}
