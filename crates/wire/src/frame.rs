//! One AMQP frame, decoded. Bodies stay as [`Bytes`] slices of the read buffer, so a
//! message body is never copied between the socket and the queues.

use amq_protocol::protocol::{basic::AMQPProperties, AMQPClass};
use bytes::Bytes;

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
        properties: std::sync::Arc<AMQPProperties>,
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
