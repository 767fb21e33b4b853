//! confirm.select and tx.*: publisher confirms and transactions (a commit's wait for
//! its queues: `tx_outcome.rs`).

use super::tx_outcome::TxCommit;
use super::{ChannelActor, TxBuffer};
use actix::prelude::*;
use broker_core::channel::Confirms;
use broker_core::AmqpError;
use broker_wire::protocol::{confirm, tx, AMQPClass};

impl ChannelActor {
    pub(crate) fn confirm_method(&mut self, m: confirm::AMQPMethod) -> Result<(), AmqpError> {
        match m {
            confirm::AMQPMethod::Select(s) => {
                if self.tx.is_some() {
                    return Err(AmqpError::precondition_failed(
                        "cannot switch from tx to confirm mode",
                    ));
                }
                if self.confirms.is_none() {
                    self.confirms = Some(Confirms::default());
                }
                if !s.nowait {
                    self.send(AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(
                        confirm::SelectOk {},
                    )));
                }
                Ok(())
            }
            _ => Err(AmqpError::command_invalid("unexpected confirm method")),
        }
    }

    pub(crate) fn tx_method(
        &mut self,
        m: tx::AMQPMethod,
        ctx: &mut Context<Self>,
    ) -> Result<(), AmqpError> {
        match m {
            tx::AMQPMethod::Select(_) => {
                if self.confirms.is_some() {
                    return Err(AmqpError::precondition_failed(
                        "cannot switch from confirm to tx mode",
                    ));
                }
                if self.tx.is_none() {
                    self.tx = Some(TxBuffer::default());
                }
                self.send(AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
                Ok(())
            }
            tx::AMQPMethod::Commit(_) => {
                let Some(buf) = self.tx.replace(TxBuffer::default()) else {
                    return Err(AmqpError::precondition_failed(
                        "channel is not transactional",
                    ));
                };
                let persistent = buf
                    .publishes
                    .iter()
                    .any(|(_, c)| matches!(c.properties.delivery_mode(), Some(2)));
                let since = self.store.as_ref().map_or(0, |s| s.messages.mark());
                self.store_failed = false;
                self.tx_commit = Some(TxCommit::default());
                let routed: Result<(), AmqpError> = buf
                    .publishes
                    .into_iter()
                    .try_for_each(|(p, c)| self.publish_now(p, c, ctx));
                let commit = self.tx_commit.take();
                routed?;
                if std::mem::take(&mut self.store_failed) {
                    // a persistent message of the transaction could not be stored
                    return Err(AmqpError::internal("store write failed"));
                }
                self.apply_settles(buf.settles.into_iter().map(|(_, p, k)| (p, k)).collect());
                // commit-ok once the transaction's persistent messages are on disk and
                // every quorum or remote queue took its publishes (`tx_outcome.rs`)
                let flushed = match (persistent, self.store.as_ref()) {
                    (true, Some(store)) => {
                        let (tx_done, rx_done) = tokio::sync::oneshot::channel();
                        let upto = store.messages.mark();
                        store.flusher.request(since, upto, move |res| {
                            let _ = tx_done.send(res);
                        });
                        Some(rx_done)
                    }
                    _ => None,
                };
                self.wait_then(
                    ctx,
                    (90, 20),
                    async move {
                        if let Some(rx) = flushed {
                            match rx.await {
                                Ok(Ok(())) => {}
                                _ => return Err(AmqpError::internal("store flush failed")),
                            }
                        }
                        let taken = match commit {
                            Some(c) => c.outcome().await,
                            None => Ok(true),
                        };
                        match taken {
                            Ok(true) => Ok(()),
                            Ok(false) => {
                                Err(AmqpError::precondition_failed("partial tx completion"))
                            }
                            Err(()) => Err(AmqpError::internal(
                                "a queue stopped before taking the transaction's publishes",
                            )),
                        }
                    },
                    |act, (), _| act.send(AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {}))),
                );
                Ok(())
            }
            tx::AMQPMethod::Rollback(_) => {
                let Some(buf) = self.tx.replace(TxBuffer::default()) else {
                    return Err(AmqpError::precondition_failed(
                        "channel is not transactional",
                    ));
                };
                for (tag, p, _) in buf.settles {
                    self.unacked.reinsert(tag, p);
                }
                self.send(AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})));
                Ok(())
            }
            _ => Err(AmqpError::command_invalid("unexpected tx method")),
        }
    }
}
