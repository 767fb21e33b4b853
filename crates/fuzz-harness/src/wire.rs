//! Harnesses for the wire layer: the frame decoder, method and content-header parsing
//! (depth check, then amq-protocol, as `FrameDecoder` calls them), content assembly, and
//! the pure part of the publish path (bytes → frames → per-channel commands, as the
//! connection actor does it).

use broker_wire::assembly::{AssemblyError, Command};
use broker_wire::depth::MAX_TABLE_DEPTH;
use broker_wire::frame::{FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_METHOD, FRAME_MIN_SIZE};
use broker_wire::protocol::{basic, channel, connection, exchange, queue, AMQPClass};
use broker_wire::types::{AMQPValue, FieldTable};
use broker_wire::{encode, Assembler, Frame, FrameDecoder};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;

/// The broker's default frame_max (config.rs).
const FRAME_MAX: u32 = 131_072;
/// The largest message the publish-stream harness accepts: smaller than the broker's
/// default so that a fuzzed header cannot make every run allocate hundreds of MiB.
const MAX_MESSAGE: u64 = 1 << 20;

/// What decoding a byte stream produced: each frame (as Debug text) and how it ended.
#[derive(Debug, PartialEq)]
struct Decoded {
    frames: Vec<String>,
    error: Option<String>,
}

/// Decodes `bytes` handing the decoder `chunk` bytes at a time, as socket reads would,
/// and checks what each call may do: `Ok(None)` consumes nothing, a frame consumes its
/// whole size (never more than frame_max).
fn decode_in_chunks(d: &FrameDecoder, bytes: &[u8], chunk: usize) -> Decoded {
    let mut buf = BytesMut::new();
    let mut out = Decoded {
        frames: Vec::new(),
        error: None,
    };
    for piece in bytes.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match d.decode(&mut buf) {
                Ok(Some(f)) => {
                    let used = before - buf.len();
                    assert!(used >= 8, "a frame consumed {used} bytes");
                    assert!(
                        used <= d.frame_max as usize,
                        "frame of {used} over frame_max"
                    );
                    if let Frame::Body { data, .. } = &f {
                        assert_eq!(data.len() + 8, used, "body payload is not the frame's");
                    }
                    out.frames.push(format!("{f:?}"));
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "an incomplete frame consumed bytes");
                    break;
                }
                Err(e) => {
                    out.error = Some(e.to_string());
                    return out;
                }
            }
        }
    }
    out
}

/// The frame decoder on arbitrary bytes. The first byte picks frame_max and the read
/// size; the stream must decode to the same frames, and the same error, whether it
/// arrives whole or in small reads.
pub fn frame_decoder(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let frame_max = if sel & 1 == 0 {
        FRAME_MAX
    } else {
        FRAME_MIN_SIZE
    };
    let d = FrameDecoder::new(frame_max);
    let whole = decode_in_chunks(&d, rest, rest.len());
    let split = decode_in_chunks(&d, rest, usize::from(sel >> 1));
    assert_eq!(whole, split, "result depends on how the stream was split");
}

/// Wraps a payload in a frame of `kind` on channel 1.
fn frame(kind: u8, payload: &[u8]) -> BytesMut {
    let mut b = BytesMut::with_capacity(payload.len() + 8);
    b.extend_from_slice(&[kind, 0, 1]);
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(payload);
    b.extend_from_slice(&[FRAME_END]);
    b
}

/// One method or content-header payload through the decoder (depth check, then
/// amq-protocol's parser). Whatever is accepted must survive our encoder: a method
/// re-encoded, or properties re-encoded, decode to the same value.
pub fn method_parse(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let payload = &rest[..rest.len().min(FRAME_MAX as usize - 8)];
    let d = FrameDecoder::new(FRAME_MAX);
    let kind = if sel & 1 == 0 {
        FRAME_METHOD
    } else {
        FRAME_HEADER
    };
    let mut buf = frame(kind, payload);
    match d.decode(&mut buf) {
        Ok(Some(Frame::Method { method, .. })) => {
            if let Some(t) = method_table(&method) {
                assert!(
                    table_depth(t) <= MAX_TABLE_DEPTH,
                    "depth check bypassed: {t:?}"
                );
            }
            let mut again = BytesMut::new();
            encode::method(&mut again, 1, &method);
            match d.decode(&mut again) {
                Ok(Some(Frame::Method { method: m2, .. })) => {
                    assert_eq!(
                        format!("{method:?}"),
                        format!("{m2:?}"),
                        "method round trip"
                    )
                }
                other => panic!("re-encoded {method:?} decodes as {other:?}"),
            }
        }
        Ok(Some(Frame::Header {
            properties,
            body_size,
            ..
        })) => {
            if let Some(t) = properties.headers() {
                assert!(
                    table_depth(t) <= MAX_TABLE_DEPTH,
                    "depth check bypassed: {t:?}"
                );
            }
            let raw = encode::properties(&properties);
            let mut p = vec![0, 60, 0, 0];
            p.extend_from_slice(&body_size.to_be_bytes());
            p.extend_from_slice(&raw);
            match d.decode(&mut frame(FRAME_HEADER, &p)) {
                // compared as text: a NaN in the headers is not equal to itself
                Ok(Some(Frame::Header { properties: p2, .. })) => assert_eq!(
                    format!("{properties:?}"),
                    format!("{p2:?}"),
                    "properties round trip"
                ),
                other => panic!("re-encoded {properties:?} decodes as {other:?}"),
            }
        }
        Ok(Some(other)) => panic!("a frame of type {kind} decoded as {other:?}"),
        Ok(None) => panic!("a complete frame was reported incomplete"),
        Err(_) => {}
    }
}

