//! The proposer of a replicated quorum queue's member on this node: it takes the
//! commands the queue actor proposes, in order, gathers those waiting into rounds
//! (`round.rs`: one entry, one commit each) and commits them.
//!
//! On the leader's node rounds are pipelined: up to [`DEPTH`] are handed to the member
//! without waiting for the ones before ([`QuorumHandle::submit`]). They are entries in
//! the order submitted, so they commit and are answered in that order, and a round
//! waits only for the commit that covers it, not for the round before it as well: with
//! one round in flight a publisher's window split into two halves taking turns, and
//! each message waited about two commits.
//!
//! A round the leader did not commit (it lost the lead) is proposed again through
//! [`QuorumHandle::propose`] (forwarded to the new leader), in order, after every round
//! in flight behind it is settled. When one of those later rounds committed, the
//! failed round is not retried: publishes are deduplicated by publisher sequence
//! number, so a retry landing after a later publish of the same publisher would be
//! taken for a duplicate and confirmed without being enqueued. It is answered with an
//! error instead (a nack for its publishes); this needs the member to lose the lead
//! and win it back between two rounds.
//!
//! Elsewhere (a follower's node) one round at a time goes to the leader, as before.

use super::round::{Round, Waiting};
use super::{Answer, Proposal};
use broker_cluster::quorum::{Pending, ProposeError, QuorumHandle};
use broker_core::quorum::QqCmd;
use std::collections::VecDeque;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Most rounds in flight on a leading member.
const DEPTH: usize = 8;

/// A round handed to the leading member.
struct InFlight {
    /// The round's command, kept to propose it again if the leader does not commit it.
    cmd: QqCmd,
    /// Who waits for which part of its answer.
    waiting: Waiting,
    /// Its answer to come; `None` when the member did not take it (it no longer led).
    pending: Option<Pending>,
    /// When it is given up ([`QuorumHandle::timeout`] after it was submitted).
    deadline: Instant,
}

/// What became of a round in flight.
enum Outcome {
    Committed(Answer),
    /// Not committed by this member: to be proposed again.
    Lost,
    /// No answer in time (it may still commit): answered with an error.
    TimedOut,
}

/// Proposes the commands from `rx` until it closes (the queue stopped), then settles
/// what is in flight.
pub(super) async fn run_proposer(handle: QuorumHandle, mut rx: mpsc::UnboundedReceiver<Proposal>) {
    let mut next: Option<Proposal> = None;
    let mut flight: VecDeque<InFlight> = VecDeque::new();
    loop {
        tokio::select! {
            biased;
            outcome = outcome_of_oldest(&mut flight), if !flight.is_empty() => {
                settle_oldest(&handle, outcome, &mut flight).await;
            }
            first = take_next(&mut next, &mut rx), if flight.len() < DEPTH => {
                let Some(first) = first else { break };
                let (cmd, waiting) = gather(first, &mut rx, &mut next).into_cmd();
                let deadline = Instant::now() + handle.timeout();
                match handle.submit(cmd.clone()).await {
                    Some(p) => flight.push_back(InFlight { cmd, waiting, pending: Some(p), deadline }),
                    None if flight.is_empty() => propose(&handle, cmd, waiting).await,
                    None => flight.push_back(InFlight { cmd, waiting, pending: None, deadline }),
                }
            }
        }
    }
    while !flight.is_empty() {
        let outcome = outcome_of_oldest(&mut flight).await;
        settle_oldest(&handle, outcome, &mut flight).await;
    }
}

/// The next proposal: the one a full round left over, else the next from `rx`.
async fn take_next(
    next: &mut Option<Proposal>,
    rx: &mut mpsc::UnboundedReceiver<Proposal>,
) -> Option<Proposal> {
    match next.take() {
        Some(p) => Some(p),
        None => rx.recv().await,
    }
}

/// A round of `first` and every proposal waiting behind it that fits (the first that
/// does not is left in `next`).
fn gather(
    first: Proposal,
    rx: &mut mpsc::UnboundedReceiver<Proposal>,
    next: &mut Option<Proposal>,
) -> Round {
    let mut round = Round::new(first);
    while let Ok(p) = rx.try_recv() {
        if let Err(p) = round.add(p) {
            *next = Some(p);
            break;
        }
    }
    round
}

/// Waits for the oldest round in flight to be decided, leaving it in place (the wait
/// may be cancelled by a new proposal; nothing is lost then).
async fn outcome_of_oldest(flight: &mut VecDeque<InFlight>) -> Outcome {
    match flight.front_mut() {
        Some(f) => decide(f).await,
        None => std::future::pending().await,
    }
}

async fn decide(f: &mut InFlight) -> Outcome {
    let Some(p) = f.pending.as_mut() else {
        return Outcome::Lost;
    };
    match tokio::time::timeout_at(f.deadline, p.outcome()).await {
        Ok(Some(p)) => Outcome::Committed(Ok(p.resp)),
        Ok(None) => Outcome::Lost,
        Err(_) => Outcome::TimedOut,
    }
}

/// Answers the oldest round in flight with its `outcome`; when it was lost, settles
/// every round behind it and proposes again those that may be (module docs).
async fn settle_oldest(handle: &QuorumHandle, outcome: Outcome, flight: &mut VecDeque<InFlight>) {
    let Some(oldest) = flight.pop_front() else {
        return;
    };
    let lost = match answer(handle, oldest, outcome) {
        None => return,
        Some(lost) => lost,
    };
    let mut retry = vec![lost];
    while let Some(mut f) = flight.pop_front() {
        let o = decide(&mut f).await;
        if let Some(lost) = answer(handle, f, o) {
            retry.push(lost);
        } else {
            // a later round committed: the lost ones before it must not land after it
            for r in retry.drain(..) {
                r.waiting.answer(Err(
                    "quorum queue leader changed and a later command was committed first"
                        .to_owned(),
                ));
            }
        }
    }
    for r in retry {
        propose(handle, r.cmd, r.waiting).await;
    }
}

/// Answers `f` when it was decided; gives it back when it was lost.
fn answer(handle: &QuorumHandle, f: InFlight, outcome: Outcome) -> Option<InFlight> {
    match outcome {
        Outcome::Committed(r) => f.waiting.answer(r),
        Outcome::TimedOut => f
            .waiting
            .answer(Err(ProposeError::Timeout(handle.timeout()).to_string())),
        Outcome::Lost => return Some(f),
    }
    None
}

/// Commits `cmd` wherever the leader is (waiting out elections) and answers it.
async fn propose(handle: &QuorumHandle, cmd: QqCmd, waiting: Waiting) {
    let r: Answer = handle
        .propose(cmd)
        .await
        .map(|p| p.resp)
        .map_err(|e| e.to_string());
    waiting.answer(r);
}
