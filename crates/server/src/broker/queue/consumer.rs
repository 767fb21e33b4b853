//! What a queue sends its consumers, and how it reaches them. Defined with the queue and
//! handled by whoever consumes (today the AMQP channel), so the broker never names a
//! channel: a consumer is two `Recipient`s and its flow gate.

use super::QueueEntry;
use crate::broker::flow::ConsumerGate;
use actix::prelude::*;
use broker_core::queue::Entry;
use std::sync::Arc;

/// A delivery from a queue to one of this channel's consumers (sent in a
/// [`DeliverBatch`]).
pub struct Deliver {
    /// The queue.
    pub queue: Arc<QueueEntry>,
    /// The consumer.
    pub consumer_tag: Arc<str>,
    /// Whether the consumer is no-ack.
    pub no_ack: bool,
    /// The queue's entry (its id and redelivered flag).
    pub entry: Entry,
    /// The message, read back from the store if the entry was paged out.
    pub msg: Arc<broker_core::Message>,
    /// The consumer's gate (credit reserved by the queue).
    pub gate: Arc<ConsumerGate>,
    /// Credit units reserved for it ([`broker_core::flow::cost`] of its size), given
    /// back when it reaches the socket buffer.
    pub units: u32,
}

/// The deliveries of one queue turn to consumers of this channel, in order (one mailbox
/// message per channel per turn, not one per delivery).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeliverBatch(pub Vec<Deliver>);

/// The queue of a consumer was deleted: tell the client with basic.cancel.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConsumerCancelled {
    /// The consumer.
    pub consumer_tag: Arc<str>,
}

/// How the queue reaches one consumer.
#[derive(Clone)]
pub struct ConsumerHandle {
    /// Where its deliveries go (its channel).
    pub deliver: Recipient<DeliverBatch>,
    /// Where basic.cancel is asked for when the queue goes away or restarts.
    pub cancel: Recipient<ConsumerCancelled>,
    /// Its flow gate.
    pub gate: Arc<ConsumerGate>,
}
