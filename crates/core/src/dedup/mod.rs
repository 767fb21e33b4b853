//! Message deduplication, as LavinMQ has it (and the names it took from the RabbitMQ
//! plugin rabbitmq-message-deduplication): `x-message-deduplication: true` on an
//! exchange or a queue, with `x-cache-size` (keys kept, default 128), `x-cache-ttl` (ms
//! a key is kept, default forever) and `x-deduplication-header` (the message header
//! holding the key, default `x-deduplication-header`). A message whose key is in the
//! cache is not routed (exchange) or not enqueued (queue); one without the header
//! passes. A message's own `x-cache-ttl` header overrides the TTL for its key.
//!
//! This module reads and checks the arguments ([`DedupArgs`]), encodes a message's key
//! ([`key_of`]) and the stored form of a cache entry, and names what a store provides to
//! keep a durable queue's cache over restarts ([`DedupStore`]); the cache itself is
//! [`cache::Cache`].

pub mod cache;

use crate::args::{int_value, type_name, MAX_MILLIS};
use crate::error::AmqpError;
use crate::store::StoreError;
use amq_protocol::types::{AMQPValue, FieldTable};
use sha2::{Digest, Sha256};

/// The argument that turns deduplication on.
pub const ENABLE: &str = "x-message-deduplication";
/// The header holding the key when `x-deduplication-header` names none.
pub const DEFAULT_HEADER: &str = "x-deduplication-header";
/// The cache size when `x-cache-size` is not given (LavinMQ's default).
pub const DEFAULT_CACHE_SIZE: u64 = 128;
/// The largest `x-cache-size` accepted: our bound (LavinMQ has none), so one cache
/// costs at most ~150 MB (a key of up to [`MAX_KEY_BYTES`] + 1 bytes and its slot).
pub const MAX_CACHE_SIZE: u64 = 1_000_000;
/// Keys whose encoding is longer are kept as their SHA-256 digest (32 bytes), so a long
/// header value costs no more memory than a short one.
pub const MAX_KEY_BYTES: usize = 64;

/// An exchange's or queue's deduplication settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupArgs {
    /// Most keys kept.
    pub cache_size: u64,
    /// How long a key is kept (ms); `None`: until evicted.
    pub ttl_ms: Option<u64>,
    /// The header holding the key.
    pub header: String,
}

/// What is being declared, for error texts.
struct Subject<'a> {
    kind: &'a str,
    name: &'a str,
    vhost: &'a str,
}

impl Subject<'_> {
    fn invalid(&self, arg: &str, why: String) -> AmqpError {
        AmqpError::precondition_failed(format!(
            "invalid arg '{arg}' for {} '{}' in vhost '{}': {why}",
            self.kind, self.name, self.vhost
        ))
    }

    fn int(&self, arg: &str, v: &AMQPValue, min: i128, max: u64) -> Result<u64, AmqpError> {
        let i = int_value(v).ok_or_else(|| {
            self.invalid(arg, format!("\"expected integer, got {}\"", type_name(v)))
        })?;
        if i < min {
            let what = if i == 0 {
                "value_zero"
            } else {
                "value_negative"
            };
            return Err(self.invalid(arg, format!("{{{what},{i}}}")));
        }
        if i > i128::from(max) {
            return Err(self.invalid(arg, format!("{{max_value_exceeded,{i}}}")));
        }
        Ok(i as u64)
    }
}

impl DedupArgs {
    /// Reads and checks the deduplication arguments of an exchange or a queue (`kind`
    /// names which, for the texts). `None` when `x-message-deduplication` is absent or
    /// false. The other arguments are checked whenever present (LavinMQ checks a queue's
    /// the same way), so a mistyped value is refused, not silently ignored.
    pub fn parse(
        args: &FieldTable,
        kind: &str,
        name: &str,
        vhost: &str,
    ) -> Result<Option<DedupArgs>, AmqpError> {
        let s = Subject { kind, name, vhost };
        let t = args.inner();
        let on = match t.get(ENABLE) {
            None => false,
            Some(AMQPValue::Boolean(b)) => *b,
            Some(v) => {
                return Err(s.invalid(ENABLE, format!("{{unacceptable_type,{}}}", type_name(v))))
            }
        };
        let cache_size = match t.get("x-cache-size") {
            Some(v) => s.int("x-cache-size", v, 1, MAX_CACHE_SIZE)?,
            None => DEFAULT_CACHE_SIZE,
        };
        let ttl_ms = match t.get("x-cache-ttl") {
            Some(v) => Some(s.int("x-cache-ttl", v, 0, MAX_MILLIS)?),
            None => None,
        };
        let header = match t.get("x-deduplication-header") {
            Some(v @ (AMQPValue::LongString(_) | AMQPValue::ShortString(_))) => {
                let h = crate::args::str_value(v).unwrap_or_default();
                if h.is_empty() || h.len() > crate::names::MAX_SHORTSTR {
                    let why = format!("\"a header name of 1 to 255 bytes, got {}\"", h.len());
                    return Err(s.invalid("x-deduplication-header", why));
                }
                h
            }
            Some(v) => {
                let why = format!("{{unacceptable_type,{}}}", type_name(v));
                return Err(s.invalid("x-deduplication-header", why));
            }
            None => DEFAULT_HEADER.to_string(),
        };
        Ok(on.then_some(DedupArgs {
            cache_size,
            ttl_ms,
            header,
        }))
    }

