//! Splits a byte stream into frames.
//!
//! [`FrameDecoder::decode`] looks at the 7-byte frame header first and refuses a payload
//! larger than the negotiated frame_max right there, before a single payload byte is
//! buffered. Incomplete input is `Ok(None)`. Body payloads are returned as slices of the
//! read buffer (no copy); method and header payloads are depth-checked and then parsed by
//! amq-protocol.

use crate::depth::{self, DepthError, MAX_TABLE_DEPTH};
use crate::error::WireError;
use crate::frame::*;
use amq_protocol::frame::parsing::parse_content_header;
use amq_protocol::protocol::basic;
use amq_protocol::protocol::{parse_class, AMQPClass};
use bytes::{Buf, BytesMut};

/// Stateless apart from the frame size limit: [`FRAME_MIN_SIZE`] until connection.tune-ok,
/// then what it negotiated (RabbitMQ's limits).
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    /// Largest whole frame accepted (header + payload + frame-end), as negotiated.
    pub frame_max: u32,
}

impl FrameDecoder {
    /// A decoder accepting frames up to `frame_max` bytes in total.
    pub fn new(frame_max: u32) -> Self {
        Self { frame_max }
    }

    /// Decodes one frame from the front of `buf`, consuming it. `Ok(None)` means more
    /// bytes are needed; on `Err` the connection must be closed with the error's code.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        if buf.len() < 7 {
            return Ok(None);
        }
        let kind = buf[0];
        if !matches!(
            kind,
            FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
        ) {
            return Err(WireError::UnknownFrameType(kind));
        }
        let channel = u16::from_be_bytes([buf[1], buf[2]]);
        let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]);
        // RabbitMQ's FRAME_SIZE_FUDGE: a payload of up to frame_max bytes is accepted (the
        // frame itself may be 8 bytes longer), so clients that count frame_max as the
        // payload size keep working
        if self.frame_max != 0 && size > self.frame_max {
            return Err(WireError::FrameTooLarge {
                size,
                max: self.frame_max,
            });
        }
        let total = size as usize + FRAME_OVERHEAD;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let end = buf[total - 1];
        if end != FRAME_END {
            return Err(WireError::BadFrameEnd(end));
        }
        if kind == FRAME_BODY {
            // the one payload kept: a slice of the read buffer, never copied
            let mut whole = buf.split_to(total);
            whole.advance(7);
            whole.truncate(size as usize);
            return Ok(Some(Frame::Body {
                channel,
                data: whole.freeze(),
            }));
        }
        // method and header payloads are parsed in place and not kept: splitting them
        // off would write the read buffer's shared refcount, which the threads that
        // drop message bodies write too
        let payload = &buf[7..total - 1];
        let frame = match kind {
            FRAME_METHOD => decode_method(channel, payload)?,
            FRAME_HEADER => decode_header(channel, payload)?,
            _ => {
                if channel != 0 {
                    return Err(WireError::HeartbeatOnChannel(channel));
                }
                Frame::Heartbeat
            }
        };
        buf.advance(total);
        Ok(Some(frame))
    }
}

/// A content header: depth-checked, then parsed by amq-protocol. Properties and their
/// raw bytes are owned by the frame (none at all when there are no properties).
fn decode_header(channel: u16, payload: &[u8]) -> Result<Frame, WireError> {
    match depth::check_content_header(payload) {
        Err(DepthError::TooDeep) => return Err(WireError::TooDeep(MAX_TABLE_DEPTH)),
        Err(DepthError::Malformed) => return Err(WireError::MalformedHeader),
        Ok(()) => {}
    }
    let (rest, header) = parse_content_header(payload).map_err(|_| WireError::MalformedHeader)?;
    if !rest.is_empty() {
        return Err(WireError::MalformedHeader);
    }
    let empty = payload.len() == 14 && payload[12..14] == [0, 0];
    Ok(Frame::Header {
        channel,
        class_id: header.class_id,
        body_size: header.body_size,
        properties: if empty {
            Properties::none()
        } else {
            Properties::new(header.properties)
        },
        raw_properties: if empty {
            bytes::Bytes::from_static(&[0, 0])
        } else {
            bytes::Bytes::copy_from_slice(&payload[12..])
        },
    })
}

fn decode_method(channel: u16, payload: &[u8]) -> Result<Frame, WireError> {
    if payload.len() < 4 {
        return Err(WireError::Malformed {
            class_id: 0,
            method_id: 0,
        });
    }
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    let method_id = u16::from_be_bytes([payload[2], payload[3]]);
    if !is_known_method(class_id, method_id) {
        return Err(WireError::UnknownMethod {
            class_id,
            method_id,
        });
    }
    if (class_id, method_id) == (60, 10) && payload.len() >= 8 {
        // amq-protocol drops prefetch_size; RabbitMQ refuses a non-zero one
        let size = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
        if size != 0 {
            return Err(WireError::PrefetchSize(size));
        }
    }
    if (class_id, method_id) == (60, 40) {
        return match decode_publish(payload) {
            Some(p) => Ok(Frame::Method {
                channel,
                method: Box::new(AMQPClass::Basic(basic::AMQPMethod::Publish(p))),
            }),
            None => Err(WireError::Malformed {
                class_id,
                method_id,
            }),
        };
    }
    match depth::check_method(payload) {
        Err(DepthError::TooDeep) => return Err(WireError::TooDeep(MAX_TABLE_DEPTH)),
        Err(DepthError::Malformed) => {
            return Err(WireError::Malformed {
                class_id,
                method_id,
            })
        }
        Ok(()) => {}
    }
    match parse_class(payload) {
        Ok((rest, method)) if rest.is_empty() => Ok(Frame::Method {
            channel,
            method: Box::new(method),
        }),
        _ => Err(WireError::Malformed {
            class_id,
            method_id,
        }),
    }
}