/// Nesting depth of a table as depth.rs counts it: the table is 1, each table or array
/// inside adds 1.
fn table_depth(t: &FieldTable) -> usize {
    1 + t.inner().values().map(value_depth).max().unwrap_or(0)
}

fn value_depth(v: &AMQPValue) -> usize {
    match v {
        AMQPValue::FieldTable(t) => table_depth(t),
        AMQPValue::FieldArray(a) => 1 + a.as_slice().iter().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The field table a method carries, if any (the ones depth.rs locates).
fn method_table(m: &AMQPClass) -> Option<&FieldTable> {
    match m {
        AMQPClass::Connection(connection::AMQPMethod::Start(s)) => Some(&s.server_properties),
        AMQPClass::Connection(connection::AMQPMethod::StartOk(s)) => Some(&s.client_properties),
        AMQPClass::Exchange(exchange::AMQPMethod::Declare(d)) => Some(&d.arguments),
        AMQPClass::Exchange(exchange::AMQPMethod::Bind(b)) => Some(&b.arguments),
        AMQPClass::Exchange(exchange::AMQPMethod::Unbind(b)) => Some(&b.arguments),
        AMQPClass::Queue(queue::AMQPMethod::Declare(d)) => Some(&d.arguments),
        AMQPClass::Queue(queue::AMQPMethod::Bind(b)) => Some(&b.arguments),
        AMQPClass::Queue(queue::AMQPMethod::Unbind(b)) => Some(&b.arguments),
        AMQPClass::Basic(basic::AMQPMethod::Consume(c)) => Some(&c.arguments),
        _ => None,
    }
}

fn publish_method() -> Frame {
    Frame::Method {
        channel: 1,
        method: Box::new(AMQPClass::Basic(basic::AMQPMethod::Publish(
            basic::Publish {
                exchange: "x".into(),
                routing_key: "k".into(),
                mandatory: false,
                immediate: false,
            },
        ))),
    }
}

/// What the assembler is expected to be doing, by a model written from the spec.
enum Model {
    Idle,
    AwaitHeader,
    AwaitBody { declared: u64, have: Vec<u8> },
}

/// What one feed is expected to give.
#[derive(Debug, PartialEq)]
enum Outcome {
    Nothing,
    Method,
    Publish(Vec<u8>),
    TooLarge,
    WireError,
}

/// The model's answer to one frame (`op` 0 publish, 1 header, 2 body, 3 other method).
fn model_step(m: &mut Model, op: u8, class: u16, size: u64, body: &[u8], max: u64) -> Outcome {
    let state = std::mem::replace(m, Model::Idle);
    match (state, op) {
        (Model::Idle, 0) => {
            *m = Model::AwaitHeader;
            Outcome::Nothing
        }
        (Model::Idle, 3) => Outcome::Method,
        (Model::AwaitHeader, 1) if class != 60 => Outcome::WireError,
        (Model::AwaitHeader, 1) if size > max => Outcome::TooLarge,
        (Model::AwaitHeader, 1) if size == 0 => Outcome::Publish(Vec::new()),
        (Model::AwaitHeader, 1) => {
            *m = Model::AwaitBody {
                declared: size,
                have: Vec::new(),
            };
            Outcome::Nothing
        }
        (Model::AwaitBody { declared, mut have }, 2) => {
            have.extend_from_slice(body);
            match (have.len() as u64).cmp(&declared) {
                std::cmp::Ordering::Greater => Outcome::WireError,
                std::cmp::Ordering::Equal => Outcome::Publish(have),
                std::cmp::Ordering::Less => {
                    *m = Model::AwaitBody { declared, have };
                    Outcome::Nothing
                }
            }
        }
        _ => Outcome::WireError,
    }
}

/// Content assembly against a model: pairs of bytes are frames (publish, header with a
/// size, body of some length, another method); every answer, and every assembled body,
/// must be the model's. After an error the assembler is reset, as the connection does.
pub fn assembly(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let max = u64::from(sel) * 4;
    let mut a = Assembler::new(max);
    let mut model = Model::Idle;
    let mut counter = 0u8;
    for pair in rest.chunks(2) {
        let (op, arg) = (pair[0] % 4, pair.get(1).copied().unwrap_or(0));
        let class = if pair[0] & 0x80 != 0 { 50 } else { 60 };
        let size = u64::from(arg) * 3;
        let body: Vec<u8> = (0..arg % 64)
            .map(|_| {
                counter = counter.wrapping_add(1);
                counter
            })
            .collect();
        let frame = match op {
            0 => publish_method(),
            1 => Frame::Header {
                channel: 1,
                class_id: class,
                body_size: size,
                properties: Default::default(),
                raw_properties: Bytes::from_static(&[0, 0]),
            },
            2 => Frame::Body {
                channel: 1,
                data: Bytes::from(body.clone()),
            },
            _ => Frame::Method {
                channel: 1,
                method: Box::new(AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                    delivery_tag: 1,
                    multiple: false,
                }))),
            },
        };
        let want = model_step(&mut model, op, class, size, &body, max);
        let got = match a.feed(frame) {
            Ok(None) => Outcome::Nothing,
            Ok(Some(Command::Method(_))) => Outcome::Method,
            Ok(Some(Command::Publish(_, c))) => Outcome::Publish(c.body.to_vec()),
            Err(AssemblyError::TooLarge { .. }) => Outcome::TooLarge,
            Err(AssemblyError::Wire(_)) => Outcome::WireError,
        };
        assert_eq!(got, want, "assembler and model disagree");
        assert_eq!(a.is_idle(), matches!(model, Model::Idle), "idle state");
        if matches!(got, Outcome::TooLarge | Outcome::WireError) {
            a.reset();
        }
    }
}

