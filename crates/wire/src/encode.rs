//! Encodes outgoing frames into a connection's write buffer.
//!
//! Rare methods go through amq-protocol's generators. The per-message frames
//! (basic.deliver, content header, body) are written by hand: the content header reuses the
//! property bytes exactly as the publisher sent them, so headers and properties arrive
//! byte-for-byte as published and are never re-encoded.

use crate::frame::*;
use amq_protocol::protocol::{basic, basic::AMQPProperties, gen_class, AMQPClass};
use bytes::{BufMut, Bytes, BytesMut};
use cookie_factory::gen;

/// Appends a method frame.
pub fn method(out: &mut BytesMut, channel: u16, class: &AMQPClass) {
    let start = out.len();
    out.put_u8(FRAME_METHOD);
    out.put_u16(channel);
    out.put_u32(0);
    let scratch = Vec::with_capacity(64);
    match gen(gen_class(class), scratch) {
        Ok((bytes, _)) => out.extend_from_slice(&bytes),
        Err(_) => {
            // amq-protocol only fails on a writer error, which a Vec never raises.
            out.truncate(start);
            return;
        }
    }
    let size = (out.len() - start - 7) as u32;
    out[start + 3..start + 7].copy_from_slice(&size.to_be_bytes());
    out.put_u8(FRAME_END);
}

/// Encodes properties into the flags-and-list form carried by a content header.
pub fn properties(props: &AMQPProperties) -> Bytes {
    match gen(basic::gen_properties(props), Vec::with_capacity(32)) {
        Ok((bytes, _)) => Bytes::from(bytes),
        Err(_) => Bytes::from_static(&[0, 0]),
    }
}

/// The property bytes `raw` with one more header, `key` = `value` as a signed 64-bit
/// integer (`l`), added without decoding and re-encoding the rest: the entry is
/// appended to the headers table (or a table is inserted) in place. The caller makes
/// sure the headers do not hold `key` already. `None` where the bytes are not what they
/// should be or use a second flags word; re-encode then.
pub fn with_long_header(raw: &[u8], key: &str, value: i64) -> Option<Bytes> {
    const CONTENT_TYPE: u16 = 1 << 15;
    const CONTENT_ENCODING: u16 = 1 << 14;
    const HEADERS: u16 = 1 << 13;
    let flags = u16::from_be_bytes(raw.get(0..2)?.try_into().ok()?);
    if flags & 1 != 0 || key.len() > 255 {
        return None;
    }
    let mut pos = 2usize;
    for bit in [CONTENT_TYPE, CONTENT_ENCODING] {
        if flags & bit != 0 {
            pos += 1 + usize::from(*raw.get(pos)?);
        }
    }
    let mut entry = Vec::with_capacity(1 + key.len() + 9);
    entry.push(key.len() as u8);
    entry.extend_from_slice(key.as_bytes());
    entry.push(b'l');
    entry.extend_from_slice(&value.to_be_bytes());
    let mut out = BytesMut::with_capacity(raw.len() + entry.len() + 4);
    if flags & HEADERS != 0 {
        let len = u32::from_be_bytes(raw.get(pos..pos + 4)?.try_into().ok()?) as usize;
        let end = pos + 4 + len;
        let table = raw.get(pos + 4..end)?;
        out.extend_from_slice(&raw[..pos]);
        out.put_u32((len + entry.len()) as u32);
        out.extend_from_slice(table);
        out.extend_from_slice(&entry);
        out.extend_from_slice(&raw[end..]);
    } else {
        out.put_u16(flags | HEADERS);
        out.extend_from_slice(raw.get(2..pos)?);
        out.put_u32(entry.len() as u32);
        out.extend_from_slice(&entry);
        out.extend_from_slice(&raw[pos..]);
    }
    Some(out.freeze())
}

/// Bytes of a content header frame carrying `raw_props_len` bytes of properties: frame
/// header, class, weight, body size, properties, frame-end.
pub fn header_frame_len(raw_props_len: usize) -> usize {
    7 + 12 + raw_props_len + 1
}

/// Whether a content header with these properties fits in one frame of `frame_max` (0: no
/// limit). A header cannot be split across frames, so a message whose properties are
/// larger than a connection's frame_max cannot be sent on that connection at all.
pub fn header_fits(raw_props_len: usize, frame_max: u32) -> bool {
    frame_max == 0 || header_frame_len(raw_props_len) <= frame_max as usize
}

