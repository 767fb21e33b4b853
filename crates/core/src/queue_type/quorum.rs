//! The quorum queue type (rabbit_quorum_queue): a replicated queue whose state machine is
//! [`crate::quorum::QqState`]. Its rules were read off RabbitMQ 3.10 (every text and code
//! below was asked of it with pika), except where RabbitMQ 4.x changed a default:
//!
//! - durable only: auto-delete, then exclusive, then non-durable are refused (406
//!   `invalid property '…'`), in that order;
//! - argument values are checked in RabbitMQ's fixed order (its `declare_args` list, not
//!   the order of the table), then arguments the type refuses (`x-max-priority`,
//!   `x-queue-mode`, `x-queue-master-locator`, stream arguments) with `… of queue type
//!   rabbit_quorum_queue` (RabbitMQ names the first in wire order; a field table keeps
//!   none, so of several the first by name);
//! - `x-delivery-limit` defaults to [`DEFAULT_DELIVERY_LIMIT`] (20, RabbitMQ 4.x; 3.10 had
//!   none) and a negative value means no limit (4.x); RabbitMQ does not check its type,
//!   a non-integer counts as absent;
//! - `x-overflow` `reject-publish-dlx` is accepted and behaves as `drop-head` (what 3.10
//!   does: the oldest messages are dead-lettered, every publish is confirmed);
//! - consumers: no global qos (540), `x-priority` honoured, the exclusive flag of
//!   basic.consume is ignored (3.10 lets a second consumer in), basic.get and requeue work.
//!
//! Registered in [`super::REGISTRY`]; the server serves it with one Raft group per
//! queue (`broker_cluster::quorum`), and a broker without a data dir refuses it.

use super::{unsupported_type, Capabilities, QueueDeclare, QueueType};
use crate::args::{int_value, Checker, Overflow, QueueArgs};
use crate::error::AmqpError;
use amq_protocol::types::{AMQPValue, FieldTable};

/// The delivery limit of a quorum queue declared without `x-delivery-limit` (RabbitMQ
/// 4.x; 3.10 had no limit).
pub const DEFAULT_DELIVERY_LIMIT: u64 = 20;

/// Quorum queue arguments whose values must match on redeclare, in the order RabbitMQ
/// 3.10 compares them (asked of it one key at a time: the dead-letter keys, x-expires,
/// the length limits, x-overflow and single active consumer before `x-queue-type`; the
/// others after it, where only a redeclare naming the type reaches them).
pub const EQUIVALENCE_KEYS: &[&str] = &[
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-overflow",
    "x-single-active-consumer",
    "x-queue-type",
    "x-message-ttl",
    "x-quorum-initial-group-size",
    "x-queue-leader-locator",
    "x-delivery-limit",
    "x-delayed-retry-type",
    "x-delayed-retry-min",
    "x-delayed-retry-max",
    "x-delayed-retry-multiplier",
    "x-delayed-retry-jitter",
];

/// Arguments checked for their value, in the order RabbitMQ checks them.
const CHECK_ORDER: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-overflow",
    "x-single-active-consumer",
    "x-queue-type",
    "x-quorum-initial-group-size",
    "x-queue-leader-locator",
    "x-delivery-limit",
];

/// Arguments of other queue types that a quorum queue refuses at declare.
const REFUSED: &[&str] = &[
    "x-max-priority",
    "x-queue-mode",
    "x-queue-master-locator",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
];

/// The quorum queue type.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quorum;

impl QueueType for Quorum {
    fn name(&self) -> &'static str {
        "quorum"
    }

    fn parse_arguments(
        &self,
        arguments: &FieldTable,
        queue: &str,
        vhost: &str,
    ) -> Result<QueueArgs, AmqpError> {
        let c = Checker { queue, vhost };
        let table = arguments.inner();
        let mut out = QueueArgs {
            delivery_limit: Some(DEFAULT_DELIVERY_LIMIT),
            ..QueueArgs::default()
        };
        for key in CHECK_ORDER {
            if let Some(v) = table.get(*key) {
                apply(&c, &mut out, key, v, arguments)?;
            }
        }
        if let Some((k, _)) = table.iter().find(|(k, _)| REFUSED.contains(&k.as_str())) {
            return Err(AmqpError::precondition_failed(format!(
                "invalid arg '{}' for queue '{queue}' in vhost '{vhost}' of queue type rabbit_quorum_queue",
                k.as_str()
            )));
        }
        out.retry = crate::queue::retry::parse(&c, arguments)?;
        crate::dedup::DedupArgs::refuse_on(arguments, queue, vhost, "rabbit_quorum_queue")?;
        Ok(out)
    }

    fn validate_declare(&self, d: &QueueDeclare<'_>) -> Result<QueueArgs, AmqpError> {
        // RabbitMQ's order: auto-delete, exclusive, non-durable
        let refused = if d.auto_delete {
            Some("auto-delete")
        } else if d.exclusive {
            Some("exclusive-owner")
        } else if !d.durable {
            Some("non-durable")
        } else {
            None
        };
        if let Some(p) = refused {
            return Err(AmqpError::precondition_failed(format!(
                "invalid property '{p}' for queue '{}' in vhost '{}'",
                d.name, d.vhost
            )));
        }
        self.parse_arguments(d.arguments, d.name, d.vhost)
    }

    fn equivalence_keys(&self) -> &'static [&'static str] {
        EQUIVALENCE_KEYS
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            basic_get: true,
            priorities: false,
            per_message_ttl: true,
            dead_lettering: true,
            exclusive: false,
            non_durable: false,
            auto_delete: false,
            global_qos: false,
            server_named: true,
            consumer_priority: true,
            single_active_consumer: true,
            requeue: true,
        }
    }
}

