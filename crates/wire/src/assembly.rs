//! Content assembly: joins basic.publish, its content header and its body frames into one
//! [`Command`], per channel.
//!
//! The assembler refuses a header that announces a body over the maximum message size
//! before any body byte is buffered, and a body that runs past the size its header
//! declared. A single-frame body is passed on as the read buffer's own slice.

use crate::error::WireError;
use crate::frame::Frame;
use amq_protocol::protocol::{basic, AMQPClass};
use bytes::{Bytes, BytesMut};

/// The properties and body of a published message.
#[derive(Debug, Clone)]
pub struct Content {
    /// Parsed properties.
    pub properties: crate::frame::Properties,
    /// Properties as the publisher encoded them (flags and list).
    pub raw_properties: Bytes,
    /// The whole body.
    pub body: Bytes,
}

/// A complete command for a channel.
#[derive(Debug, Clone)]
pub enum Command {
    /// A method without content.
    Method(Box<AMQPClass>),
    /// basic.publish with its content.
    Publish(basic::Publish, Content),
}

/// Why assembly failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssemblyError {
    /// A framing violation: connection error.
    Wire(WireError),
    /// The header announced a body larger than allowed: channel error 406 in RabbitMQ.
    TooLarge {
        /// Announced size.
        size: u64,
        /// Configured maximum.
        max: u64,
    },
}

enum State {
    Idle,
    AwaitHeader(basic::Publish),
    AwaitBody {
        publish: basic::Publish,
        properties: crate::frame::Properties,
        raw_properties: Bytes,
        declared: u64,
        first: Option<Bytes>,
        rest: BytesMut,
    },
}

/// Most a body being assembled reserves ahead of the data that came.
const RESERVE_MAX: usize = 1 << 20;

/// Per-channel assembly state.
pub struct Assembler {
    state: State,
    max_message_size: u64,
}

impl Assembler {
    /// A fresh assembler that refuses messages over `max_message_size` bytes.
    pub fn new(max_message_size: u64) -> Self {
        Self {
            state: State::Idle,
            max_message_size,
        }
    }

    /// Whether a content sequence is in progress.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// Forgets any partial content (used when the channel is closed).
    pub fn reset(&mut self) {
        self.state = State::Idle;
    }