    /// The refusal of `x-message-deduplication: true` by a queue type without it
    /// (quorum queues, streams): 406 naming the type, in RabbitMQ's form for an argument
    /// a type does not take.
    pub fn refuse_on(
        args: &FieldTable,
        queue: &str,
        vhost: &str,
        queue_type: &str,
    ) -> Result<(), AmqpError> {
        if !matches!(args.inner().get(ENABLE), Some(AMQPValue::Boolean(true))) {
            return Ok(());
        }
        Err(AmqpError::precondition_failed(format!(
            "invalid arg '{ENABLE}' for queue '{queue}' in vhost '{vhost}' of queue type {queue_type}: message deduplication is supported on classic queues and exchanges only"
        )))
    }
}

/// The key of a message: its `header`'s value, encoded so that equal values give equal
/// keys (a short and a long string with the same bytes are the same key, as in
/// LavinMQ; integers of any width with the same value too). `None` when the header is
/// absent or void: such a message is never a duplicate. Keys longer than
/// [`MAX_KEY_BYTES`] are replaced by their digest.
pub fn key_of(headers: Option<&FieldTable>, header: &str) -> Option<Vec<u8>> {
    let v = headers?.inner().get(header)?;
    let mut out = Vec::with_capacity(16);
    match v {
        AMQPValue::Void => return None,
        AMQPValue::LongString(s) => {
            out.push(b's');
            out.extend_from_slice(s.as_bytes());
        }
        AMQPValue::ShortString(s) => {
            out.push(b's');
            out.extend_from_slice(s.as_str().as_bytes());
        }
        AMQPValue::Boolean(b) => out.extend_from_slice(&[b'b', u8::from(*b)]),
        other => match int_value(other) {
            Some(i) => {
                out.push(b'i');
                out.extend_from_slice(&i.to_be_bytes());
            }
            // floats, timestamps, tables, arrays, bytes: their typed debug form
            None => {
                out.push(b'o');
                out.extend_from_slice(format!("{other:?}").as_bytes());
            }
        },
    }
    if out.len() > MAX_KEY_BYTES {
        let digest = Sha256::digest(&out);
        out.clear();
        out.push(b'h');
        out.extend_from_slice(&digest);
    }
    Some(out)
}

/// A message's own `x-cache-ttl` header (ms), overriding the exchange's or queue's TTL
/// for its key; a value that is not a non-negative integer is ignored (LavinMQ ignores
/// what is not an integer).
pub fn message_ttl(headers: Option<&FieldTable>) -> Option<u64> {
    let i = int_value(headers?.inner().get("x-cache-ttl")?)?;
    (0..=i128::from(MAX_MILLIS))
        .contains(&i)
        .then_some(i as u64)
}

/// The stored form of a cache entry: its expiry (wall-clock ms, `u64::MAX` for none)
/// and its key.
pub fn encode_entry(key: &[u8], expires: Option<u64>) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + key.len());
    v.extend_from_slice(&expires.unwrap_or(u64::MAX).to_be_bytes());
    v.extend_from_slice(key);
    v
}

/// Reads [`encode_entry`]'s form back; `None` if it is too short.
pub fn decode_entry(v: &[u8]) -> Option<(cache::Key, Option<u64>)> {
    let (e, key) = v.split_at_checked(8)?;
    let mut b = [0u8; 8];
    b.copy_from_slice(e);
    let e = u64::from_be_bytes(b);
    Some((key.into(), (e != u64::MAX).then_some(e)))
}

