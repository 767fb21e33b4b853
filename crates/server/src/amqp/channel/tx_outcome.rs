//! What a tx.commit waits for besides the store's fsync: the outcome of each of its
//! publishes at every quorum queue (the group's commit) and every queue on another
//! node (its home's enqueue), as RabbitMQ's channel completes a commit only once its
//! publishes are confirmed. A publish a queue refused (`x-overflow` reject-publish)
//! fails the commit with 406 "partial tx completion", as in RabbitMQ; the other queues
//! keep what they took.
//!
//! The outcomes go to a small actor of their own rather than to the channel: the
//! channel holds its mailbox back while the commit waits (methods stay in order), so
//! it could not take them itself.

use crate::broker::queue::QuorumConfirmed;
use actix::prelude::*;
use tokio::sync::oneshot;

/// The commit in progress on a transactional channel.
#[derive(Default)]
pub(crate) struct TxCommit {
    /// Where the queues send the outcomes of this commit's publishes, and the answer
    /// it gives once every part came (all ok or not); started at the first publish
    /// that needs it.
    sink: Option<(Addr<TxOutcomes>, oneshot::Receiver<bool>)>,
    /// Outcomes to wait for (one per publish and quorum or remote queue).
    parts: usize,
    /// A queue refused a publish of this commit (reject-publish).
    pub(crate) refused: bool,
}

impl TxCommit {
    /// Where a publish going to `parts` quorum or remote queues sends its outcomes.
    pub(crate) fn sink_for(&mut self, parts: u32) -> Recipient<QuorumConfirmed> {
        self.parts += parts as usize;
        let (sink, _) = self.sink.get_or_insert_with(|| {
            let (tx, done) = oneshot::channel();
            let sink = TxOutcomes {
                expected: None,
                received: 0,
                ok: true,
                done: Some(tx),
            }
            .start();
            (sink, done)
        });
        sink.clone().recipient()
    }

    /// Waits until every queue answered: `Ok(true)` when all took their publishes,
    /// `Ok(false)` when one refused; `Err` when an answer can no longer come (the queue
    /// dropped it: its actor stopped).
    pub(crate) async fn outcome(self) -> Result<bool, ()> {
        if self.refused {
            return Ok(false);
        }
        let Some((sink, done)) = self.sink else {
            return Ok(true);
        };
        sink.do_send(Expect(self.parts));
        drop(sink);
        done.await.map_err(|_| ())
    }
}

/// The number of outcomes to expect (sent once the commit's publishes were routed).
#[derive(Message)]
#[rtype(result = "()")]
struct Expect(usize);

/// Counts one commit's outcomes; stops once it has them all (or when no queue holds
/// its address any more, which drops `done`).
struct TxOutcomes {
    expected: Option<usize>,
    received: usize,
    ok: bool,
    done: Option<oneshot::Sender<bool>>,
}

impl TxOutcomes {
    fn check(&mut self, ctx: &mut Context<Self>) {
        if self.expected.is_some_and(|e| self.received >= e) {
            if let Some(done) = self.done.take() {
                let _ = done.send(self.ok);
            }
            ctx.stop();
        }
    }
}

impl Actor for TxOutcomes {
    type Context = Context<Self>;
}

impl Handler<Expect> for TxOutcomes {
    type Result = ();
    fn handle(&mut self, m: Expect, ctx: &mut Context<Self>) {
        self.expected = Some(m.0);
        self.check(ctx);
    }
}

impl Handler<QuorumConfirmed> for TxOutcomes {
    type Result = ();
    fn handle(&mut self, m: QuorumConfirmed, ctx: &mut Context<Self>) {
        for (_, ok) in m.0 {
            self.received += 1;
            self.ok &= ok;
        }
        self.check(ctx);
    }
}
