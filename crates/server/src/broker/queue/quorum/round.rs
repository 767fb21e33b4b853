//! One proposer round of a replicated quorum queue: every command waiting when the
//! previous round was answered goes into one log entry (`QqOp::Batch`), so a round
//! costs one Raft commit (one fsync on a majority, one forward when this node does not
//! lead) however many commands it carries. Commands stay in the order the actor
//! proposed them (a batch applies them in order); `proposer.rs` keeps several rounds
//! in flight on the leader's node and commits them in order.
//!
//! Before batching, each command was a round of its own: with a consumer acking, every
//! settle forced the inbox out as a separate `Enqueue` before it, and a three-node
//! queue managed about 1,500 confirmed publishes a second (docs/performance.md).

use super::{Answer, Proposal};
use broker_cluster::quorum::MAX_BATCH_BYTES;
use broker_core::quorum::{QqCmd, QqOp, QqResp};
use tokio::sync::oneshot;

/// Most commands (answers, counting merged settles) in one round.
pub(super) const ROUND_MAX: usize = 4096;

/// The commands of one round, each with the answers it owes (several when settles of
/// one channel were merged into one command).
pub(super) struct Round {
    /// The commands in order, with who waits for each.
    parts: Vec<(QqOp, Vec<oneshot::Sender<Answer>>)>,
    /// The latest proposer clock of the commands (the batch's time).
    ts_ms: u64,
    /// The bodies' bytes so far (an entry stays near `MAX_BATCH_BYTES`).
    bytes: usize,
    /// Answers owed.
    answers: usize,
}

impl Round {
    /// A round that starts with `first`.
    pub(super) fn new((cmd, tx): Proposal) -> Round {
        Round {
            bytes: size(&cmd.op),
            ts_ms: cmd.ts_ms,
            parts: vec![(cmd.op, vec![tx])],
            answers: 1,
        }
    }

    /// Takes `p` into the round, or gives it back when the round is full (by count, or
    /// by bytes: a large publish waits for the next round).
    pub(super) fn add(&mut self, p: Proposal) -> Result<(), Proposal> {
        let (cmd, tx) = p;
        let more = size(&cmd.op);
        if self.answers >= ROUND_MAX || self.bytes.saturating_add(more) > MAX_BATCH_BYTES {
            return Err((cmd, tx));
        }
        self.ts_ms = self.ts_ms.max(cmd.ts_ms);
        self.answers += 1;
        self.bytes += more;
        if let Some((last, txs)) = self.parts.last_mut() {
            if merge(last, &cmd.op) {
                txs.push(tx);
                return Ok(());
            }
        }
        self.parts.push((cmd.op, vec![tx]));
        Ok(())
    }

    /// The round as one command (a single command stays itself) and who waits for
    /// which part of the answer.
    pub(super) fn into_cmd(self) -> (QqCmd, Waiting) {
        let ts_ms = self.ts_ms;
        let (ops, txs): (Vec<QqOp>, Vec<_>) = self.parts.into_iter().unzip();
        let op = match <[QqOp; 1]>::try_from(ops) {
            Ok([op]) => op,
            Err(ops) => QqOp::Batch(ops),
        };
        (QqCmd { ts_ms, op }, Waiting(txs))
    }
}

/// The answers a proposed round owes, part by part.
pub(super) struct Waiting(Vec<Vec<oneshot::Sender<Answer>>>);

impl Waiting {
    /// Hands each part its answer: a batch's answers in order, a single command's to
    /// all who wait for it, an error to everyone.
    pub(super) fn answer(self, r: Answer) {
        let parts = self.0;
        match r {
            Ok(QqResp::Batch(resps)) if resps.len() == parts.len() && parts.len() > 1 => {
                for (txs, resp) in parts.into_iter().zip(resps) {
                    send_all(txs, Ok(resp));
                }
            }
            r if parts.len() == 1 => {
                for txs in parts {
                    send_all(txs, r.clone());
                }
            }
            Ok(other) => {
                let e = format!("unexpected answer to a batch of commands: {other:?}");
                for txs in parts {
                    send_all(txs, Err(e.clone()));
                }
            }
            Err(e) => {
                for txs in parts {
                    send_all(txs, Err(e.clone()));
                }
            }
        }
    }
}

