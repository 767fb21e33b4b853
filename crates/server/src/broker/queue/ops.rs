//! The queue-type seam on the server side: what channels, the management API, recovery
//! and topology changes ask of a queue goes through these methods, never straight to an
//! actor's address. Each asks the queue's type ([`QueueEntry::queue_type`], from
//! `x-queue-type` through `broker_core::queue_type`) what it supports and dispatches to
//! the type's implementation: today every queue is classic, carried out by its
//! [`QueueActor`]; a stream or quorum queue adds its actor here, and the callers do not
//! change. The futures returned are `'static` (they own what they need), so a channel can
//! hold one across `ctx.wait`.

use super::*;
use actix::dev::Request;
use broker_core::queue::Consumer;
use broker_core::queue_type::{Capabilities, QueueType};

impl QueueEntry {
    /// The queue's type (classic unless `x-queue-type` names another registered one).
    pub fn queue_type(&self) -> &'static dyn QueueType {
        broker_core::queue_type::of_arguments(&self.arguments)
    }

    /// What the queue's type supports (asked before dispatching a method to it).
    pub fn capabilities(&self) -> Capabilities {
        self.queue_type().capabilities()
    }

    /// basic.consume: registers a consumer.
    pub fn consume(
        &self,
        c: Consumer<ConsumerHandle>,
        arguments: &FieldTable,
    ) -> Request<QueueActor, Consume> {
        self.addr.send(Consume(c, arguments.clone()))
    }

    /// basic.cancel (or a consumer's channel letting it go).
    pub fn cancel(&self, channel: ChannelKey, tag: Arc<str>) -> Request<QueueActor, Cancel> {
        self.addr.send(Cancel { channel, tag })
    }

    /// basic.get: the head message, if any, with the ready count after it.
    pub fn get(&self, channel: ChannelKey, no_ack: bool) -> Request<QueueActor, Get> {
        self.addr.send(Get { channel, no_ack })
    }

    /// basic.ack / nack / reject of deliveries from this queue.
    pub fn settle(&self, s: Settle) {
        let (kind, ids) = match &s {
            Settle::Ack(ids) => (0, ids),
            Settle::Requeue(ids) => (1, ids),
            Settle::Discard(ids) => (2, ids),
            Settle::GiveBack(ids) => (3, ids),
        };
        if self.note_remote(|vhost, queue| remote_wire::Note::Settle {
            vhost,
            queue,
            kind,
            ids: ids.clone(),
        }) {
            return;
        }
        self.addr.do_send(s);
    }

    /// Hands deliveries back unchanged (their consumer went away on the way).
    pub fn restore(&self, entries: Vec<Entry>, no_ack: bool) {
        if !self.is_local() {
            // a queue of another node restores through [`QueueEntry::restore_remote`]
            return;
        }
        self.addr.do_send(Restore { entries, no_ack });
    }

    /// Hands a message got from a queue of another node back (its channel could not
    /// send it): given back at the home, not counted as a return.
    pub fn restore_remote(&self, id: u64) {
        self.note_remote(|vhost, queue| remote_wire::Note::Settle {
            vhost,
            queue,
            kind: 3,
            ids: vec![id],
        });
    }

    /// A consumer has room again: the queue delivers on.
    pub fn kick(&self) {
        self.addr.do_send(Kick);
    }

    /// A channel closed: its consumers go, its unacked deliveries come back.
    pub fn channel_closed(&self, channel: ChannelKey) {
        if self.note_remote(|vhost, queue| remote_wire::Note::ChannelClosed {
            vhost,
            queue,
            connection: channel.connection,
            channel: channel.channel,
        }) {
            return;
        }
        self.addr.do_send(ChannelClosed(channel));
    }

    /// queue.purge: drops the ready messages; answers how many.
    pub fn purge(&self) -> Request<QueueActor, Purge> {
        self.addr.send(Purge)
    }

    /// queue.delete's part in the queue: checks if-unused/if-empty, cancels consumers,
    /// answers how many messages went with it.
    pub fn delete(&self, if_unused: bool, if_empty: bool) -> Request<QueueActor, DeleteQueue> {
        self.addr.send(DeleteQueue {
            if_unused,
            if_empty,
        })
    }

    /// The management API's browse: copies of up to `count` ready messages from
    /// `offset` (at most [`PEEK_MAX`]), from the actor here or from the queue's home;
    /// the queue unchanged.
    pub fn peek(
        &self,
        offset: usize,
        count: usize,
    ) -> impl std::future::Future<Output = Result<Peeked, AmqpError>> + 'static {
        let count = count.min(PEEK_MAX);
        let local = self
            .is_local()
            .then(|| self.addr.send(Peek { offset, count }));
        let remote = (!self.is_local()).then(|| self.remote_peek(offset, count));
        async move {
            match (local, remote) {
                (Some(ask), _) => ask
                    .await
                    .map_err(|_| AmqpError::internal("queue unavailable"))?,
                (None, Some(ask)) => ask.await,
                (None, None) => Err(AmqpError::internal("queue unavailable")),
            }
        }
    }

    /// What the management API shows of the queue.
    pub fn info(&self) -> Request<QueueActor, Info> {
        self.addr.send(Info)
    }

    /// Messages recovered from the store at start.
    pub fn recover(&self, batch: Vec<Recovered>) -> Request<QueueActor, Recover> {
        self.addr.send(Recover(batch))
    }

    /// A message a full reject-publish-dlx queue refused at the channel: dead-letter it.
    pub fn refused(&self, msg: Arc<Message>) {
        self.addr.do_send(Refused(msg));
    }

    /// Records how far the queue has delivered, so those messages come back redelivered
    /// after a restart (at shutdown).
    pub fn save_delivered_mark(&self) -> Request<QueueActor, SaveDeliveredMark> {
        self.addr.send(SaveDeliveredMark)
    }
}