/// Where a durable queue's cache is kept: entries by (queue store id, entry number).
/// A put must be durable once a later `MessageStore::commit` returns (publisher
/// confirms wait for that commit); removals may wait for the next flush (a removed
/// entry that comes back is expired or trimmed to size when the cache is loaded).
pub trait DedupStore: Send + Sync {
    /// Writes entry `seq` of `entity`'s cache ([`encode_entry`]'s form).
    fn dedup_put(&self, entity: u64, seq: u64, value: &[u8]) -> Result<(), StoreError>;
    /// Removes entries of `entity`'s cache.
    fn dedup_remove(&self, entity: u64, seqs: &[u64]) -> Result<(), StoreError>;
    /// Every stored entry of `entity`'s cache, in entry order.
    fn dedup_load(&self, entity: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// Removes `entity`'s whole cache (the queue was deleted).
    fn dedup_drop(&self, entity: u64) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::table;
    use amq_protocol::types::{LongString, ShortString};

    fn parse(pairs: &[(&str, AMQPValue)]) -> Result<Option<DedupArgs>, String> {
        DedupArgs::parse(&table(pairs), "queue", "q", "/").map_err(|e| e.reply_text())
    }

    #[test]
    fn defaults_are_lavinmqs() {
        let on = ("x-message-deduplication", AMQPValue::Boolean(true));
        let a = parse(std::slice::from_ref(&on)).unwrap().unwrap();
        assert_eq!(a.cache_size, 128);
        assert_eq!(a.ttl_ms, None);
        assert_eq!(a.header, "x-deduplication-header");
        let a = parse(&[
            on,
            ("x-cache-size", AMQPValue::LongInt(5)),
            ("x-cache-ttl", AMQPValue::LongLongInt(1000)),
            (
                "x-deduplication-header",
                AMQPValue::LongString(LongString::from("id")),
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (a.cache_size, a.ttl_ms, a.header.as_str()),
            (5, Some(1000), "id")
        );
        assert_eq!(parse(&[]).unwrap(), None);
        let off = ("x-message-deduplication", AMQPValue::Boolean(false));
        assert_eq!(parse(&[off]).unwrap(), None);
    }

    #[test]
    fn bad_values_are_refused_with_clear_texts() {
        let on = ("x-message-deduplication", AMQPValue::Boolean(true));
        assert_eq!(
            parse(&[("x-message-deduplication", AMQPValue::LongInt(1))]).unwrap_err(),
            "PRECONDITION_FAILED - invalid arg 'x-message-deduplication' for queue 'q' in vhost '/': {unacceptable_type,signedint}"
        );
        let size = |v| parse(&[on.clone(), ("x-cache-size", v)]).unwrap_err();
        assert!(size(AMQPValue::LongInt(0)).ends_with("{value_zero,0}"));
        assert!(size(AMQPValue::LongInt(-3)).ends_with("{value_negative,-3}"));
        assert!(size(AMQPValue::LongLongInt(1_000_001)).ends_with("{max_value_exceeded,1000001}"));
        assert!(size(AMQPValue::LongString(LongString::from("5")))
            .ends_with("\"expected integer, got longstr\""));
        let ttl = parse(&[on.clone(), ("x-cache-ttl", AMQPValue::LongInt(-1))]).unwrap_err();
        assert!(ttl.contains("'x-cache-ttl'") && ttl.ends_with("{value_negative,-1}"));
        let h = parse(&[on, ("x-deduplication-header", AMQPValue::LongInt(1))]).unwrap_err();
        assert!(h.ends_with("{unacceptable_type,signedint}"), "{h}");
    }

    #[test]
    fn keys_compare_by_value() {
        let h = |v: AMQPValue| table(&[("x-deduplication-header", v)]);
        let k = |t: &FieldTable| key_of(Some(t), DEFAULT_HEADER);
        let long = h(AMQPValue::LongString(LongString::from("abc")));
        let short = h(AMQPValue::ShortString(ShortString::from("abc")));
        assert_eq!(k(&long), k(&short));
        assert_eq!(
            k(&h(AMQPValue::LongInt(7))),
            k(&h(AMQPValue::LongLongInt(7)))
        );
        assert_ne!(k(&h(AMQPValue::LongInt(7))), k(&long));
        assert_eq!(k(&h(AMQPValue::Void)), None);
        assert_eq!(key_of(None, DEFAULT_HEADER), None);
        assert_eq!(k(&table(&[])), None);
        let big = h(AMQPValue::LongString(LongString::from("x".repeat(10_000))));
        assert_eq!(k(&big).map(|k| k.len()), Some(33));
    }

    #[test]
    fn a_message_ttl_overrides_when_it_is_an_integer() {
        let t = table(&[("x-cache-ttl", AMQPValue::LongInt(10))]);
        assert_eq!(message_ttl(Some(&t)), Some(10));
        let t = table(&[("x-cache-ttl", AMQPValue::LongInt(-10))]);
        assert_eq!(message_ttl(Some(&t)), None);
        let t = table(&[("x-cache-ttl", AMQPValue::LongString(LongString::from("1")))]);
        assert_eq!(message_ttl(Some(&t)), None);
    }

    #[test]
    fn entries_round_trip() {
        let v = encode_entry(b"sk", Some(5));
        assert_eq!(decode_entry(&v), Some((b"sk".to_vec().into(), Some(5))));
        let v = encode_entry(b"sk", None);
        assert_eq!(decode_entry(&v), Some((b"sk".to_vec().into(), None)));
        assert_eq!(decode_entry(b"short"), None);
    }
}