/// Runs a byte stream through decoder and per-channel assemblers the way the connection
/// actor does (channel 0 is the connection's, channel.open/close make and drop a
/// channel's assembler), giving `chunk` bytes per read. Returns what happened, in order.
fn publish_events(bytes: &[u8], chunk: usize) -> Vec<String> {
    let d = FrameDecoder::new(FRAME_MAX);
    let mut channels: HashMap<u16, Assembler> = HashMap::new();
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(f)) => {
                    if let Err(e) = channel_frame(&mut channels, f, &mut events) {
                        events.push(e);
                        return events;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    events.push(format!("connection error {e}"));
                    return events;
                }
            }
        }
    }
    events
}

/// One decoded frame, as `Connection::handle_frame` and `channel_frame` route it.
/// `Err` is a connection error.
fn channel_frame(
    channels: &mut HashMap<u16, Assembler>,
    f: Frame,
    events: &mut Vec<String>,
) -> Result<(), String> {
    let ch = f.channel();
    let chan_method = |f: &Frame| match f {
        Frame::Method { method, .. } => match &**method {
            AMQPClass::Channel(channel::AMQPMethod::Open(_)) => Some("open"),
            AMQPClass::Channel(channel::AMQPMethod::Close(_)) => Some("close"),
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => Some("close-ok"),
            _ => None,
        },
        _ => None,
    };
    match (&f, ch) {
        (Frame::Heartbeat, _) => return Ok(()),
        (Frame::Method { method, .. }, 0) => {
            events.push(format!("connection method {method:?}"));
            return Ok(());
        }
        (_, 0) => return Err("content frame on channel 0".into()),
        _ => {}
    }
    let Some(a) = channels.get_mut(&ch) else {
        if chan_method(&f) == Some("open") {
            channels.insert(ch, Assembler::new(MAX_MESSAGE));
            events.push(format!("open {ch}"));
            return Ok(());
        }
        return Err(format!("expected channel.open on {ch}"));
    };
    if a.is_idle() {
        match chan_method(&f) {
            Some("open") => return Err("second channel.open".into()),
            Some("close") => {
                channels.remove(&ch);
                events.push(format!("close {ch}"));
                return Ok(());
            }
            Some(_) => return Ok(()),
            None => {}
        }
    }
    match a.feed(f) {
        Ok(Some(Command::Publish(p, c))) => {
            assert!(c.body.len() as u64 <= MAX_MESSAGE, "body over max size");
            events.push(format!(
                "{ch}: publish {p:?} {:?} {:?}",
                c.properties, c.body
            ));
        }
        Ok(Some(Command::Method(m))) => events.push(format!("{ch}: {m:?}")),
        Ok(None) => {}
        Err(AssemblyError::TooLarge { size, .. }) => {
            a.reset();
            events.push(format!("{ch}: too large {size}"));
        }
        Err(AssemblyError::Wire(e)) => return Err(format!("{ch}: {e}")),
    }
    Ok(())
}

/// The publish path as far as it is pure: a byte stream becomes per-channel commands,
/// and the same commands whether the stream arrives whole or a few bytes per read.
pub fn publish_stream(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let whole = publish_events(rest, rest.len());
    let split = publish_events(rest, usize::from(sel));
    assert_eq!(whole, split, "commands depend on how the stream was split");
}

/// Builds a valid body frame (for seeds): `FRAME_BODY` on channel 1.
pub fn body_frame(payload: &[u8]) -> Vec<u8> {
    frame(FRAME_BODY, payload).to_vec()
}