fn send_all(txs: Vec<oneshot::Sender<Answer>>, r: Answer) {
    for tx in txs {
        let _ = tx.send(r.clone());
    }
}

/// The bytes a command carries (the bodies of a publish; others count a little).
fn size(op: &QqOp) -> usize {
    match op {
        QqOp::Enqueue { batch } => batch.iter().map(|p| p.message.len() + 32).sum(),
        _ => 64,
    }
}

/// Adds `c` to `cmd` when both settle (the same way) deliveries of one channel.
fn merge(cmd: &mut QqOp, c: &QqOp) -> bool {
    match (cmd, c) {
        (
            QqOp::Settle { channel, ids },
            QqOp::Settle {
                channel: ch,
                ids: more,
            },
        )
        | (
            QqOp::Return { channel, ids },
            QqOp::Return {
                channel: ch,
                ids: more,
            },
        )
        | (
            QqOp::Discard { channel, ids },
            QqOp::Discard {
                channel: ch,
                ids: more,
            },
        ) if channel == ch => {
            ids.extend_from_slice(more);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

    use super::*;
    use broker_core::quorum::ChanId;

    fn chan(n: u16) -> ChanId {
        ChanId {
            node: 1,
            connection: 1,
            channel: n,
        }
    }

    fn proposal(ts: u64, op: QqOp) -> (Proposal, oneshot::Receiver<Answer>) {
        let (tx, rx) = oneshot::channel();
        ((QqCmd { ts_ms: ts, op }, tx), rx)
    }

    #[test]
    fn commands_of_a_round_become_one_batch_answered_part_by_part() {
        let (p1, mut r1) = proposal(5, QqOp::Purge);
        let (p2, mut r2) = proposal(
            7,
            QqOp::Settle {
                channel: chan(1),
                ids: vec![1],
            },
        );
        let (p3, mut r3) = proposal(
            6,
            QqOp::Settle {
                channel: chan(1),
                ids: vec![2],
            },
        );
        let (p4, mut r4) = proposal(6, QqOp::Tick);
        let mut round = Round::new(p1);
        for p in [p2, p3, p4] {
            assert!(round.add(p).is_ok());
        }
        let (cmd, waiting) = round.into_cmd();
        assert_eq!(cmd.ts_ms, 7);
        assert_eq!(
            cmd.op,
            QqOp::Batch(vec![
                QqOp::Purge,
                QqOp::Settle {
                    channel: chan(1),
                    ids: vec![1, 2]
                },
                QqOp::Tick
            ])
        );
        waiting.answer(Ok(QqResp::Batch(vec![
            QqResp::Purged(3),
            QqResp::Ok,
            QqResp::Ok,
        ])));
        assert_eq!(r1.try_recv().unwrap(), Ok(QqResp::Purged(3)));
        assert_eq!(r2.try_recv().unwrap(), Ok(QqResp::Ok));
        assert_eq!(r3.try_recv().unwrap(), Ok(QqResp::Ok));
        assert_eq!(r4.try_recv().unwrap(), Ok(QqResp::Ok));
    }

    #[test]
    fn a_single_command_is_not_wrapped_and_an_error_reaches_everyone() {
        let (p1, mut r1) = proposal(1, QqOp::Tick);
        let (cmd, waiting) = Round::new(p1).into_cmd();
        assert_eq!(cmd.op, QqOp::Tick);
        waiting.answer(Err("lost".into()));
        assert_eq!(r1.try_recv().unwrap(), Err("lost".to_owned()));
    }

    #[test]
    fn a_round_stops_at_the_bytes_bound() {
        let big = |seq| QqOp::Enqueue {
            batch: vec![broker_core::quorum::Publish {
                publisher: chan(1),
                seq,
                message: vec![0; MAX_BATCH_BYTES / 2],
            }],
        };
        let (p1, _r1) = proposal(1, big(1));
        let (p2, _r2) = proposal(1, big(2));
        let mut round = Round::new(p1);
        assert!(round.add(p2).is_err());
    }
}