/// Appends a content header and the body frames of one message, splitting the body to fit
/// `frame_max`.
pub fn content(out: &mut BytesMut, channel: u16, raw_props: &[u8], body: &Bytes, frame_max: u32) {
    out.reserve(7 + 12 + raw_props.len() + 1 + body.len() + 8);
    out.put_u8(FRAME_HEADER);
    out.put_u16(channel);
    out.put_u32((12 + raw_props.len()) as u32);
    out.put_u16(60);
    out.put_u16(0);
    out.put_u64(body.len() as u64);
    out.extend_from_slice(raw_props);
    out.put_u8(FRAME_END);
    let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
    for piece in body.chunks(chunk) {
        out.put_u8(FRAME_BODY);
        out.put_u16(channel);
        out.put_u32(piece.len() as u32);
        out.extend_from_slice(piece);
        out.put_u8(FRAME_END);
    }
}

fn put_shortstr(out: &mut BytesMut, s: &str) {
    let b = s.as_bytes();
    let n = b.len().min(255);
    out.put_u8(n as u8);
    out.extend_from_slice(&b[..n]);
}

/// Appends a basic.deliver method frame (hand-encoded: it is on every message's path).
pub fn deliver(
    out: &mut BytesMut,
    channel: u16,
    consumer_tag: &str,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
) {
    let start = out.len();
    out.put_u8(FRAME_METHOD);
    out.put_u16(channel);
    out.put_u32(0);
    out.put_u16(60);
    out.put_u16(60);
    put_shortstr(out, consumer_tag);
    out.put_u64(delivery_tag);
    out.put_u8(redelivered as u8);
    put_shortstr(out, exchange);
    put_shortstr(out, routing_key);
    let size = (out.len() - start - 7) as u32;
    out[start + 3..start + 7].copy_from_slice(&size.to_be_bytes());
    out.put_u8(FRAME_END);
}

/// Appends a heartbeat frame.
pub fn heartbeat(out: &mut BytesMut) {
    out.extend_from_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_long_header_is_spliced_in_as_a_full_encoding_would_carry_it() {
        use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
        let mut h = FieldTable::default();
        h.insert("a".into(), AMQPValue::LongString(LongString::from("b")));
        let cases = [
            AMQPProperties::default(),
            AMQPProperties::default().with_delivery_mode(2),
            AMQPProperties::default()
                .with_content_type(ShortString::from("text/plain"))
                .with_headers(h.clone())
                .with_priority(3),
            AMQPProperties::default()
                .with_content_encoding(ShortString::from("gzip"))
                .with_message_id(ShortString::from("id-1")),
        ];
        for props in cases {
            let raw = super::properties(&props);
            let spliced = super::with_long_header(&raw, "x-stream-offset", 42).unwrap();
            let (_, back) = basic::parse_properties(&spliced[..]).unwrap();
            let mut want = props.headers().clone().unwrap_or_default();
            want.insert("x-stream-offset".into(), AMQPValue::LongLongInt(42));
            assert_eq!(back.headers().as_ref(), Some(&want));
            assert_eq!(
                back.clone().with_headers(FieldTable::default()),
                props.clone().with_headers(FieldTable::default())
            );
        }
        assert!(super::with_long_header(&[0, 1], "k", 1).is_none());
        assert!(super::with_long_header(&[0x20, 0, 0, 0, 0, 9], "k", 1).is_none());
    }

    use super::*;
    use crate::decode::FrameDecoder;

    #[test]
    fn deliver_matches_amq_protocol() {
        let mut a = BytesMut::new();
        deliver(&mut a, 3, "ctag", 42, true, "ex", "rk");
        let mut b = BytesMut::new();
        method(
            &mut b,
            3,
            &AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: "ctag".into(),
                delivery_tag: 42,
                redelivered: true,
                exchange: "ex".into(),
                routing_key: "rk".into(),
            })),
        );
        assert_eq!(a, b);
    }

    #[test]
    fn header_fit_counts_the_whole_frame() {
        let mut out = BytesMut::new();
        let props = vec![0u8; 100];
        content(&mut out, 1, &props, &Bytes::new(), 4096);
        assert_eq!(out.len(), header_frame_len(100));
        assert!(header_fits(4096 - 20, 4096));
        assert!(!header_fits(4096 - 19, 4096));
        assert!(header_fits(1 << 20, 0));
    }

    #[test]
    fn large_bodies_are_split_by_frame_max() {
        let mut out = BytesMut::new();
        let body = Bytes::from(vec![7u8; 10_000]);
        content(&mut out, 1, &[0, 0], &body, 4096);
        let d = FrameDecoder::new(4096);
        let mut n = 0;
        let mut total = 0;
        while let Some(f) = d.decode(&mut out).unwrap() {
            if let Frame::Body { data, .. } = f {
                total += data.len();
            }
            n += 1;
        }
        assert_eq!(total, 10_000);
        assert_eq!(n, 1 + 3);
    }
}
