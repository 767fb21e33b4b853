//! A published message as queues hold it: shared by every queue it was routed to.

use amq_protocol::protocol::basic::AMQPProperties;
use bytes::Bytes;
use std::sync::Arc;

/// One published message. Queues hold `Arc<Message>`, so a fanout to fifty queues keeps
/// one copy of the body and of the properties.
#[derive(Debug)]
pub struct Message {
    /// The exchange it was published to.
    pub exchange: Arc<str>,
    /// The routing key it was published with.
    pub routing_key: Arc<str>,
    /// Parsed properties (headers, delivery mode, priority, expiration).
    pub properties: Box<AMQPProperties>,
    /// Properties as the publisher encoded them, re-sent verbatim on delivery.
    pub raw_properties: Bytes,
    /// The body.
    pub body: Bytes,
    /// Store id when the message is persistent and kept by at least one durable queue.
    pub persist_id: Option<u64>,
    /// Only a placeholder: the body and properties are in the store and are read back
    /// before delivery (a long queue keeps a bounded window of bodies in memory).
    pub paged: bool,
}

impl Message {
    /// Bytes this message accounts for in memory limits (body and encoded properties).
    pub fn size(&self) -> usize {
        self.body.len() + self.raw_properties.len()
    }

    /// A placeholder for this stored message that holds no body or properties.
    pub fn stub(&self) -> Message {
        Message {
            exchange: self.exchange.clone(),
            routing_key: self.routing_key.clone(),
            properties: Box::default(),
            raw_properties: Bytes::new(),
            body: Bytes::new(),
            persist_id: self.persist_id,
            paged: true,
        }
    }

    /// Whether the publisher asked for persistence (delivery-mode 2).
    pub fn is_persistent(&self) -> bool {
        matches!(self.properties.delivery_mode(), Some(2))
    }
}
