//! What the hashing exchanges (`x-consistent-hash`, `x-modulus-hash`) share: a stable
//! 64-bit hash of a message's routing key, of a header's value or of a property, and the
//! consistent-hash exchange's `hash-header` / `hash-property` arguments.
//!
//! The hash must be the same on every node and across restarts and versions (a message
//! with a given key must keep going to the same queue), so it is not std's randomly keyed
//! `DefaultHasher`: it is FNV-1a over the bytes, finished by MurmurHash3's 64-bit mixer
//! (FNV alone spreads short keys poorly in its high bits). It allocates nothing: a header
//! value is fed to the hasher as it is walked, a timestamp as its decimal digits.

use crate::args::{int_value, str_value, type_name};
use crate::error::AmqpError;
use amq_protocol::types::{AMQPValue, FieldTable};

/// What a consistent-hash exchange hashes: the routing key (the default), a header's
/// value (`hash-header`) or a property (`hash-property`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HashOn {
    /// The message's routing key.
    #[default]
    RoutingKey,
    /// The value of this header.
    Header(Box<str>),
    /// `message_id`.
    MessageId,
    /// `correlation_id`.
    CorrelationId,
    /// `timestamp`, as its decimal digits (as the plugin hashes it).
    Timestamp,
}

/// The properties `hash-property` may name (the plugin's list).
const PROPERTIES: [&str; 3] = ["correlation_id", "message_id", "timestamp"];

impl HashOn {
    /// Reads and checks `hash-header` / `hash-property` (406 with the plugin's texts:
    /// both given, or a property it does not hash on; a value that is not a string gets
    /// the type error the broker gives `alternate-exchange`).
    pub fn from_arguments(
        args: &FieldTable,
        exchange: &str,
        vhost: &str,
    ) -> Result<Self, AmqpError> {
        let read = |arg: &str| -> Result<Option<String>, AmqpError> {
            match args.inner().get(arg) {
                None => Ok(None),
                Some(v) => str_value(v).map(Some).ok_or_else(|| {
                    AmqpError::precondition_failed(format!(
                        "invalid type '{}' for arg '{arg}' in exchange '{exchange}' in vhost '{vhost}'",
                        type_name(v)
                    ))
                }),
            }
        };
        match (read("hash-header")?, read("hash-property")?) {
            (None, None) => Ok(HashOn::RoutingKey),
            (Some(_), Some(_)) => Err(AmqpError::precondition_failed(
                "hash-header and hash-property are mutually exclusive",
            )),
            (Some(h), None) => Ok(HashOn::Header(h.into())),
            (None, Some(p)) => match p.as_str() {
                "message_id" => Ok(HashOn::MessageId),
                "correlation_id" => Ok(HashOn::CorrelationId),
                "timestamp" => Ok(HashOn::Timestamp),
                other => {
                    debug_assert!(!PROPERTIES.contains(&other));
                    Err(AmqpError::precondition_failed(format!(
                        "Unsupported property: {other}"
                    )))
                }
            },
        }
    }

    /// The arguments of an exchange already validated at declare; arguments that do not
    /// parse (they cannot reach here) hash on the routing key.
    pub fn of_declared(args: &FieldTable) -> Self {
        Self::from_arguments(args, "", "").unwrap_or_default()
    }

    /// Whether the hash reads more than the routing key (so routes cannot be cached).
    pub fn reads_message(&self) -> bool {
        *self != HashOn::RoutingKey
    }

    /// The hash of what this exchange hashes in `msg`. A message without the header or
    /// property hashes as "undefined", so all such messages go to one destination (as
    /// in the plugin).
    pub fn hash(&self, msg: &super::RouteInput<'_>) -> u64 {
        let mut h = Fnv::new();
        let props = msg.properties;
        match self {
            HashOn::RoutingKey => h.str(msg.routing_key),
            HashOn::Header(name) => match msg.headers.and_then(|t| t.inner().get(&**name)) {
                Some(v) => h.value(v, 0),
                None => h.undefined(),
            },
            HashOn::MessageId => match props.and_then(|p| p.message_id().as_ref()) {
                Some(s) => h.str(s.as_str()),
                None => h.undefined(),
            },
            HashOn::CorrelationId => match props.and_then(|p| p.correlation_id().as_ref()) {
                Some(s) => h.str(s.as_str()),
                None => h.undefined(),
            },
            HashOn::Timestamp => match props.and_then(|p| *p.timestamp()) {
                Some(t) => h.decimal(t),
                None => h.undefined(),
            },
        }
        h.finish()
    }
}

