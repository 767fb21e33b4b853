//! Queue arguments (`x-message-ttl`, `x-max-length`, `x-dead-letter-exchange`, …) read
//! and checked as RabbitMQ reads and checks them at queue.declare.
//!
//! A bad value is refused with 406 PRECONDITION_FAILED and RabbitMQ's text, e.g.
//! `invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_negative,-1}`.
//! Unknown `x-` arguments are kept and ignored, as RabbitMQ does.

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

struct Checker<'a> {
    queue: &'a str,
    vhost: &'a str,
}

impl Checker<'_> {
    fn invalid(&self, arg: &str, why: String) -> AmqpError {
        AmqpError::precondition_failed(format!(
            "invalid arg '{arg}' for queue '{}' in vhost '{}': {why}",
            self.queue, self.vhost
        ))
    }

    fn int(&self, arg: &str, v: &AMQPValue) -> Result<i128, AmqpError> {
        int_value(v)
            .ok_or_else(|| self.invalid(arg, format!("{{unacceptable_type,{}}}", type_name(v))))
    }

    /// A non-negative integer.
    fn non_neg(&self, arg: &str, v: &AMQPValue) -> Result<u64, AmqpError> {
        let i = self.int(arg, v)?;
        if i < 0 {
            return Err(self.invalid(arg, format!("{{value_negative,{i}}}")));
        }
        Ok(u64::try_from(i).unwrap_or(u64::MAX))
    }

    /// A positive integer.
    fn positive(&self, arg: &str, v: &AMQPValue) -> Result<u64, AmqpError> {
        let i = self.int(arg, v)?;
        if i == 0 {
            return Err(self.invalid(arg, "{value_zero,0}".into()));
        }
        if i < 0 {
            return Err(self.invalid(arg, format!("{{value_negative,{i}}}")));
        }
        Ok(u64::try_from(i).unwrap_or(u64::MAX))
    }

    fn string(&self, arg: &str, v: &AMQPValue) -> Result<String, AmqpError> {
        str_value(v)
            .ok_or_else(|| self.invalid(arg, format!("{{unacceptable_type,{}}}", type_name(v))))
    }
}

impl QueueArgs {
    /// Reads and checks a queue's arguments.
    pub fn parse(args: &FieldTable, queue: &str, vhost: &str) -> Result<QueueArgs, AmqpError> {
        let c = Checker { queue, vhost };
        let mut out = QueueArgs::default();
        for (k, v) in args.inner().iter() {
            let key = k.as_str();
            match key {
                "x-message-ttl" => {
                    let ttl = c.non_neg(key, v)?;
                    // RabbitMQ's limit: what fits an Erlang timer
                    if ttl > 4_294_967_295 {
                        return Err(c.invalid(key, format!("{{value_too_large,{ttl},4294967295}}")));
                    }
                    out.message_ttl = Some(ttl);
                }
                "x-expires" => {
                    let ms = c.positive(key, v)?;
                    if ms > 4_294_967_295 {
                        return Err(c.invalid(key, format!("{{value_too_large,{ms},4294967295}}")));
                    }
                    out.expires = Some(ms);
                }
                "x-max-length" => out.max_length = Some(c.non_neg(key, v)?),
                "x-max-length-bytes" => out.max_length_bytes = Some(c.non_neg(key, v)?),
                "x-delivery-limit" => out.delivery_limit = Some(c.non_neg(key, v)?),
                "x-max-priority" => {
                    let p = c.non_neg(key, v)?;
                    if p > 255 {
                        return Err(c.invalid(key, format!("{{value_too_large,{p},255}}")));
                    }
                    // 0 behaves as no priorities, as in RabbitMQ
                    out.max_priority = (p > 0).then_some(p as u8);
                }
                "x-overflow" => {
                    let s = c.string(key, v)?;
                    out.overflow = match s.as_str() {
                        "drop-head" => Overflow::DropHead,
                        "reject-publish" => Overflow::RejectPublish,
                        "reject-publish-dlx" => Overflow::RejectPublishDlx,
                        other => {
                            return Err(
                                c.invalid(key, format!("{{unacceptable_value,<<\"{other}\">>}}"))
                            )
                        }
                    };
                }
                "x-single-active-consumer" => match v {
                    AMQPValue::Boolean(b) => out.single_active_consumer = *b,
                    other => {
                        return Err(
                            c.invalid(key, format!("{{unacceptable_type,{}}}", type_name(other)))
                        )
                    }
                },
                "x-dead-letter-exchange" => out.dead_letter_exchange = Some(c.string(key, v)?),
                "x-dead-letter-routing-key" => {
                    out.dead_letter_routing_key = Some(c.string(key, v)?)
                }
                "x-queue-type" => {
                    let t = c.string(key, v)?;
                    if t != "classic" {
                        return Err(AmqpError::precondition_failed(format!(
                            "invalid arg 'x-queue-type' for queue '{queue}' in vhost '{vhost}': \
                             queue type '{t}' is not supported by this broker (only 'classic')"
                        )));
                    }
                }
                _ => {}
            }
        }
        if out.dead_letter_routing_key.is_some() && out.dead_letter_exchange.is_none() {
            return Err(c.invalid(
                "x-dead-letter-routing-key",
                "Key x-dead-letter-exchange not set".into(),
            ));
        }
        Ok(out)
    }

    /// Whether the queue has a length limit.
    pub fn has_length_limit(&self) -> bool {
        self.max_length.is_some() || self.max_length_bytes.is_some()
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
    fn bad_arguments_get_rabbitmq_texts() {
        assert_eq!(
            text(&[("x-message-ttl", AMQPValue::LongInt(-1))]),
            "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_negative,-1}"
        );
        assert!(text(&[(
            "x-message-ttl",
            AMQPValue::LongString(LongString::from("x"))
        )])
        .ends_with("{unacceptable_type,longstr}"));
        assert!(text(&[("x-expires", AMQPValue::LongInt(0))]).ends_with("{value_zero,0}"));
        assert!(text(&[("x-max-priority", AMQPValue::LongInt(256))])
            .ends_with("{value_too_large,256,255}"));
        assert!(text(&[(
            "x-overflow",
            AMQPValue::LongString(LongString::from("nope"))
        )])
        .ends_with("{unacceptable_value,<<\"nope\">>}"));
        assert!(text(&[(
            "x-queue-type",
            AMQPValue::LongString(LongString::from("quorum"))
        )])
        .contains("not supported"));
    }
}