/// Reads one argument into `out` (the whole table is there for the checks that look at
/// another argument).
fn apply(
    c: &Checker<'_>,
    out: &mut QueueArgs,
    key: &str,
    v: &AMQPValue,
    all: &FieldTable,
) -> Result<(), AmqpError> {
    match key {
        "x-expires" => out.expires = Some(c.millis(key, v, false)?),
        "x-message-ttl" => out.message_ttl = Some(c.millis(key, v, true)?),
        "x-dead-letter-exchange" => match v {
            AMQPValue::LongString(_) => out.dead_letter_exchange = crate::args::str_value(v),
            other => return Err(c.wrong_type(key, other)),
        },
        "x-dead-letter-routing-key" => {
            let k = c.string(key, v)?;
            if !all.inner().contains_key("x-dead-letter-exchange") {
                return Err(c.invalid(key, "routing_key_but_no_dlx_defined".into()));
            }
            if k.len() > crate::names::MAX_SHORTSTR {
                let why = format!(
                    "\"{} bytes, longer than a routing key can be (255)\"",
                    k.len()
                );
                return Err(c.invalid(key, why));
            }
            out.dead_letter_routing_key = Some(k);
        }
        "x-dead-letter-strategy" => {
            let s = c.string(key, v)?;
            if s != "at-most-once" && s != "at-least-once" {
                return Err(c.invalid(key, "invalid_dlx_strategy".into()));
            }
        }
        "x-max-length" => out.max_length = Some(c.non_neg(key, v)?),
        "x-max-length-bytes" => out.max_length_bytes = Some(c.non_neg(key, v)?),
        "x-max-in-memory-length" | "x-max-in-memory-bytes" => {
            c.non_neg(key, v)?;
        }
        "x-overflow" => {
            out.overflow = match c.string(key, v)?.as_str() {
                "drop-head" | "reject-publish-dlx" => Overflow::DropHead,
                "reject-publish" => Overflow::RejectPublish,
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
        "x-queue-type" => {
            let t = c.string(key, v)?;
            if t != "quorum" {
                return Err(unsupported_type(c, key, &t));
            }
        }
        "x-quorum-initial-group-size" => {
            out.quorum_initial_group_size = Some(c.positive(key, v)?);
        }
        "x-queue-leader-locator" => {
            let l = c.string(key, v)?;
            // RabbitMQ 3.10 takes the older names of balanced too
            if !matches!(
                l.as_str(),
                "client-local" | "balanced" | "random" | "least-leaders"
            ) {
                return Err(c.invalid(key, "invalid_queue_locator_arg".into()));
            }
        }
        "x-delivery-limit" => out.delivery_limit = delivery_limit(v),
        _ => {}
    }
    Ok(())
}

/// `x-delivery-limit`: a limit when non-negative, none when negative (4.x); RabbitMQ
/// does not check the type, so another type leaves the default.
fn delivery_limit(v: &AMQPValue) -> Option<u64> {
    match int_value(v) {
        Some(i) => u64::try_from(i).ok(),
        None => Some(DEFAULT_DELIVERY_LIMIT),
    }
}

/// RabbitMQ's refusal of a consumer on a quorum queue from a channel whose prefetch is
/// channel-wide (basic.qos global): 540, which closes the connection.
pub fn global_qos_refused(queue: &str, vhost: &str) -> AmqpError {
    AmqpError::not_implemented(format!(
        "queue '{queue}' in vhost '{vhost}' does not support global qos"
    ))
}

#[cfg(test)]
#[path = "quorum_tests.rs"]
mod tests;