/// basic.publish, parsed by hand: it is most of the method frames a broker reads, and
/// amq-protocol's parser collects each short string byte by byte and allocates for its bit
/// flags. Accepts exactly what amq-protocol accepts (UTF-8 short strings, nothing after
/// the bits); the property test below holds the two to the same answers.
fn decode_publish(p: &[u8]) -> Option<basic::Publish> {
    // class id, method id, reserved-1 (the old ticket)
    let mut at = 6;
    let mut short = || -> Option<String> {
        let n = usize::from(*p.get(at)?);
        let bytes = p.get(at + 1..at + 1 + n)?;
        at += 1 + n;
        std::str::from_utf8(bytes).ok().map(str::to_owned)
    };
    let exchange = short()?;
    let routing_key = short()?;
    if p.len() != at + 1 {
        return None;
    }
    let bits = p[at];
    Some(basic::Publish {
        exchange: exchange.into(),
        routing_key: routing_key.into(),
        mandatory: bits & 1 != 0,
        immediate: bits & 2 != 0,
    })
}

/// Whether AMQP 0-9-1 (with RabbitMQ's extensions) defines this class and method.
pub fn is_known_method(class_id: u16, method_id: u16) -> bool {
    let methods: &[u16] = match class_id {
        10 => &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61, 70, 71],
        20 => &[10, 11, 20, 21, 40, 41],
        30 => &[10, 11],
        40 => &[10, 11, 20, 21, 30, 31, 40, 51],
        50 => &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51],
        60 => &[
            10, 11, 20, 21, 30, 31, 40, 50, 60, 70, 71, 72, 80, 90, 100, 110, 111, 120,
        ],
        85 => &[10, 11],
        90 => &[10, 11, 20, 21, 30, 31],
        _ => return false,
    };
    methods.contains(&method_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode;
    use amq_protocol::protocol::{basic, AMQPClass};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn sample_stream() -> Vec<u8> {
        let mut out = BytesMut::new();
        encode::method(
            &mut out,
            1,
            &AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "ex".into(),
                routing_key: "rk".into(),
                mandatory: true,
                immediate: false,
            })),
        );
        let props = encode::properties(&basic::AMQPProperties::default().with_delivery_mode(2));
        encode::content(
            &mut out,
            1,
            &props,
            &Bytes::from_static(b"hello world"),
            4096,
        );
        encode::heartbeat(&mut out);
        out.to_vec()
    }

    proptest! {
        /// The hand-written basic.publish parser gives amq-protocol's answer for any
        /// payload: the same method, or an error for both.
        #[test]
        fn publish_fast_path_agrees_with_amq_protocol(
            exchange in proptest::collection::vec(any::<u8>(), 0..40),
            key in proptest::collection::vec(any::<u8>(), 0..40),
            bits in any::<u8>(),
            cut in 0usize..100,
            extra in proptest::collection::vec(any::<u8>(), 0..3),
        ) {
            let mut p = vec![0, 60, 0, 40, 0, 0, exchange.len() as u8];
            p.extend_from_slice(&exchange);
            p.push(key.len() as u8);
            p.extend_from_slice(&key);
            p.push(bits);
            p.extend_from_slice(&extra);
            if cut < p.len() {
                p.truncate(cut.max(4));
            }
            let theirs = match parse_class(&p[..]) {
                Ok((rest, AMQPClass::Basic(basic::AMQPMethod::Publish(m)))) if rest.is_empty() => Some(m),
                _ => None,
            };
            prop_assert_eq!(decode_publish(&p), theirs);
        }
    }

    #[test]
    fn decodes_a_publish_sequence() {
        let d = FrameDecoder::new(131072);
        let mut buf = BytesMut::from(&sample_stream()[..]);
        let mut frames = vec![];
        while let Some(f) = d.decode(&mut buf).unwrap() {
            frames.push(f);
        }
        assert_eq!(frames.len(), 4);
        assert!(matches!(frames[2], Frame::Body { ref data, .. } if &data[..] == b"hello world"));
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header() {
        let d = FrameDecoder::new(4096);
        let mut buf = BytesMut::from(&[3u8, 0, 1, 0, 1, 0, 0][..]);
        assert!(matches!(
            d.decode(&mut buf),
            Err(WireError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn payload_up_to_frame_max_is_accepted_as_rabbitmq_does() {
        let d = FrameDecoder::new(FRAME_MIN_SIZE);
        let mut body = vec![FRAME_BODY, 0, 1];
        body.extend_from_slice(&FRAME_MIN_SIZE.to_be_bytes());
        body.extend(std::iter::repeat_n(0, FRAME_MIN_SIZE as usize));
        body.push(FRAME_END);
        let mut buf = BytesMut::from(&body[..]);
        assert!(matches!(d.decode(&mut buf), Ok(Some(Frame::Body { .. }))));
        let mut buf = BytesMut::from(&[FRAME_BODY, 0, 1, 0, 0, 0x10, 0x01][..]);
        assert!(matches!(
            d.decode(&mut buf),
            Err(WireError::FrameTooLarge { size: 4097, .. })
        ));
    }

    proptest! {
        /// Every strict prefix of a valid stream is incomplete, never an error.
        #[test]
        fn every_prefix_is_incomplete(cut in 0usize..200) {
            let stream = sample_stream();
            let cut = cut % stream.len();
            let d = FrameDecoder::new(131072);
            let mut buf = BytesMut::from(&stream[..cut]);
            loop {
                match d.decode(&mut buf) {
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(e) => panic!("prefix {cut} gave error {e}"),
                }
            }
        }

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let d = FrameDecoder::new(131072);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = d.decode(&mut buf) {}
        }
    }
}
