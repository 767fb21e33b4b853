//! Errors found while decoding or assembling frames. Each carries the AMQP reply code the
//! connection must close with; the mapping to codes lives in [`WireError::reply_code`].

use thiserror::Error;

/// A protocol violation found on the wire. All of these are connection errors in AMQP
/// 0-9-1 (hard errors), except where noted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The frame header announced a payload larger than the negotiated frame_max.
    #[error("frame size {size} exceeds negotiated frame_max {max}")]
    FrameTooLarge { size: u32, max: u32 },
    /// The octet after the payload was not 0xCE.
    #[error("frame end octet missing (got {0:#04x})")]
    BadFrameEnd(u8),
    /// The frame type octet is not one of 1, 2, 3, 8.
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    /// A method frame that amq-protocol could not parse (bad arguments, unknown field type).
    #[error("malformed method frame for class {class_id} method {method_id}")]
    Malformed { class_id: u16, method_id: u16 },
    /// A class or method id this protocol version does not define.
    #[error("unknown class {class_id} method {method_id}")]
    UnknownMethod { class_id: u16, method_id: u16 },
    /// A content header frame that could not be parsed.
    #[error("malformed content header")]
    MalformedHeader,
    /// Field tables nested deeper than [`crate::depth::MAX_TABLE_DEPTH`].
    #[error("field table nesting exceeds {0} levels")]
    TooDeep(usize),
    /// A heartbeat on a channel other than 0.
    #[error("heartbeat frame on channel {0}")]
    HeartbeatOnChannel(u16),
    /// A frame arrived that is not allowed at this point of a content sequence.
    #[error("unexpected {what} frame on channel {channel}")]
    UnexpectedFrame { channel: u16, what: &'static str },
    /// A body frame pushed the content past the size its header declared.
    #[error("content body longer than the {declared} bytes declared")]
    BodyTooLong { declared: u64 },
    /// basic.qos with a prefetch size, which RabbitMQ does not implement (540).
    #[error("prefetch_size!=0 ({0})")]
    PrefetchSize(u32),
    /// The content header's class differs from the method's class (505, reported against
    /// basic.publish, with RabbitMQ's text).
    #[error("expected content header for class 60, got one for class {0} instead")]
    HeaderClassMismatch(u16),
}

impl WireError {
    /// The AMQP reply code for this error (all connection-level).
    pub fn reply_code(&self) -> u16 {
        match self {
            WireError::UnknownMethod { .. } | WireError::PrefetchSize(_) => 540,
            WireError::UnexpectedFrame { .. }
            | WireError::HeartbeatOnChannel(_)
            | WireError::HeaderClassMismatch(_) => 505,
            _ => 501,
        }
    }

    /// Class and method ids to report in connection.close, where known.
    pub fn class_method(&self) -> (u16, u16) {
        match self {
            WireError::Malformed {
                class_id,
                method_id,
            }
            | WireError::UnknownMethod {
                class_id,
                method_id,
            } => (*class_id, *method_id),
            WireError::PrefetchSize(_) => (60, 10),
            WireError::HeaderClassMismatch(_) => (60, 40),
            _ => (0, 0),
        }
    }
}
