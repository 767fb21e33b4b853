//! How a queue ends and starts over: auto-delete and x-expires, cancelling its
//! consumers, and the restart after a panic (`broker/supervise.rs`).

use super::*;

impl QueueActor {
    pub(super) fn maybe_auto_delete(&mut self) {
        if self.state.had_consumer() && self.state.consumer_count() == 0 && !self.deleted {
            if let Some(me) = self.me.upgrade() {
                if me.auto_delete {
                    self.delete_self();
                }
            }
        }
    }

    /// Deletes this queue on its own account (auto-delete, x-expires).
    pub(super) fn delete_self(&mut self) {
        self.cancel_all_consumers();
        self.deleted = true;
        // a declare of the name from now on makes a new queue (`topology.rs`)
        if let Some(me) = self.me.upgrade() {
            me.deleted.store(true, Ordering::Release);
        }
        if let Some(v) = self.host.upgrade() {
            v.queue_gone(self.name.clone());
        }
        self.quorum_remove();
    }

    pub(super) fn cancel_all_consumers(&mut self) {
        // deliveries made before the cancel reach the channel before it
        self.flush_deliveries();
        if let Some(s) = self.stream.as_mut() {
            s.cancel_all();
            return;
        }
        if self.quorum.is_some() {
            self.quorum_cancel_all();
            return;
        }
        for c in self.state.consumers() {
            c.data.cancel.do_send(ConsumerCancelled {
                consumer_tag: c.tag.clone(),
            });
        }
    }
}

impl Actor for QueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.quorum.is_some() {
            // its x-expires and TTLs are the group's (`Tick`)
            self.quorum_open(ctx);
            return;
        }
        self.schedule_expires(ctx);
        if self.stream.is_some() {
            self.schedule_stream_retention(ctx);
        }
    }
}

impl Supervisable for QueueActor {
    const KIND: Kind = Kind::Queue;
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::broker::fault::Fault> for QueueActor {
    type Result = ();
    fn handle(&mut self, f: crate::broker::fault::Fault, ctx: &mut Context<Self>) {
        crate::broker::fault::inject(f.at, ctx);
    }
}

/// After a panic anywhere in the actor (`broker/supervise.rs`): the queue starts over
/// from what is certain. Consumers get basic.cancel, transient messages are lost, and a
/// durable queue reloads its stored messages (delivered ones come back redelivered), as
/// a RabbitMQ classic queue does when its process restarts.
impl Supervised for QueueActor {
    fn restarting(&mut self, ctx: &mut Context<Self>) {
        // deliveries of the failed turn: no-ack ones are settled already (a persistent
        // one is gone from the store), so they still go out; ack-mode ones belong to the
        // state being thrown away (a durable queue delivers its stored ones again)
        for (_, channel, v) in self.outbox.drain(..) {
            let (no_ack, ack): (Vec<Deliver>, Vec<Deliver>) = v.into_iter().partition(|d| d.no_ack);
            for d in ack {
                d.gate.undo(d.units);
            }
            if !no_ack.is_empty() {
                channel.do_send(DeliverBatch(no_ack));
            }
        }
        self.cancel_all_consumers();
        self.pace_check = false;
        self.window_fresh = 0;
        self.last_window_fresh = 0;
        if let Some(me) = self.me.upgrade() {
            me.paced.store(false, Ordering::SeqCst);
            // persistent messages still in the inbox are in the store too, and are
            // reloaded below: taking them in again would duplicate them
            if self.stored().is_some() {
                let waiting = me.inbox.take();
                let (stored, transient): (Vec<_>, Vec<_>) =
                    waiting.into_iter().partition(|m| m.persist_id.is_some());
                // they were never counted as taken in
                me.counters
                    .published
                    .fetch_add(stored.len() as u64, Ordering::Relaxed);
                for m in transient {
                    if me.inbox.push(m) {
                        ctx.notify(TakeInbox);
                    }
                }
            }
            me.inbox.wake_waiters();
        }
        let before = self.state.bytes();
        let was_out = self.state.delivered_persist_ids();
        self.state = super::paging::spilling(self.state.emptied(), &self.node, &self.name);
        self.expiry_timer = None;
        self.timeout_check = false;
        self.mark_scheduled = false;
        // a durable queue takes its persistent messages back from the store, as after a
        // broker restart (with redelivered set for those it had delivered)
        if let Some((store, qid)) = self.stored() {
            let vhost = self.vhost_name();
            let (batch, _) = load_stored(&*store, qid, &self.name, &vhost);
            tracing::warn!(queue = %self.name, recovered = batch.len(), "restarted queue reloaded its stored messages");
            for r in batch {
                let out = r.slot.persist_id().is_some_and(|id| was_out.contains(&id));
                self.state
                    .publish_recovered(r.slot, r.meta, r.delivered || out);
            }
        }
        self.node.message_bytes.adjust(before, self.state.bytes());
    }
}
