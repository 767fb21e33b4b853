//! Queue arguments (`x-message-ttl`, `x-max-length`, `x-dead-letter-exchange`, …) read
//! and checked as RabbitMQ reads and checks them at queue.declare.
//!
//! A bad value is refused with 406 PRECONDITION_FAILED and RabbitMQ's text, e.g.
//! `invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_negative,-1}`.
//! Unknown `x-` arguments are kept and ignored, as RabbitMQ does.
//!
//! This module has the values ([`QueueArgs`]) and the checks every type shares
//! (equivalence on redeclare, value readers and their texts); which arguments a queue
//! accepts is its type's rule (`crate::queue_type`, classic in `queue_type/classic.rs`).

use crate::error::AmqpError;
use amq_protocol::types::{AMQPValue, FieldTable};

/// What happens when a queue with a length limit is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Drop (dead-letter) the oldest ready messages to make room (the default).
    #[default]
    DropHead,
    /// Refuse new messages; publishers in confirm mode get basic.nack.
    RejectPublish,
    /// Refuse new messages and dead-letter them.
    RejectPublishDlx,
}

/// The longest TTL or x-expires RabbitMQ accepts: ten years in milliseconds.
pub const MAX_MILLIS: u64 = 315_360_000_000;

/// Queue arguments whose values must match on redeclare (the classic type's list; each
/// queue type names its own, [`crate::queue_type::QueueType::equivalence_keys`]).
pub use crate::queue_type::classic::EQUIVALENCE_KEYS as QUEUE_EQUIVALENCE_KEYS;

/// Exchange arguments whose values must match on redeclare.
pub const EXCHANGE_EQUIVALENCE_KEYS: &[&str] = &["alternate-exchange"];

fn show_value(v: &AMQPValue) -> String {
    match v {
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::LongString(_) | AMQPValue::ShortString(_) => str_value(v).unwrap_or_default(),
        AMQPValue::Timestamp(t) => t.to_string(),
        AMQPValue::Float(f) => f.to_string(),
        AMQPValue::Double(f) => f.to_string(),
        other => match int_value(other) {
            Some(i) => i.to_string(),
            None => format!("{other:?}"),
        },
    }
}

/// Checks a redeclare's arguments against the current ones, as RabbitMQ does: only
/// `keys` are compared, integers of any width are equal when their values are, and the
/// text shows the values the way RabbitMQ does.
pub fn check_equivalent(
    kind: &str,
    name: &str,
    vhost: &str,
    new: &FieldTable,
    cur: &FieldTable,
    keys: &[&str],
) -> Result<(), AmqpError> {
    // a queue's type defaults to classic
    let classic = AMQPValue::LongString("classic".into());
    let or_default = |key: &str, v: Option<&'_ AMQPValue>| -> Option<AMQPValue> {
        match v {
            None if key == "x-queue-type" && kind == "queue" => Some(classic.clone()),
            v => v.cloned(),
        }
    };
    for key in keys {
        let (n, c) = (
            or_default(key, new.inner().get(*key)),
            or_default(key, cur.inner().get(*key)),
        );
        let (n, c) = (n.as_ref(), c.as_ref());
        let same = match (n, c) {
            (None, None) => true,
            (Some(a), Some(b)) => match (int_value(a), int_value(b)) {
                (Some(x), Some(y)) => x == y,
                _ => a == b,
            },
            _ => false,
        };
        if same {
            continue;
        }
        // the text shows what was given (a missing type is "none", not classic)
        let (n, c) = (new.inner().get(*key), cur.inner().get(*key));
        let show = |v: Option<&AMQPValue>, both: bool| match v {
            None => "none".to_string(),
            Some(v) if both => format!("'{}'", show_value(v)),
            Some(v) => format!("the value '{}' of type '{}'", show_value(v), type_name(v)),
        };
        let both = n.is_some() && c.is_some();
        return Err(AmqpError::precondition_failed(format!(
            "inequivalent arg '{key}' for {kind} '{name}' in vhost '{vhost}': received {} but current is {}",
            show(n, both),
            show(c, both)
        )));
    }
    Ok(())
}

