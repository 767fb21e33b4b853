//! One AMQP frame, decoded. Bodies stay as [`Bytes`] slices of the read buffer, so a
//! message body is never copied between the socket and the queues.

use amq_protocol::protocol::{basic::AMQPProperties, AMQPClass};
use bytes::Bytes;
use std::sync::{Arc, OnceLock};

/// Parsed content properties, shared by every copy of a message. A message without
/// properties (most of them) holds none: one shared "empty" `Arc` would be a refcount
/// that every thread handling a message writes, and that cache line would bounce between
/// cores on every message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties(Option<Arc<AMQPProperties>>);

impl Properties {
    /// No properties.
    pub fn none() -> Properties {
        Properties(None)
    }

    /// These properties (none if they are all absent).
    pub fn new(p: AMQPProperties) -> Properties {
        if p == AMQPProperties::default() {
            Properties(None)
        } else {
            Properties(Some(Arc::new(p)))
        }
    }
}

impl std::ops::Deref for Properties {
    type Target = AMQPProperties;

    fn deref(&self) -> &AMQPProperties {
        static EMPTY: OnceLock<AMQPProperties> = OnceLock::new();
        match &self.0 {
            Some(p) => p,
            None => EMPTY.get_or_init(AMQPProperties::default),
        }
    }
}

impl From<AMQPProperties> for Properties {
    fn from(p: AMQPProperties) -> Properties {
        Properties::new(p)
    }
}

/// Frame type octets (AMQP 0-9-1 section 4.2.3).
pub const FRAME_METHOD: u8 = 1;
/// Content header frame.
pub const FRAME_HEADER: u8 = 2;
/// Content body frame.
pub const FRAME_BODY: u8 = 3;
/// Heartbeat frame.
pub const FRAME_HEARTBEAT: u8 = 8;
/// The octet that ends every frame.
pub const FRAME_END: u8 = 0xCE;
/// The smallest frame_max a peer may negotiate.
pub const FRAME_MIN_SIZE: u32 = 4096;
/// Bytes of framing around a payload: type, channel, size, frame-end.
pub const FRAME_OVERHEAD: usize = 8;
/// The protocol header a 0-9-1 client sends first.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// The AMQP 0-9 header. RabbitMQ answers it as if it were 0-9-1 (the methods we speak
/// are the same), so clients that still send it keep working.
pub const PROTOCOL_HEADER_0_9: &[u8; 8] = b"AMQP\x01\x01\x00\x09";

/// A decoded frame.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A method frame with its parsed arguments.
    Method {
        /// Channel number.
        channel: u16,
        /// The parsed method.
        method: Box<AMQPClass>,
    },
    /// A content header: the class, announced body size, and properties both parsed and raw.
    Header {
        /// Channel number.
        channel: u16,
        /// Class of the content (60 for basic).
        class_id: u16,
        /// Size of the body that follows.
        body_size: u64,
        /// Parsed properties (headers, delivery mode, expiration...).
        properties: Properties,
        /// The encoded property flags and list, re-sent verbatim on delivery.
        raw_properties: Bytes,
    },
    /// A slice of content body.
    Body {
        /// Channel number.
        channel: u16,
        /// The payload, a slice of the read buffer.
        data: Bytes,
    },
    /// A heartbeat (channel 0).
    Heartbeat,
}

impl Frame {
    /// The channel the frame arrived on.
    pub fn channel(&self) -> u16 {
        match self {
            Frame::Method { channel, .. }
            | Frame::Header { channel, .. }
            | Frame::Body { channel, .. } => *channel,
            Frame::Heartbeat => 0,
        }
    }
}
