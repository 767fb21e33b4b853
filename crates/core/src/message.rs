//! A published message as queues hold it: shared by every queue it was routed to.

pub use broker_wire::Properties;
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
    pub properties: Properties,
    /// Properties as the publisher encoded them, re-sent verbatim on delivery.
    pub raw_properties: Bytes,
    /// The body.
    pub body: Bytes,
    /// Store id when the message is persistent and kept by at least one durable queue.
    pub persist_id: Option<u64>,
    /// When the broker received it (ms since the epoch): TTLs count from here, also
    /// across a restart.
    pub arrival_ms: u64,
}

/// What a queue needs of a message without its body. The store keeps it in the index,
/// so paged and recovered messages keep their priority and expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Meta {
    /// What [`Message::size`] says (body and encoded properties).
    pub size: u32,
    /// Body bytes (`x-max-length-bytes` counts bodies only).
    pub body_len: u32,
    /// The priority property (0 when absent).
    pub priority: u8,
    /// When the broker received it (ms since the epoch).
    pub arrival_ms: u64,
    /// The per-message TTL from the `expiration` property, if valid.
    pub ttl_ms: Option<u64>,
}

impl Message {
    /// Bytes this message accounts for in memory limits (body and encoded properties).
    pub fn size(&self) -> usize {
        self.body.len() + self.raw_properties.len()
    }

    /// What a queue needs of this message without its body.
    pub fn meta(&self) -> Meta {
        Meta {
            size: u32::try_from(self.size()).unwrap_or(u32::MAX),
            body_len: u32::try_from(self.body.len()).unwrap_or(u32::MAX),
            priority: self.properties.priority().unwrap_or(0),
            arrival_ms: self.arrival_ms,
            ttl_ms: self
                .properties
                .expiration()
                .as_ref()
                .and_then(|e| parse_expiration(e.as_str()).ok()),
        }
    }

    /// Whether the publisher asked for persistence (delivery-mode 2).
    pub fn is_persistent(&self) -> bool {
        matches!(self.properties.delivery_mode(), Some(2))
    }
}

/// A message as a queue holds it: in memory, or only in the store. A persisted message
/// that was spilled past a queue's window (`queue::spill`), or recovered at start past
/// it, comes back as its store id and size, and its body is read from the store just
/// before delivery.
#[derive(Debug, Clone)]
pub enum Slot {
    /// The message is in memory.
    Loaded(Arc<Message>),
    /// The message is only in the store.
    Paged {
        /// Its store id.
        persist_id: u64,
        /// What [`Message::size`] said of it.
        size: u32,
    },
}

impl Slot {
    /// Bytes the message accounts for, loaded or not.
    pub fn size(&self) -> usize {
        match self {
            Slot::Loaded(m) => m.size(),
            Slot::Paged { size, .. } => *size as usize,
        }
    }

    /// The message's store id, if it is stored.
    pub fn persist_id(&self) -> Option<u64> {
        match self {
            Slot::Loaded(m) => m.persist_id,
            Slot::Paged { persist_id, .. } => Some(*persist_id),
        }
    }

    /// The message, if it is in memory.
    pub fn loaded(&self) -> Option<&Arc<Message>> {
        match self {
            Slot::Loaded(m) => Some(m),
            Slot::Paged { .. } => None,
        }
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
