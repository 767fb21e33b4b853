//! The classic queue type (rabbit_classic_queue): the only type this broker runs. Its
//! rules are the arguments RabbitMQ's classic queues accept at queue.declare, with
//! RabbitMQ's texts for bad values; it supports every feature the server has.

use super::{unsupported_type, Capabilities, QueueType};
use crate::args::{Checker, Overflow, QueueArgs};
use crate::error::AmqpError;
use amq_protocol::types::{AMQPValue, FieldTable};

/// Queue arguments whose values must match on redeclare (RabbitMQ ignores others).
pub const EQUIVALENCE_KEYS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-type",
    "x-single-active-consumer",
    "x-queue-master-locator",
    "x-delivery-limit",
    "x-delayed-retry-type",
    "x-delayed-retry-min",
    "x-delayed-retry-max",
    "x-delayed-retry-multiplier",
    "x-delayed-retry-jitter",
];

/// The classic queue type.
#[derive(Debug, Clone, Copy, Default)]
pub struct Classic;

impl QueueType for Classic {
    fn name(&self) -> &'static str {
        "classic"
    }

    fn parse_arguments(
        &self,
        arguments: &FieldTable,
        queue: &str,
        vhost: &str,
    ) -> Result<QueueArgs, AmqpError> {
        let c = Checker { queue, vhost };
        let mut out = QueueArgs::default();
        for (k, v) in arguments.inner().iter() {
            apply(&c, &mut out, k.as_str(), v)?;
        }
        if out.dead_letter_routing_key.is_some() && out.dead_letter_exchange.is_none() {
            return Err(c.invalid(
                "x-dead-letter-routing-key",
                "routing_key_but_no_dlx_defined".into(),
            ));
        }
        out.retry = crate::queue::retry::parse(&c, arguments)?;
        if out.retry.is_some() && out.delivery_limit.is_none() {
            out.delivery_limit = Some(crate::queue::retry::RETRY_DELIVERY_LIMIT);
        }
        // LavinMQ's message deduplication (read again where the queue is made)
        crate::dedup::DedupArgs::parse(arguments, "queue", queue, vhost)?;
        Ok(out)
    }

    fn equivalence_keys(&self) -> &'static [&'static str] {
        EQUIVALENCE_KEYS
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }
}

/// Reads one argument into `out`; unknown arguments are ignored, as RabbitMQ does.
fn apply(c: &Checker<'_>, out: &mut QueueArgs, key: &str, v: &AMQPValue) -> Result<(), AmqpError> {
    match key {
        "x-message-ttl" => out.message_ttl = Some(c.millis(key, v, true)?),
        "x-expires" => out.expires = Some(c.millis(key, v, false)?),
        "x-max-length" => out.max_length = Some(c.non_neg(key, v)?),
        "x-max-length-bytes" => out.max_length_bytes = Some(c.non_neg(key, v)?),
        "x-delivery-limit" => out.delivery_limit = Some(c.non_neg(key, v)?),
        "x-max-priority" => {
            let p = c.non_neg(key, v)?;
            if p > 255 {
                return Err(c.invalid(key, format!("{{max_value_exceeded,{p}}}")));
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
                _ => return Err(c.invalid(key, "invalid_overflow".into())),
            };
        }
        "x-single-active-consumer" => match v {
            AMQPValue::Boolean(b) => out.single_active_consumer = *b,
            other => {
                let why = format!("{{unacceptable_type,{}}}", crate::args::type_name(other));
                return Err(c.invalid(key, why));
            }
        },
        "x-dead-letter-exchange" => match v {
            AMQPValue::LongString(_) => out.dead_letter_exchange = crate::args::str_value(v),
            other => return Err(c.wrong_type(key, other)),
        },
        "x-dead-letter-routing-key" => out.dead_letter_routing_key = Some(dlx_key(c, key, v)?),
        "x-queue-type" => {
            let t = c.string(key, v)?;
            if t != "classic" {
                return Err(unsupported_type(c, key, &t));
            }
        }
        _ => {}
    }
    Ok(())
}

/// `x-dead-letter-routing-key`: dead letters carry it as their routing key, a shortstr on
/// the wire. RabbitMQ accepts a longer one and then fails every delivery of such a dead
/// letter (541); refusing it here keeps the queue usable.
fn dlx_key(c: &Checker<'_>, key: &str, v: &AMQPValue) -> Result<String, AmqpError> {
    let k = c.string(key, v)?;
    if k.len() > crate::names::MAX_SHORTSTR {
        return Err(c.invalid(
            key,
            format!(
                "\"{} bytes, longer than a routing key can be (255)\"",
                k.len()
            ),
        ));
    }
    Ok(k)
}