/// The stable hash of a routing key (the modulus-hash exchange's, and the consistent-hash
/// exchange's by default).
pub fn hash_key(routing_key: &str) -> u64 {
    let mut h = Fnv::new();
    h.str(routing_key);
    h.finish()
}

/// The stable hash of a destination's kind and name: its seed in a rendezvous hash.
pub fn hash_destination(dest: &crate::routing::Destination) -> u64 {
    let mut h = Fnv::new();
    match dest {
        crate::routing::Destination::Queue(q) => {
            h.byte(b'q');
            h.bytes(q.as_bytes());
        }
        crate::routing::Destination::Exchange(x) => {
            h.byte(b'x');
            h.bytes(x.as_bytes());
        }
    }
    h.finish()
}

/// MurmurHash3's 64-bit finalizer: every input bit reaches every output bit.
#[inline]
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Header values nested deeper than this are hashed by their type alone (a frame can
/// nest tables thousands deep; the walk must not follow it down the stack).
const MAX_DEPTH: u32 = 8;

/// FNV-1a, 64 bits.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    #[inline]
    fn byte(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }

    #[inline]
    fn bytes(&mut self, bs: &[u8]) {
        for &b in bs {
            self.byte(b);
        }
    }

    /// A string (short and long strings hash alike: a client's choice of width does not
    /// move a message).
    fn str(&mut self, s: &str) {
        self.byte(b's');
        self.bytes(s.as_bytes());
    }

    fn undefined(&mut self) {
        self.byte(b'u');
    }

    /// An unsigned integer as its decimal digits, as a string (the plugin hashes a
    /// timestamp as `integer_to_binary`).
    fn decimal(&mut self, mut n: u64) {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.byte(b's');
        self.bytes(&buf[i..]);
    }

    /// A header value: its kind and content; integers of every width hash alike.
    fn value(&mut self, v: &AMQPValue, depth: u32) {
        if let Some(i) = int_value(v) {
            self.byte(b'i');
            self.bytes(&i.to_le_bytes());
            return;
        }
        match v {
            AMQPValue::LongString(s) => self.bytes_str(s.as_bytes()),
            AMQPValue::ShortString(s) => self.str(s.as_str()),
            AMQPValue::Boolean(b) => self.bytes(&[b'b', u8::from(*b)]),
            AMQPValue::Float(f) => self.tagged(b'f', &f.to_bits().to_le_bytes()),
            AMQPValue::Double(f) => self.tagged(b'd', &f.to_bits().to_le_bytes()),
            AMQPValue::DecimalValue(d) => {
                self.tagged(b'm', &[d.scale]);
                self.bytes(&d.value.to_le_bytes());
            }
            AMQPValue::Timestamp(t) => self.tagged(b't', &t.to_le_bytes()),
            AMQPValue::ByteArray(b) => self.tagged(b'y', b.as_slice()),
            AMQPValue::Void => self.byte(b'v'),
            AMQPValue::FieldArray(a) => {
                self.byte(b'a');
                if depth < MAX_DEPTH {
                    for x in a.as_slice() {
                        self.value(x, depth + 1);
                    }
                }
                self.byte(b']');
            }
            AMQPValue::FieldTable(t) => {
                self.byte(b'T');
                if depth < MAX_DEPTH {
                    for (k, x) in t.inner() {
                        self.str(k.as_str());
                        self.value(x, depth + 1);
                    }
                }
                self.byte(b'}');
            }
            _ => self.byte(b'?'),
        }
    }

    fn bytes_str(&mut self, s: &[u8]) {
        self.byte(b's');
        self.bytes(s);
    }

    fn tagged(&mut self, tag: u8, bs: &[u8]) {
        self.byte(tag);
        self.bytes(bs);
    }

    fn finish(&self) -> u64 {
        mix(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::RouteInput;
    use amq_protocol::protocol::basic::AMQPProperties;
    use amq_protocol::types::{FieldArray, LongString, ShortString};

    fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert(ShortString::from(*k), v.clone());
        }
        t
    }

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(v))
    }

    #[test]
    fn arguments_are_checked_with_the_plugins_texts() {
        let both = args(&[("hash-header", s("h")), ("hash-property", s("message_id"))]);
        assert_eq!(
            HashOn::from_arguments(&both, "x", "/")
                .unwrap_err()
                .reply_text(),
            "PRECONDITION_FAILED - hash-header and hash-property are mutually exclusive"
        );
        let bad = args(&[("hash-property", s("app_id"))]);
        assert_eq!(
            HashOn::from_arguments(&bad, "x", "/")
                .unwrap_err()
                .reply_text(),
            "PRECONDITION_FAILED - Unsupported property: app_id"
        );
        let int = args(&[("hash-header", AMQPValue::LongInt(1))]);
        assert_eq!(
            HashOn::from_arguments(&int, "x", "/").unwrap_err().reply_text(),
            "PRECONDITION_FAILED - invalid type 'signedint' for arg 'hash-header' in exchange 'x' in vhost '/'"
        );
        for p in PROPERTIES {
            let ok = args(&[("hash-property", s(p))]);
            assert!(HashOn::from_arguments(&ok, "x", "/")
                .unwrap()
                .reads_message());
        }
        let h = args(&[("hash-header", s("h"))]);
        assert_eq!(HashOn::of_declared(&h), HashOn::Header("h".into()));
        assert_eq!(
            HashOn::of_declared(&FieldTable::default()),
            HashOn::RoutingKey
        );
    }

    #[test]
    fn missing_values_hash_alike_and_widths_do_not_matter() {
        let on = HashOn::Header("h".into());
        let none = on.hash(&RouteInput::new("a", None));
        let empty = FieldTable::default();
        assert_eq!(on.hash(&RouteInput::new("b", Some(&empty))), none);
        let long = args(&[("h", s("v"))]);
        let short = args(&[("h", AMQPValue::ShortString(ShortString::from("v")))]);
        assert_eq!(
            on.hash(&RouteInput::new("a", Some(&long))),
            on.hash(&RouteInput::new("z", Some(&short)))
        );
        let i32v = args(&[("h", AMQPValue::LongInt(7))]);
        let i64v = args(&[("h", AMQPValue::LongLongInt(7))]);
        assert_eq!(
            on.hash(&RouteInput::new("", Some(&i32v))),
            on.hash(&RouteInput::new("", Some(&i64v)))
        );
        assert_ne!(on.hash(&RouteInput::new("", Some(&i32v))), none);
        // an empty array (what crashed RabbitMQ's plugin) and a deep nesting are values
        let arr = args(&[("h", AMQPValue::FieldArray(FieldArray::default()))]);
        assert_ne!(on.hash(&RouteInput::new("", Some(&arr))), none);
        let mut deep = AMQPValue::Void;
        for _ in 0..200 {
            deep = AMQPValue::FieldArray(vec![deep].into());
        }
        let deep = args(&[("h", deep)]);
        on.hash(&RouteInput::new("", Some(&deep)));
    }

    #[test]
    fn properties_hash_by_value() {
        let p = AMQPProperties::default()
            .with_message_id(ShortString::from("m1"))
            .with_timestamp(1_700_000_000);
        let msg = RouteInput::with_properties("rk", Some(&p));
        assert_eq!(HashOn::MessageId.hash(&msg), hash_key("m1"));
        assert_eq!(HashOn::Timestamp.hash(&msg), hash_key("1700000000"));
        let bare = RouteInput::with_properties("rk", None);
        assert_eq!(
            HashOn::CorrelationId.hash(&msg),
            HashOn::MessageId.hash(&bare)
        );
        assert_eq!(HashOn::RoutingKey.hash(&msg), hash_key("rk"));
    }

    /// The hash is part of the routing contract (a key keeps its queue across versions):
    /// these values must never change.
    #[test]
    fn the_hash_is_stable() {
        // FNV-1a 64 of b"s" + the key, then MurmurHash3's fmix64 (computed independently)
        assert_eq!(hash_key(""), 14_715_570_115_600_788_714);
        assert_eq!(hash_key("order-42"), 84_075_551_473_930_872);
    }
}