/// Checks an exchange's arguments at declare (alternate-exchange must be a string; the
/// deduplication arguments, `crate::dedup`).
pub fn check_exchange_args(args: &FieldTable, name: &str, vhost: &str) -> Result<(), AmqpError> {
    crate::dedup::DedupArgs::parse(args, "exchange", name, vhost)?;
    crate::schema::check_args(args, name, vhost)?;
    if let Some(v) = args.inner().get("alternate-exchange") {
        if str_value(v).is_none() {
            return Err(AmqpError::precondition_failed(format!(
                "invalid type '{}' for arg 'alternate-exchange' in exchange '{name}' in vhost '{vhost}'",
                type_name(v)
            )));
        }
    }
    Ok(())
}

/// The queue arguments the broker acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueArgs {
    /// `x-message-ttl`: milliseconds a message may wait in the queue.
    pub message_ttl: Option<u64>,
    /// `x-expires`: milliseconds of disuse after which the queue is deleted.
    pub expires: Option<u64>,
    /// `x-max-length`: most ready messages.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`: most ready body bytes.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow`.
    pub overflow: Overflow,
    /// `x-max-priority`: highest priority level (1–255).
    pub max_priority: Option<u8>,
    /// `x-single-active-consumer`.
    pub single_active_consumer: bool,
    /// `x-dead-letter-exchange`.
    pub dead_letter_exchange: Option<String>,
    /// `x-dead-letter-routing-key`.
    pub dead_letter_routing_key: Option<String>,
    /// `x-delivery-limit`: returns after which a message is dead-lettered.
    pub delivery_limit: Option<u64>,
    /// A policy's `consumer-timeout` (ms): overrides `--consumer-timeout-ms` for the
    /// queue (RabbitMQ 3.12+); no declared argument sets it.
    pub consumer_timeout: Option<u64>,
    /// `x-max-age` (streams): milliseconds after which a whole segment whose newest
    /// message is older goes.
    pub max_age_ms: Option<u64>,
    /// `x-stream-max-segment-size-bytes` (streams).
    pub stream_segment_bytes: Option<u64>,
    /// `x-quorum-initial-group-size` (quorum queues): members of the queue's Raft group.
    pub quorum_initial_group_size: Option<u64>,
    /// Delayed retry (`x-delayed-retry-*`): returned messages wait out a back-off.
    pub retry: Option<crate::queue::retry::RetryPolicy>,
    /// The queue is a delayed exchange's waiting room (no argument sets it: the broker
    /// makes one per `x-delayed-message` exchange): every message waits out its
    /// `x-delay`, then goes back to the exchange (`queue/waiting_room.rs`).
    pub waiting_room: bool,
}

/// RabbitMQ's name for a field-table type, as its error texts show it.
pub fn type_name(v: &AMQPValue) -> &'static str {
    match v {
        AMQPValue::Boolean(_) => "bool",
        AMQPValue::ShortShortInt(_) => "byte",
        AMQPValue::ShortShortUInt(_) => "unsignedbyte",
        AMQPValue::ShortInt(_) => "short",
        AMQPValue::ShortUInt(_) => "unsignedshort",
        AMQPValue::LongInt(_) => "signedint",
        AMQPValue::LongUInt(_) => "unsignedint",
        AMQPValue::LongLongInt(_) => "long",
        AMQPValue::Float(_) => "float",
        AMQPValue::Double(_) => "double",
        AMQPValue::DecimalValue(_) => "decimal",
        AMQPValue::ShortString(_) => "shortstr",
        AMQPValue::LongString(_) => "longstr",
        AMQPValue::FieldArray(_) => "array",
        AMQPValue::Timestamp(_) => "timestamp",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::ByteArray(_) => "binary",
        AMQPValue::Void => "void",
    }
}

/// An integer argument value, if the value has an integer type.
pub fn int_value(v: &AMQPValue) -> Option<i128> {
    Some(match v {
        AMQPValue::ShortShortInt(i) => i128::from(*i),
        AMQPValue::ShortShortUInt(i) => i128::from(*i),
        AMQPValue::ShortInt(i) => i128::from(*i),
        AMQPValue::ShortUInt(i) => i128::from(*i),
        AMQPValue::LongInt(i) => i128::from(*i),
        AMQPValue::LongUInt(i) => i128::from(*i),
        AMQPValue::LongLongInt(i) => i128::from(*i),
        _ => return None,
    })
}

