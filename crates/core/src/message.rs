//! A published message as queues hold it: shared by every queue it was routed to.

use amq_protocol::protocol::basic::AMQPProperties;
use bytes::Bytes;
use std::sync::{Arc, OnceLock};

/// One shared empty property set for placeholders, so a paged-out message costs no
/// allocation for its properties.
fn empty_properties() -> Arc<AMQPProperties> {
    static EMPTY: OnceLock<Arc<AMQPProperties>> = OnceLock::new();
    EMPTY
        .get_or_init(|| Arc::new(AMQPProperties::default()))
        .clone()
}

/// One published message. Queues hold `Arc<Message>`, so a fanout to fifty queues keeps
/// one copy of the body and of the properties.
#[derive(Debug)]
pub struct Message {
    /// The exchange it was published to.
    pub exchange: Arc<str>,
    /// The routing key it was published with.
    pub routing_key: Arc<str>,
    /// Parsed properties (headers, delivery mode, priority, expiration).
    pub properties: Arc<AMQPProperties>,
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
            properties: empty_properties(),
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

/// Parses a per-message `expiration` property (milliseconds, as a decimal string) the way
/// RabbitMQ does. The error names the reason RabbitMQ gives: `no_integer` or `negative`.
pub fn parse_expiration(s: &str) -> Result<u64, &'static str> {
    let v: i64 = s.parse().map_err(|_| "no_integer")?;
    u64::try_from(v).map_err(|_| "negative")
}

#[cfg(test)]
mod expiration_tests {
    use super::parse_expiration;

    #[test]
    fn expiration_as_rabbitmq_reads_it() {
        assert_eq!(parse_expiration("60000"), Ok(60000));
        assert_eq!(parse_expiration("0"), Ok(0));
        assert_eq!(parse_expiration("abc"), Err("no_integer"));
        assert_eq!(parse_expiration(""), Err("no_integer"));
        assert_eq!(parse_expiration("-1"), Err("negative"));
    }
}
