//! The stream queue type (rabbit_stream_queue): an append-only log that keeps messages
//! after they are read. Durable only; retention by `x-max-length-bytes` and `x-max-age`,
//! segment size by `x-stream-max-segment-size-bytes`; consumers need a prefetch and
//! manual acks (credit), and read from the offset `x-stream-offset` names
//! ([`crate::stream`]). No basic.get, priorities, TTLs, dead-lettering or requeue.

use super::{unsupported_type, Capabilities, QueueDeclare, QueueType};
use crate::args::{Checker, QueueArgs};
use crate::error::AmqpError;
use amq_protocol::types::{AMQPValue, FieldTable};

/// RabbitMQ's default segment size (500 MB).
pub const DEFAULT_SEGMENT_BYTES: u64 = 500_000_000;

/// RabbitMQ's largest segment size (3 GB).
pub const MAX_SEGMENT_BYTES: u64 = 3_000_000_000;

/// Stream arguments whose values must match on redeclare.
pub const EQUIVALENCE_KEYS: &[&str] = &[
    "x-queue-type",
    "x-max-length-bytes",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
];

/// The stream queue type.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stream;

impl QueueType for Stream {
    fn name(&self) -> &'static str {
        "stream"
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
        crate::dedup::DedupArgs::refuse_on(arguments, queue, vhost, "rabbit_stream_queue")?;
        Ok(out)
    }

    fn validate_declare(&self, d: &QueueDeclare<'_>) -> Result<QueueArgs, AmqpError> {
        let what = format!("queue '{}' in vhost '{}'", d.name, d.vhost);
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
                "invalid property '{p}' for {what}"
            )));
        }
        self.parse_arguments(d.arguments, d.name, d.vhost)
    }

    fn equivalence_keys(&self) -> &'static [&'static str] {
        EQUIVALENCE_KEYS
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            basic_get: false,
            priorities: false,
            per_message_ttl: false,
            dead_lettering: false,
            exclusive: false,
            non_durable: false,
            auto_delete: false,
            global_qos: false,
            server_named: false,
            consumer_priority: false,
            single_active_consumer: false,
            requeue: false,
        }
    }
}

/// Reads one argument into `out`; arguments a stream does not use are ignored.
fn apply(c: &Checker<'_>, out: &mut QueueArgs, key: &str, v: &AMQPValue) -> Result<(), AmqpError> {
    match key {
        "x-max-length-bytes" => out.max_length_bytes = Some(c.non_neg(key, v)?),
        "x-max-age" => {
            let s = c.string(key, v)?;
            let ms = parse_age(&s).ok_or_else(|| c.invalid(key, "invalid_max_age".into()))?;
            out.max_age_ms = Some(ms);
        }
        "x-stream-max-segment-size-bytes" => {
            let n = c.non_neg(key, v)?;
            if n > MAX_SEGMENT_BYTES {
                return Err(c.invalid(key, format!("{{max_value_exceeded,{n}}}")));
            }
            out.stream_segment_bytes = Some(n.max(1));
        }
        "x-queue-type" => {
            let t = c.string(key, v)?;
            if t != "stream" {
                return Err(unsupported_type(c, key, &t));
            }
        }
        "x-queue-leader-locator" => {
            let l = c.string(key, v)?;
            if l != "client-local" && l != "balanced" {
                return Err(c.invalid(key, "invalid_queue_locator_arg".into()));
            }
        }
        k if REFUSED.contains(&k) => {
            return Err(AmqpError::precondition_failed(format!(
                "invalid arg '{k}' for queue '{}' in vhost '{}' of queue type rabbit_stream_queue",
                c.queue, c.vhost
            )))
        }
        _ => {}
    }
    Ok(())
}

/// Arguments of other queue types that a stream refuses at declare (RabbitMQ's list:
/// what classic and quorum queues take and a stream cannot honour).
const REFUSED: &[&str] = &[
    "x-message-ttl",
    "x-expires",
    "x-max-length",
    "x-max-priority",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-overflow",
    "x-single-active-consumer",
    "x-queue-mode",
    "x-queue-master-locator",
    "x-delivery-limit",
    "x-quorum-initial-group-size",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-delayed-retry-type",
    "x-delayed-retry-min",
    "x-delayed-retry-max",
    "x-delayed-retry-multiplier",
    "x-delayed-retry-jitter",
];

/// What a stream asks of a basic.consume (RabbitMQ's checks and texts): manual acks
/// (540, a connection error), a consumer prefetch (406), and no channel-wide prefetch
/// set after it (540).
pub fn check_consume(
    no_ack: bool,
    prefetch: u32,
    global_qos_last: bool,
    queue: &str,
    vhost: &str,
) -> Result<(), AmqpError> {
    let what = format!("queue '{queue}' in vhost '{vhost}'");
    if no_ack {
        return Err(AmqpError::not_implemented(format!(
            "automatic acknowledgement not supported by stream queues {what}"
        )));
    }
    if prefetch == 0 {
        return Err(AmqpError::precondition_failed(format!(
            "consumer prefetch count is not set for '{what}'"
        )));
    }
    if global_qos_last {
        return Err(AmqpError::not_implemented(format!(
            "{what} does not support global qos"
        )));
    }
    Ok(())
}

/// The refusal of a method a stream does not support (`basic.get`, `queue.purge`,
/// `basic.nack and basic.reject`): 540, which closes the connection, as RabbitMQ.
pub fn not_supported(method: &str, queue: &str, vhost: &str) -> AmqpError {
    AmqpError::not_implemented(format!(
        "{method} not supported by stream queues queue '{queue}' in vhost '{vhost}'"
    ))
}

/// RabbitMQ's `x-max-age`: a number and a unit, `Y` (365 days), `M` (30 days), `D`,
/// `h`, `m` or `s`; e.g. `7D`, `12h`. Returns milliseconds.
pub fn parse_age(s: &str) -> Option<u64> {
    let split = s.find(|ch: char| !ch.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok().filter(|n| *n > 0)?;
    let secs: u64 = match unit {
        "Y" => 365 * 86_400,
        "M" => 30 * 86_400,
        "D" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => return None,
    };
    n.checked_mul(secs)?.checked_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_as_rabbitmq_reads_them() {
        assert_eq!(parse_age("10s"), Some(10_000));
        assert_eq!(parse_age("30m"), Some(1_800_000));
        assert_eq!(parse_age("12h"), Some(43_200_000));
        assert_eq!(parse_age("7D"), Some(604_800_000));
        assert_eq!(parse_age("1M"), Some(2_592_000_000));
        assert_eq!(parse_age("1Y"), Some(31_536_000_000));
        for bad in [
            "", "10", "abc", "10x", "s", "-1s", "1.5h", "0s", "1d", "1h30m", " 1h",
        ] {
            assert_eq!(parse_age(bad), None, "{bad}");
        }
    }
}