/// A string argument value, if the value is a string.
pub fn str_value(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Checks one queue's argument values, with RabbitMQ's texts naming the queue and vhost
/// (shared by the queue types' rules).
pub(crate) struct Checker<'a> {
    pub(crate) queue: &'a str,
    pub(crate) vhost: &'a str,
}

impl Checker<'_> {
    /// `invalid arg '…' for queue '…' in vhost '…': why` (406).
    pub(crate) fn invalid(&self, arg: &str, why: String) -> AmqpError {
        AmqpError::precondition_failed(format!(
            "invalid arg '{arg}' for queue '{}' in vhost '{}': {why}",
            self.queue, self.vhost
        ))
    }

    /// An integer of any width.
    pub(crate) fn int(&self, arg: &str, v: &AMQPValue) -> Result<i128, AmqpError> {
        int_value(v)
            .ok_or_else(|| self.invalid(arg, format!("\"expected integer, got {}\"", type_name(v))))
    }

    /// RabbitMQ's text for a string argument of another type.
    pub(crate) fn wrong_type(&self, arg: &str, v: &AMQPValue) -> AmqpError {
        AmqpError::precondition_failed(format!(
            "invalid type '{}' for arg '{arg}' in queue '{}' in vhost '{}'",
            type_name(v),
            self.queue,
            self.vhost
        ))
    }

    /// A TTL-like value: non-negative (or positive) and at most ten years of ms.
    pub(crate) fn millis(&self, arg: &str, v: &AMQPValue, zero_ok: bool) -> Result<u64, AmqpError> {
        let ms = if zero_ok {
            self.non_neg(arg, v)?
        } else {
            self.positive(arg, v)?
        };
        if ms > MAX_MILLIS {
            return Err(self.invalid(arg, format!("{{value_too_large,{ms}}}")));
        }
        Ok(ms)
    }

    /// A non-negative integer.
    pub(crate) fn non_neg(&self, arg: &str, v: &AMQPValue) -> Result<u64, AmqpError> {
        let i = self.int(arg, v)?;
        if i < 0 {
            return Err(self.invalid(arg, format!("{{value_negative,{i}}}")));
        }
        Ok(u64::try_from(i).unwrap_or(u64::MAX))
    }

    /// A positive integer.
    pub(crate) fn positive(&self, arg: &str, v: &AMQPValue) -> Result<u64, AmqpError> {
        let i = self.int(arg, v)?;
        if i == 0 {
            return Err(self.invalid(arg, "{value_zero,0}".into()));
        }
        if i < 0 {
            return Err(self.invalid(arg, format!("{{value_negative,{i}}}")));
        }
        Ok(u64::try_from(i).unwrap_or(u64::MAX))
    }

    /// A long string (RabbitMQ refuses other types with `unacceptable_type`).
    pub(crate) fn string(&self, arg: &str, v: &AMQPValue) -> Result<String, AmqpError> {
        match v {
            AMQPValue::LongString(_) => Ok(str_value(v).unwrap_or_default()),
            other => Err(self.invalid(arg, format!("{{unacceptable_type,{}}}", type_name(other)))),
        }
    }
}

impl QueueArgs {
    /// Reads and checks a queue's arguments by the rules of the queue type that
    /// `x-queue-type` names (classic when none; an unknown or unsupported type is refused
    /// with RabbitMQ's text, in argument order): [`crate::queue_type::parse_arguments`].
    pub fn parse(args: &FieldTable, queue: &str, vhost: &str) -> Result<QueueArgs, AmqpError> {
        crate::queue_type::parse_arguments(args, queue, vhost)
    }

