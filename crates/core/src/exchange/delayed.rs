//! The `x-delayed-message` exchange (the API of RabbitMQ's delayed-message plugin, which
//! LavinMQ builds in): a message published with an integer `x-delay` header greater
//! than 0 is held that many milliseconds, then routed by the rules of the exchange type
//! its `x-delayed-type` argument names, with its original routing key and headers.
//! Without the header, or with `x-delay` ≤ 0, it is routed at once.
//!
//! This type is only the routing half: its index is the `x-delayed-type`'s own (read
//! once from the declare arguments), and its route is that type's. Holding messages is
//! the broker's: each delayed exchange has a waiting room (a hidden queue whose state
//! keeps messages by due time, `queue::waiting_room`) that the publish path puts a
//! delayed message into ([`delay_of`] decides), and that hands the message back to the
//! exchange's route when it is due.

use super::{ExchangeKind, ExchangeType, Index, RouteInput};
use crate::args::{int_value, str_value};
use crate::error::AmqpError;
use crate::routing::{BindingSet, Destination};
use amq_protocol::types::{AMQPValue, FieldTable};
use std::sync::Arc;

/// The header that asks for a delay (milliseconds).
pub const DELAY_HEADER: &str = "x-delay";

/// The declare argument naming the type that routes once the delay is over.
pub const TYPE_ARG: &str = "x-delayed-type";

/// The longest delay: 2^32−1 ms (about 49.7 days), the plugin's and LavinMQ's limit; a
/// longer `x-delay` waits this long.
pub const MAX_DELAY_MS: u64 = u32::MAX as u64;

/// The delayed-message type; its value is the index of its `x-delayed-type`.
#[derive(Debug, Clone)]
pub struct Delayed {
    /// The routing type's index (never itself a delayed one).
    inner: Box<Index>,
}

impl Default for Delayed {
    fn default() -> Self {
        Delayed {
            inner: Box::new(ExchangeKind::Direct.new_index(&FieldTable::default())),
        }
    }
}

/// The type named by a delayed exchange's `x-delayed-type` argument, if it names a
/// registered type other than `x-delayed-message` itself.
pub fn inner_kind(arguments: &FieldTable) -> Option<ExchangeKind> {
    let name = arguments.inner().get(TYPE_ARG).and_then(str_value)?;
    super::lookup(&name).filter(|k| *k != ExchangeKind::Delayed)
}

/// How long a message with these headers waits (ms), or `None` to route it at once:
/// no `x-delay`, an `x-delay` ≤ 0, or one that is not an integer (the plugin routes
/// those at once too). A decimal string is read as the plugin does since 2016.
pub fn delay_of(headers: Option<&FieldTable>) -> Option<u64> {
    let v = headers?.inner().get(DELAY_HEADER)?;
    let ms: i128 = match v {
        AMQPValue::LongString(_) | AMQPValue::ShortString(_) => {
            str_value(v)?.trim().parse::<i64>().ok()?.into()
        }
        _ => int_value(v)?,
    };
    (ms > 0).then(|| u64::try_from(ms).unwrap_or(u64::MAX).min(MAX_DELAY_MS))
}

/// The headers a delayed message is routed with when its wait is over: `x-delay`
/// negated, as the plugin does (a consumer can tell the message was delayed, and by
/// how long).
pub fn delivered_headers(headers: &FieldTable, delay_ms: u64) -> FieldTable {
    let mut h = headers.clone();
    let negated = -i64::try_from(delay_ms).unwrap_or(i64::MAX);
    h.insert(DELAY_HEADER.into(), AMQPValue::LongLongInt(negated));
    h
}

impl ExchangeType for Delayed {
    const NAME: &'static str = "x-delayed-message";

    fn with_arguments(arguments: &FieldTable) -> Self {
        let kind = inner_kind(arguments).unwrap_or(ExchangeKind::Direct);
        Delayed {
            inner: Box::new(kind.new_index(arguments)),
        }
    }

    fn routes_by_headers(&self) -> bool {
        self.inner.routes_by_headers()
    }

