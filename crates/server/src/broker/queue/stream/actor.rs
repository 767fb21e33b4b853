//! What the queue actor's handlers do for a stream: deliver after each commit and each
//! release of credit, take consumers, acks and deletion, and save tracked offsets off
//! the actor's thread.

use super::super::{ConsumerHandle, QueueActor, Settle};
use actix::prelude::*;
use broker_core::queue::Consumer;
use broker_core::AmqpError;
use broker_wire::types::FieldTable;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long acks gather before tracked offsets are saved (one fsync per stream per
/// this long, whatever the ack rate).
const SAVE_DELAY: Duration = Duration::from_millis(200);

/// How often a stream checks its age limit when nothing is published (commits check
/// it too): old segments go even from a stream nobody writes to any more.
const RETENTION_CHECK: Duration = Duration::from_secs(1);

/// The log committed new messages: its readers may have more to read.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StreamCommitted;

impl Handler<StreamCommitted> for QueueActor {
    type Result = ();
    fn handle(&mut self, _: StreamCommitted, _: &mut Context<Self>) {
        self.stream_deliver();
    }
}

impl QueueActor {
    /// Delivers what the stream's consumers have credit for.
    pub(in crate::broker::queue) fn stream_deliver(&mut self) {
        let Some(me) = self.me.upgrade() else { return };
        let Some(s) = self.stream.as_mut() else {
            return;
        };
        let outbox = &mut self.outbox;
        let n = s.deliver(&me, |key, h: &ConsumerHandle, d| {
            match outbox.iter_mut().find(|(k, _, _)| *k == key) {
                Some((_, _, v)) => v.push(d),
                None => outbox.push((key, h.deliver.clone(), vec![d])),
            }
        });
        if n > 0 {
            me.counters.delivered.fetch_add(n, Ordering::Relaxed);
        }
        self.flush_deliveries();
    }

    /// basic.consume on a stream.
    pub(in crate::broker::queue) fn stream_consume(
        &mut self,
        c: Consumer<ConsumerHandle>,
        args: &FieldTable,
    ) -> Result<(), AmqpError> {
        let vhost = self.vhost_name();
        let name = self.name.clone();
        if let Some(s) = self.stream.as_mut() {
            s.consume(c, args, &name, &vhost)?;
        }
        self.stream_deliver();
        Ok(())
    }

    /// Acks move tracked offsets on (saved shortly after); any settle may have freed
    /// credit.
    pub(in crate::broker::queue) fn stream_settle(&mut self, msg: Settle, ctx: &mut Context<Self>) {
        if let (Settle::Ack(ids), Some(s)) = (&msg, self.stream.as_mut()) {
            s.acked(ids);
            if let Some(me) = self.me.upgrade() {
                me.counters
                    .acked
                    .fetch_add(ids.len() as u64, Ordering::Relaxed);
            }
        }
        self.schedule_offsets_save(ctx);
        self.stream_deliver();
    }

    /// Saves the tracked offsets a little later, on a blocking thread (an fsync on the
    /// actor's thread would stall every actor on its worker).
    fn schedule_offsets_save(&mut self, ctx: &mut Context<Self>) {
        let Some(s) = self.stream.as_mut() else {
            return;
        };
        if !s.tracked_dirty || s.save_scheduled {
            return;
        }
        s.save_scheduled = true;
        ctx.run_later(SAVE_DELAY, |a, _| {
            let Some(s) = a.stream.as_mut() else { return };
            s.save_scheduled = false;
            s.tracked_dirty = false;
            let (log, offsets) = (s.log.clone(), s.tracked().clone());
            actix_rt::task::spawn_blocking(move || {
                if let Err(e) = log.save_offsets(&offsets) {
                    tracing::warn!(stream = log.id, "{e}");
                }
            });
        });
    }

    /// Checks the stream's retention every [`RETENTION_CHECK`] (a cheap look at the
    /// oldest segment; only an age limit can expire anything between commits).
    pub(in crate::broker::queue) fn schedule_stream_retention(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(RETENTION_CHECK, |a, _| {
            if a.deleted {
                return;
            }
            if let Some(s) = a.stream.as_ref() {
                s.log.apply_retention(crate::broker::node::now_ms());
            }
        });
    }

    /// The stream's message count (what declare-ok and the management API show).
    pub(in crate::broker::queue) fn stream_count(&self) -> u64 {
        self.stream.as_ref().map_or(0, |s| s.log.message_count())
    }

    /// queue.delete of a stream: its consumers are cancelled and its files deleted.
    pub(in crate::broker::queue) fn stream_delete(
        &mut self,
        if_unused: bool,
    ) -> Result<u32, AmqpError> {
        let vhost = self.vhost_name();
        let Some(s) = self.stream.as_mut() else {
            return Ok(0);
        };
        if if_unused && s.consumer_count() > 0 {
            return Err(AmqpError::precondition_failed(format!(
                "queue '{}' in vhost '{vhost}' in use",
                self.name
            )));
        }
        s.cancel_all();
        if let Some(store) = self.node.store.as_ref() {
            store.streams.remove(&s.log);
        }
        self.deleted = true;
        // RabbitMQ's delete-ok for a stream counts no messages
        Ok(0)
    }
}
