//! The records of a spill file: `len u32 | crc32 u32 | payload`, the payload an entry's
//! fields (id, priority, redelivered, returns, body length, expiry, size, arrival, kind)
//! then the message (exchange, routing key, raw properties, body) or, for a persisted
//! message, its store id. Reading back shares what consecutive records repeat.

use broker_core::message::{Properties, Slot};
use broker_core::queue::Entry;
use broker_core::Message;
use bytes::Bytes;
use std::sync::Arc;

/// Record header: payload length and CRC32, big-endian u32 each.
pub(super) const HEADER: usize = 8;
/// Fixed part of a payload: id, priority, redelivered, returns, body length, expiry,
/// size, arrival, kind.
pub(super) const FIXED: usize = 8 + 1 + 1 + 4 + 4 + 8 + 4 + 8 + 1;
/// Payload kinds: the whole message, or the store id of a persisted one.
const KIND_MESSAGE: u8 = 0;
const KIND_STORED: u8 = 1;

pub(super) fn encode(e: &Entry, out: &mut Vec<u8>) -> Option<u64> {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    let (kind, stored) = match &e.msg {
        Slot::Loaded(m) => match m.persist_id {
            Some(id) => (KIND_STORED, Some((id, m.arrival_ms))),
            None => (KIND_MESSAGE, None),
        },
        Slot::Paged { persist_id, .. } => (KIND_STORED, Some((*persist_id, 0))),
    };
    let arrival = match &e.msg {
        Slot::Loaded(m) => m.arrival_ms,
        Slot::Paged { .. } => stored.map_or(0, |s| s.1),
    };
    out.extend_from_slice(&e.id.to_be_bytes());
    out.push(e.priority);
    out.push(u8::from(e.redelivered));
    out.extend_from_slice(&e.returns.to_be_bytes());
    out.extend_from_slice(&e.body_len.to_be_bytes());
    out.extend_from_slice(&e.expires_at.unwrap_or(u64::MAX).to_be_bytes());
    out.extend_from_slice(
        &u32::try_from(e.msg.size())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(&arrival.to_be_bytes());
    out.push(kind);
    match (&e.msg, stored) {
        (_, Some((id, _))) => out.extend_from_slice(&id.to_be_bytes()),
        (Slot::Loaded(m), None) => encode_message(m, out),
        (Slot::Paged { .. }, None) => {}
    }
    let payload = &out[start + HEADER..];
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
    stored.map(|s| s.0)
}

/// A message in a spill record: exchange and routing key (u32 length each), properties
/// as the publisher encoded them (u32 length), then the body.
fn encode_message(m: &Message, out: &mut Vec<u8>) {
    for part in [
        m.exchange.as_bytes(),
        m.routing_key.as_bytes(),
        &m.raw_properties,
    ] {
        out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(&m.body);
}

/// What the records read back last had: the messages of one queue mostly share their
/// exchange, routing key and properties, which are then shared instead of allocated and
/// parsed again for each (it halved the cost of reading a message back).
#[derive(Debug, Default)]
pub(super) struct Shared {
    exchange: Option<Arc<str>>,
    routing_key: Option<Arc<str>>,
    properties: Option<(Bytes, Properties)>,
}

fn take<'a>(p: &mut &'a [u8]) -> Result<&'a [u8], String> {
    if p.len() < 4 {
        return Err("a spill record is cut short".into());
    }
    let n = be_u32(p) as usize;
    if p.len() - 4 < n {
        return Err("a spill record is cut short".into());
    }
    let (a, b) = p[4..].split_at(n);
    *p = b;
    Ok(a)
}

fn name(bytes: &[u8], last: &mut Option<Arc<str>>) -> Result<Arc<str>, String> {
    if let Some(l) = last.as_ref().filter(|l| l.as_bytes() == bytes) {
        return Ok(l.clone());
    }
    let s: Arc<str> = std::str::from_utf8(bytes)
        .map_err(|_| "bad utf-8 in a spill record".to_owned())?
        .into();
    *last = Some(s.clone());
    Ok(s)
}

fn decode_message(mut p: &[u8], arrival_ms: u64, shared: &mut Shared) -> Result<Message, String> {
    let exchange = name(take(&mut p)?, &mut shared.exchange)?;
    let routing_key = name(take(&mut p)?, &mut shared.routing_key)?;
    let raw = take(&mut p)?;
    let (raw_properties, properties) = match &shared.properties {
        Some((r, props)) if &r[..] == raw => (r.clone(), props.clone()),
        _ => {
            let (_, parsed) = amq_protocol::protocol::basic::parse_properties(raw)
                .map_err(|_| "bad properties in a spill record".to_owned())?;
            let pair = (Bytes::copy_from_slice(raw), Properties::from(parsed));
            shared.properties = Some(pair.clone());
            pair
        }
    };
    Ok(Message {
        exchange,
        routing_key,
        properties,
        raw_properties,
        body: Bytes::copy_from_slice(p),
        persist_id: None,
        arrival_ms,
    })
}

pub(super) fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Decodes a payload whose CRC matched.
pub(super) fn decode(p: &[u8], shared: &mut Shared) -> Result<Entry, String> {
    if p.len() < FIXED {
        return Err("short spill record".into());
    }
    let id = be_u64(&p[0..]);
    let priority = p[8];
    let redelivered = p[9] != 0;
    let returns = be_u32(&p[10..]);
    let body_len = be_u32(&p[14..]);
    let expires = be_u64(&p[18..]);
    let size = be_u32(&p[26..]);
    let arrival = be_u64(&p[30..]);
    let kind = p[38];
    let rest = &p[FIXED..];
    let msg = match kind {
        KIND_STORED if rest.len() >= 8 => Slot::Paged {
            persist_id: be_u64(rest),
            size,
        },
        KIND_MESSAGE => Slot::Loaded(Arc::new(decode_message(rest, arrival, shared)?)),
        _ => return Err(format!("unknown spill record kind {kind}")),
    };
    Ok(Entry {
        id,
        msg,
        redelivered,
        priority,
        returns,
        body_len,
        expires_at: (expires != u64::MAX).then_some(expires),
    })
}
