//! Proposing a command until some leader commits it: the loop both groups' handles run.
//! Each attempt is the group's own (a `client_write` on this node's member, or a call
//! to the node it was told leads); the loop follows where they point and, when no
//! leader is known or the one tried did not answer, waits for this node to see the
//! leader change, all within one deadline.

use crate::NodeId;
use openraft::{Raft, RaftTypeConfig};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// How long an attempt that failed (leader unknown or unreachable) waits for the leader
/// to change before the next: ends early when the metrics change.
pub(crate) const RETRY_WAIT: Duration = Duration::from_millis(100);

/// How one attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Attempt<T> {
    /// Committed: the answer.
    Done(T),
    /// Try this node next.
    Next(NodeId),
    /// Wait for the leader to change from this one, then try again.
    Wait(Option<NodeId>),
}

impl<T> Attempt<T> {
    /// The same step with the answer changed by `f`.
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Attempt<U> {
        match self {
            Attempt::Done(t) => Attempt::Done(f(t)),
            Attempt::Next(n) => Attempt::Next(n),
            Attempt::Wait(old) => Attempt::Wait(old),
        }
    }
}

/// Runs `attempt` until it is done or fails, for at most `timeout` (then `timed_out`).
/// Each call gets the node to try (`None`: this node's own member, which says who leads
/// when it does not) and the time left. `leader` names what the wait is for in
/// openraft's messages ("a metadata leader").
pub(crate) async fn until_done<C, T, E, F, Fut>(
    raft: &Raft<C>,
    leader: &'static str,
    timeout: Duration,
    timed_out: E,
    mut attempt: F,
) -> Result<T, E>
where
    C: RaftTypeConfig<NodeId = NodeId>,
    F: FnMut(Option<NodeId>, Duration) -> Fut,
    Fut: Future<Output = Result<Attempt<T>, E>>,
{
    let deadline = Instant::now() + timeout;
    // the node to try next, when the last attempt named it
    let mut next: Option<NodeId> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out);
        }
        match attempt(next.take(), left).await? {
            Attempt::Done(t) => return Ok(t),
            Attempt::Next(n) => next = Some(n),
            Attempt::Wait(old) => leader_change(raft, old, left, leader).await,
        }
    }
}

/// Waits (at most [`RETRY_WAIT`], never past `left`) for this node to see a leader
/// other than `old`.
async fn leader_change<C>(raft: &Raft<C>, old: Option<NodeId>, left: Duration, what: &str)
where
    C: RaftTypeConfig<NodeId = NodeId>,
{
    let _ = raft
        .wait(Some(RETRY_WAIT.min(left)))
        .metrics(
            |m| m.current_leader.is_some() && m.current_leader != old,
            what,
        )
        .await;
}