    /// Feeds one frame of this channel. `Ok(None)` means the command is not complete yet.
    pub fn feed(&mut self, frame: Frame) -> Result<Option<Command>, AssemblyError> {
        let channel = frame.channel();
        let state = std::mem::replace(&mut self.state, State::Idle);
        match (state, frame) {
            (State::Idle, Frame::Method { method, .. }) => match *method {
                AMQPClass::Basic(basic::AMQPMethod::Publish(p)) => {
                    self.state = State::AwaitHeader(p);
                    Ok(None)
                }
                other => Ok(Some(Command::Method(Box::new(other)))),
            },
            (State::Idle, Frame::Header { .. }) => {
                Err(AssemblyError::Wire(WireError::UnexpectedFrame {
                    channel,
                    what: "content header",
                }))
            }
            (State::Idle, Frame::Body { .. }) => {
                Err(AssemblyError::Wire(WireError::UnexpectedFrame {
                    channel,
                    what: "content body",
                }))
            }
            (
                State::AwaitHeader(publish),
                Frame::Header {
                    class_id,
                    body_size,
                    properties,
                    raw_properties,
                    ..
                },
            ) => {
                if class_id != 60 {
                    return Err(AssemblyError::Wire(WireError::HeaderClassMismatch(
                        class_id,
                    )));
                }
                if body_size > self.max_message_size {
                    return Err(AssemblyError::TooLarge {
                        size: body_size,
                        max: self.max_message_size,
                    });
                }
                if body_size == 0 {
                    return Ok(Some(Command::Publish(
                        publish,
                        Content {
                            properties,
                            raw_properties,
                            body: Bytes::new(),
                        },
                    )));
                }
                self.state = State::AwaitBody {
                    publish,
                    properties,
                    raw_properties,
                    declared: body_size,
                    first: None,
                    rest: BytesMut::new(),
                };
                Ok(None)
            }
            (State::AwaitHeader(_), _) => Err(AssemblyError::Wire(WireError::UnexpectedFrame {
                channel,
                what: "non content header",
            })),
            (
                State::AwaitBody {
                    publish,
                    properties,
                    raw_properties,
                    declared,
                    mut first,
                    mut rest,
                },
                Frame::Body { data, .. },
            ) => {
                // once a second frame arrives, `rest` holds everything received so far
                let have = if rest.is_empty() {
                    first.as_ref().map_or(0, |b| b.len())
                } else {
                    rest.len()
                };
                let now = have as u64 + data.len() as u64;
                if now > declared {
                    return Err(AssemblyError::Wire(WireError::BodyTooLong { declared }));
                }
                match first {
                    None => first = Some(data),
                    Some(ref f) => {
                        if rest.is_empty() {
                            // grown as data comes, not to what the header declares: a
                            // header is not memory the client has sent
                            rest.reserve((declared as usize).min(RESERVE_MAX));
                            rest.extend_from_slice(f);
                        }
                        rest.extend_from_slice(&data);
                    }
                }
                if now == declared {
                    let body = if rest.is_empty() {
                        first.unwrap_or_default()
                    } else {
                        rest.freeze()
                    };
                    return Ok(Some(Command::Publish(
                        publish,
                        Content {
                            properties,
                            raw_properties,
                            body,
                        },
                    )));
                }
                self.state = State::AwaitBody {
                    publish,
                    properties,
                    raw_properties,
                    declared,
                    first,
                    rest,
                };
                Ok(None)
            }
            (State::AwaitBody { .. }, _) => Err(AssemblyError::Wire(WireError::UnexpectedFrame {
                channel,
                what: "non content body",
            })),
            (_, Frame::Heartbeat) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish_frame() -> Frame {
        Frame::Method {
            channel: 1,
            method: Box::new(AMQPClass::Basic(basic::AMQPMethod::Publish(
                basic::Publish {
                    exchange: "".into(),
                    routing_key: "q".into(),
                    mandatory: false,
                    immediate: false,
                },
            ))),
        }
    }

    fn header(size: u64) -> Frame {
        Frame::Header {
            channel: 1,
            class_id: 60,
            body_size: size,
            properties: Default::default(),
            raw_properties: Bytes::from_static(&[0, 0]),
        }
    }

    fn body(b: &'static [u8]) -> Frame {
        Frame::Body {
            channel: 1,
            data: Bytes::from_static(b),
        }
    }

    #[test]
    fn multi_frame_body_is_joined() {
        let mut a = Assembler::new(1000);
        assert!(a.feed(publish_frame()).unwrap().is_none());
        assert!(a.feed(header(6)).unwrap().is_none());
        assert!(a.feed(body(b"ab")).unwrap().is_none());
        assert!(a.feed(body(b"cd")).unwrap().is_none());
        assert!(a.feed(body(b"e")).unwrap().is_none());
        match a.feed(body(b"f")).unwrap() {
            Some(Command::Publish(_, c)) => assert_eq!(&c.body[..], b"abcdef"),
            other => panic!("{other:?}"),
        }
        assert!(a.is_idle());
    }

    #[test]
    fn too_large_is_refused_at_the_header() {
        let mut a = Assembler::new(10);
        a.feed(publish_frame()).unwrap();
        assert_eq!(
            a.feed(header(11)).unwrap_err(),
            AssemblyError::TooLarge { size: 11, max: 10 }
        );
    }

    #[test]
    fn body_longer_than_declared_is_an_error() {
        let mut a = Assembler::new(100);
        a.feed(publish_frame()).unwrap();
        a.feed(header(2)).unwrap();
        assert!(matches!(
            a.feed(body(b"abc")),
            Err(AssemblyError::Wire(WireError::BodyTooLong { .. }))
        ));
    }

    #[test]
    fn method_during_content_is_unexpected() {
        let mut a = Assembler::new(100);
        a.feed(publish_frame()).unwrap();
        assert!(matches!(
            a.feed(publish_frame()),
            Err(AssemblyError::Wire(WireError::UnexpectedFrame { .. }))
        ));
    }
}
