//! Carrying out dead-lettering: a message that died in this queue is republished, with
//! the x-death headers `broker_core::deadletter` writes, through the queue's dead-letter
//! exchange or the vhost's `amq.dead-letter`, and then forgotten here. Routing follows
//! the same binding snapshots publishes use; persistent copies are stored for durable
//! target queues before the original is removed from the store. Splitting off full
//! reject-publish queues, storing and enqueueing are the vhost's part
//! ([`super::QueueHost::dead_letter`], carried out by `crate::broker::publish`, the path
//! every publish takes).

use super::QueueActor;
use crate::broker::node::now_ms;
use broker_core::deadletter::{self, Death, Reason};
use broker_core::names::MAX_SHORTSTR;
use broker_core::queue::Entry;
use broker_core::Message;
use broker_wire::types::{AMQPValue, FieldTable};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A copy of `msg` whose headers carry `x-delivery-count` (queues with a delivery limit).
pub(super) fn with_delivery_count(msg: &Message, returns: u32) -> Message {
    let mut headers: FieldTable = msg.properties.headers().clone().unwrap_or_default();
    headers.insert(
        "x-delivery-count".into(),
        AMQPValue::LongLongInt(i64::from(returns)),
    );
    let props = (*msg.properties).clone().with_headers(headers);
    Message {
        exchange: msg.exchange.clone(),
        routing_key: msg.routing_key.clone(),
        raw_properties: broker_wire::encode::properties(&props),
        properties: props.into(),
        body: msg.body.clone(),
        persist_id: msg.persist_id,
        arrival_ms: msg.arrival_ms,
    }
}

impl QueueActor {
    /// A delayed exchange's waiting room: hands the messages whose delay is over to the
    /// vhost, which routes them through the exchange and then removes them from this
    /// room's store (after their copies were stored for the queues they reached: a crash
    /// in between delivers twice, never loses), and reports what still waits
    /// (`QueueEntry::waiting`).
    pub(super) fn forward_due(&mut self) {
        let due = self.state.take_forwards();
        if let Some(me) = self.me.upgrade() {
            let next = self.state.next_due().unwrap_or(0);
            me.waiting
                .0
                .store(self.state.delayed_count(), Ordering::Relaxed);
            me.waiting.1.store(next, Ordering::Relaxed);
        }
        if due.is_empty() || self.deleted {
            return;
        }
        // a durable room's are read back, routed, stored and removed on the
        // delayed-message thread, so that this actor's thread stays free for its next
        // timer and the actors beside it (`broker/delayed.rs`)
        let (Some(host), Some(me)) = (self.host.upgrade(), self.me.upgrade()) else {
            return;
        };
        host.forward_due(&me, due, self.stored());
    }

    /// Dead-letters messages that died in this queue, then forgets them here.
    pub(super) fn dead_letter(&mut self, dead: Vec<(Entry, Reason)>) {
        for (entry, reason) in dead {
            match self.load(&entry) {
                Ok(msg) => self.republish(&msg, reason),
                Err(e) => {
                    tracing::error!(queue = %self.name, "a dead letter could not be read back and is lost: {e}");
                }
            }
            self.forget(std::slice::from_ref(&entry));
        }
    }

    pub(super) fn republish(&self, msg: &Message, reason: Reason) {
        let Some(host) = self.host.upgrade() else {
            return;
        };
        let args = self.state.args();
        let original_keys = deadletter::original_routing_keys(&msg.routing_key, &msg.properties);
        let target = deadletter::target(
            &self.name,
            args.dead_letter_exchange.as_deref(),
            args.dead_letter_routing_key.as_deref(),
            &original_keys,
        );
        let routing_key: Arc<str> = target
            .routing_keys
            .first()
            .map_or_else(|| msg.routing_key.clone(), |k| k.as_str().into());
        // a copy no client could be sent (its routing key is a shortstr in basic.deliver
        // and get-ok) is dropped here, not delivered into a queue it would poison
        // (RabbitMQ fails each delivery of it with 541); declares refuse such a
        // x-dead-letter-routing-key, so only a queue declared before that check gets here
        if routing_key.len() > MAX_SHORTSTR || target.exchange.len() > MAX_SHORTSTR {
            tracing::warn!(queue = %self.name, "dead letter dropped: its routing key or exchange is longer than 255 bytes");
            return;
        }
        let props = deadletter::dead_letter_properties(
            &msg.properties,
            &Death {
                reason,
                queue: &self.name,
                exchange: &msg.exchange,
                routing_keys: &original_keys,
                time: now_ms() / 1000,
                new_routing_key: args.dead_letter_routing_key.is_some(),
            },
        );
        let copy = Message {
            exchange: target.exchange.as_str().into(),
            routing_key,
            raw_properties: broker_wire::encode::properties(&props),
            properties: props.into(),
            body: msg.body.clone(),
            persist_id: None,
            arrival_ms: now_ms(),
        };
        host.dead_letter(&self.name, &target, copy);
    }
}