    /// Whether the queue has a length limit.
    pub fn has_length_limit(&self) -> bool {
        self.max_length.is_some() || self.max_length_bytes.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::LongString;

    use crate::test_support::table;

    fn text(pairs: &[(&str, AMQPValue)]) -> String {
        QueueArgs::parse(&table(pairs), "q", "/")
            .unwrap_err()
            .reply_text()
    }

    #[test]
    fn good_arguments_are_read() {
        let a = QueueArgs::parse(
            &table(&[
                ("x-message-ttl", AMQPValue::LongInt(1000)),
                ("x-max-length", AMQPValue::LongLongInt(5)),
                (
                    "x-overflow",
                    AMQPValue::LongString(LongString::from("reject-publish")),
                ),
                ("x-max-priority", AMQPValue::ShortShortUInt(10)),
                (
                    "x-dead-letter-exchange",
                    AMQPValue::LongString(LongString::from("dlx")),
                ),
                ("x-single-active-consumer", AMQPValue::Boolean(true)),
                (
                    "x-queue-type",
                    AMQPValue::LongString(LongString::from("classic")),
                ),
                ("x-custom", AMQPValue::Boolean(true)),
            ]),
            "q",
            "/",
        )
        .unwrap();
        assert_eq!(a.message_ttl, Some(1000));
        assert_eq!(a.max_length, Some(5));
        assert_eq!(a.overflow, Overflow::RejectPublish);
        assert_eq!(a.max_priority, Some(10));
        assert_eq!(a.dead_letter_exchange.as_deref(), Some("dlx"));
        assert!(a.single_active_consumer);
    }

    #[test]
    fn equivalence_as_rabbitmq_checks_it() {
        let a = table(&[
            ("x-max-length", AMQPValue::LongInt(5)),
            ("x-a", AMQPValue::LongInt(1)),
        ]);
        let b = table(&[("x-max-length", AMQPValue::LongLongInt(5))]);
        assert!(check_equivalent("queue", "q", "/", &a, &b, QUEUE_EQUIVALENCE_KEYS).is_ok());
        let c = table(&[("x-max-length", AMQPValue::LongInt(6))]);
        assert!(
            check_equivalent("queue", "q", "/", &c, &b, QUEUE_EQUIVALENCE_KEYS)
                .unwrap_err()
                .reply_text()
                .ends_with("received '6' but current is '5'")
        );
        let none = FieldTable::default();
        assert!(
            check_equivalent("queue", "q", "/", &none, &c, QUEUE_EQUIVALENCE_KEYS)
                .unwrap_err()
                .reply_text()
                .ends_with("received none but current is the value '6' of type 'signedint'")
        );
    }

    #[test]
    fn bad_arguments_get_rabbitmq_texts() {
        assert_eq!(
            text(&[("x-message-ttl", AMQPValue::LongInt(-1))]),
            "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_negative,-1}"
        );
        assert!(text(&[(
            "x-message-ttl",
            AMQPValue::LongString(LongString::from("x"))
        )])
        .ends_with("\"expected integer, got longstr\""));
        assert!(text(&[("x-expires", AMQPValue::LongInt(0))]).ends_with("{value_zero,0}"));
        assert!(text(&[("x-max-priority", AMQPValue::LongInt(256))])
            .ends_with("{max_value_exceeded,256}"));
        assert!(text(&[(
            "x-overflow",
            AMQPValue::LongString(LongString::from("nope"))
        )])
        .ends_with("invalid_overflow"));
        assert!(text(&[(
            "x-queue-type",
            AMQPValue::LongString(LongString::from("fast"))
        )])
        .contains("unsupported queue type 'fast'"));
    }

    #[test]
    fn dead_letter_routing_key_must_fit_a_shortstr() {
        let dlx = (
            "x-dead-letter-exchange",
            AMQPValue::LongString(LongString::from("dlx")),
        );
        let key = |n: usize| {
            (
                "x-dead-letter-routing-key",
                AMQPValue::LongString(LongString::from("k".repeat(n))),
            )
        };
        assert_eq!(
            text(&[dlx.clone(), key(256)]),
            "PRECONDITION_FAILED - invalid arg 'x-dead-letter-routing-key' for queue 'q' in vhost '/': \"256 bytes, longer than a routing key can be (255)\""
        );
        let a = QueueArgs::parse(&table(&[dlx, key(255)]), "q", "/").unwrap();
        assert_eq!(a.dead_letter_routing_key.map(|k| k.len()), Some(255));
    }
}