    /// `x-delayed-type` must name an existing type (the plugin's 406 text), and the
    /// arguments must suit that type (a consistent-hash type's `hash-header`).
    fn validate_declare(
        arguments: &FieldTable,
        exchange: &str,
        vhost: &str,
    ) -> Result<(), AmqpError> {
        match inner_kind(arguments) {
            Some(kind) => kind.validate_own(arguments, exchange, vhost),
            None => Err(AmqpError::precondition_failed(
                "Invalid argument, 'x-delayed-type' must be an existing exchange type",
            )),
        }
    }

    fn bind(&mut self, key: &Arc<str>, dest: &Destination) {
        self.inner.bind(key, dest);
    }

    fn unbind(&mut self, key: &Arc<str>, dest: &Destination) {
        self.inner.unbind(key, dest);
    }

    fn route(&self, set: &BindingSet, msg: &RouteInput<'_>, out: &mut Vec<Destination>) {
        self.inner.route(set, msg, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{LongString, ShortString};

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert(ShortString::from(*k), v.clone());
        }
        t
    }

    fn typed(name: &str) -> FieldTable {
        table(&[(TYPE_ARG, AMQPValue::LongString(LongString::from(name)))])
    }

    #[test]
    fn the_delayed_type_must_be_an_existing_other_type() {
        let k = ExchangeKind::Delayed;
        for ok in ["direct", "fanout", "topic", "headers", "x-consistent-hash"] {
            assert!(k.validate_declare(&typed(ok), "d", "/").is_ok(), "{ok}");
        }
        for bad in [
            FieldTable::default(),
            typed("nope"),
            typed("x-delayed-message"),
            table(&[(TYPE_ARG, AMQPValue::LongInt(1))]),
        ] {
            assert_eq!(
                k.validate_declare(&bad, "d", "/").unwrap_err().reply_text(),
                "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an \
                 existing exchange type"
            );
        }
        // the inner type's own arguments are checked too
        let mut bad_hash = typed("x-consistent-hash");
        bad_hash.insert("hash-header".into(), AMQPValue::LongInt(3));
        assert!(k.validate_declare(&bad_hash, "d", "/").is_err());
    }

    #[test]
    fn delays_are_positive_integers_capped_at_the_plugins_limit() {
        let h = |v: AMQPValue| table(&[(DELAY_HEADER, v)]);
        assert_eq!(delay_of(None), None);
        assert_eq!(delay_of(Some(&FieldTable::default())), None);
        assert_eq!(delay_of(Some(&h(AMQPValue::LongInt(500)))), Some(500));
        assert_eq!(delay_of(Some(&h(AMQPValue::ShortShortUInt(7)))), Some(7));
        assert_eq!(delay_of(Some(&h(AMQPValue::LongLongInt(0)))), None);
        assert_eq!(delay_of(Some(&h(AMQPValue::LongLongInt(-5)))), None);
        assert_eq!(
            delay_of(Some(&h(AMQPValue::LongLongInt(i64::MAX)))),
            Some(MAX_DELAY_MS)
        );
        assert_eq!(
            delay_of(Some(&h(AMQPValue::LongString("250".into())))),
            Some(250)
        );
        assert_eq!(
            delay_of(Some(&h(AMQPValue::LongString("soon".into())))),
            None
        );
        assert_eq!(delay_of(Some(&h(AMQPValue::Double(5.0)))), None);
    }

    #[test]
    fn routes_as_its_delayed_type() {
        let mut d = Delayed::with_arguments(&typed("topic"));
        let q = Destination::Queue("q".into());
        d.bind(&Arc::from("a.*"), &q);
        let set = BindingSet::default();
        let mut out = Vec::new();
        d.route(&set, &RouteInput::new("a.b", None), &mut out);
        assert_eq!(out, vec![q.clone()]);
        out.clear();
        d.route(&set, &RouteInput::new("b.b", None), &mut out);
        assert!(out.is_empty());
        assert!(!d.routes_by_headers());
        assert!(Delayed::with_arguments(&typed("headers")).routes_by_headers());
    }

    #[test]
    fn delivered_headers_negate_the_delay() {
        let h = delivered_headers(&table(&[("a", AMQPValue::LongInt(1))]), 300);
        assert_eq!(
            h.inner().get(DELAY_HEADER),
            Some(&AMQPValue::LongLongInt(-300))
        );
        assert_eq!(h.inner().get("a"), Some(&AMQPValue::LongInt(1)));
    }
}
