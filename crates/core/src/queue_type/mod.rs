//! Queue types, as RabbitMQ's `rabbit_queue_type`: each type (classic, quorum, stream)
//! decides which declare arguments and flags it accepts, which arguments
//! must match on redeclare, and what it supports (basic.get, priorities, global qos, …),
//! which the server asks before dispatching a method to a queue.
//!
//! The registry is keyed by `x-queue-type` (classic when absent). A declare naming a type
//! that is not registered is checked by the default type's rules, which refuse it in the
//! order RabbitMQ checks arguments with RabbitMQ's text ("unsupported queue type").
//!
//! A new queue type is one new file here with a [`QueueType`] impl and one line in
//! [`REGISTRY`].

pub mod classic;
pub mod quorum;
pub mod stream;

use crate::args::{Checker, QueueArgs};
use crate::error::AmqpError;
use amq_protocol::types::{AMQPValue, FieldTable};

/// A queue.declare as its queue type checks it.
#[derive(Debug, Clone, Copy)]
pub struct QueueDeclare<'a> {
    /// The queue's name.
    pub name: &'a str,
    /// The vhost's name (for error texts).
    pub vhost: &'a str,
    /// Durable flag.
    pub durable: bool,
    /// Exclusive flag.
    pub exclusive: bool,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// Arguments.
    pub arguments: &'a FieldTable,
}

/// What a queue type supports. The server asks before it dispatches a method to a
/// queue; a method a type does not support is refused there, not inside the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// basic.get (streams: no).
    pub basic_get: bool,
    /// Message priorities (`x-max-priority`).
    pub priorities: bool,
    /// Per-message TTL (the `expiration` property) and `x-message-ttl`.
    pub per_message_ttl: bool,
    /// Dead-lettering (`x-dead-letter-exchange`).
    pub dead_lettering: bool,
    /// Exclusive queues.
    pub exclusive: bool,
    /// Non-durable queues.
    pub non_durable: bool,
    /// Auto-delete queues.
    pub auto_delete: bool,
    /// Channel-wide prefetch (basic.qos with global=true).
    pub global_qos: bool,
    /// Server-named queues (declare with an empty name).
    pub server_named: bool,
    /// Consumer priorities (`x-priority` at basic.consume).
    pub consumer_priority: bool,
    /// `x-single-active-consumer`.
    pub single_active_consumer: bool,
    /// Requeue on reject/nack/recover and on channel close.
    pub requeue: bool,
}

impl Capabilities {
    /// Everything (the classic type).
    pub const ALL: Capabilities = Capabilities {
        basic_get: true,
        priorities: true,
        per_message_ttl: true,
        dead_lettering: true,
        exclusive: true,
        non_durable: true,
        auto_delete: true,
        global_qos: true,
        server_named: true,
        consumer_priority: true,
        single_active_consumer: true,
        requeue: true,
    };
}

/// One queue type: its declare rules and what it supports.
pub trait QueueType: Send + Sync + 'static {
    /// The type's name, as `x-queue-type` gives it.
    fn name(&self) -> &'static str;

    /// Reads and checks the declare arguments (406 with RabbitMQ's text for a bad one).
    /// Also used for stored definitions, whose flags were checked when first declared.
    fn parse_arguments(
        &self,
        arguments: &FieldTable,
        queue: &str,
        vhost: &str,
    ) -> Result<QueueArgs, AmqpError>;

    /// Checks a whole queue.declare: flags (a type may refuse exclusive or non-durable
    /// queues) and arguments. By default only the arguments are checked.
    fn validate_declare(&self, d: &QueueDeclare<'_>) -> Result<QueueArgs, AmqpError> {
        self.parse_arguments(d.arguments, d.name, d.vhost)
    }

    /// The arguments whose values must match when a queue of this type is redeclared.
    fn equivalence_keys(&self) -> &'static [&'static str];

    /// What the type supports.
    fn capabilities(&self) -> Capabilities;
}

/// The registered queue types; the first is the default (no `x-queue-type`).
pub static REGISTRY: &[&dyn QueueType] = &[&classic::Classic, &quorum::Quorum, &stream::Stream];

/// The registered queue type of this name.
pub fn lookup(name: &str) -> Option<&'static dyn QueueType> {
    REGISTRY.iter().copied().find(|t| t.name() == name)
}

/// The type of a queue declared without `x-queue-type` (classic).
pub fn default_type() -> &'static dyn QueueType {
    &classic::Classic
}

/// The registered type `x-queue-type` names in these arguments (the default when there
/// is none); `None` when it names no registered type or is not a long string.
pub fn named_in(arguments: &FieldTable) -> Option<&'static dyn QueueType> {
    match arguments.inner().get("x-queue-type") {
        None => Some(default_type()),
        Some(AMQPValue::LongString(s)) => lookup(&String::from_utf8_lossy(s.as_bytes())),
        Some(_) => None,
    }
}

/// The type of a declared queue, from its arguments (checked at declare).
pub fn of_arguments(arguments: &FieldTable) -> &'static dyn QueueType {
    named_in(arguments).unwrap_or_else(default_type)
}

/// Reads and checks queue arguments by the rules of their type; a type that is not
/// registered is refused by the default type's rules, in argument order.
pub fn parse_arguments(
    arguments: &FieldTable,
    queue: &str,
    vhost: &str,
) -> Result<QueueArgs, AmqpError> {
    of_arguments(arguments).parse_arguments(arguments, queue, vhost)
}

/// Checks a queue.declare by the rules of the type it names (see [`parse_arguments`]).
pub fn validate_declare(d: &QueueDeclare<'_>) -> Result<QueueArgs, AmqpError> {
    of_arguments(d.arguments).validate_declare(d)
}

/// The refusal of an `x-queue-type` naming a type this broker does not run (RabbitMQ's
/// text: every type RabbitMQ has is registered here).
pub(crate) fn unsupported_type(c: &Checker<'_>, key: &str, t: &str) -> AmqpError {
    c.invalid(key, format!("\"unsupported queue type '{t}'\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{LongString, ShortString};

    use crate::test_support::table;

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(v))
    }

    fn declare(args: &FieldTable) -> QueueDeclare<'_> {
        QueueDeclare {
            name: "q",
            vhost: "/",
            durable: false,
            exclusive: true,
            auto_delete: true,
            arguments: args,
        }
    }

    fn refusal(pairs: &[(&str, AMQPValue)]) -> String {
        validate_declare(&declare(&table(pairs)))
            .unwrap_err()
            .reply_text()
    }

    #[test]
    fn classic_is_the_default_and_registered_by_name() {
        assert_eq!(default_type().name(), "classic");
        assert_eq!(lookup("classic").map(|t| t.name()), Some("classic"));
        assert_eq!(lookup("quorum").map(|t| t.name()), Some("quorum"));
        assert_eq!(of_arguments(&table(&[])).name(), "classic");
        assert_eq!(
            named_in(&table(&[("x-queue-type", s("classic"))])).map(|t| t.name()),
            Some("classic")
        );
        assert_eq!(
            named_in(&table(&[("x-queue-type", s("stream"))])).map(|t| t.name()),
            Some("stream")
        );
        let short = AMQPValue::ShortString(ShortString::from("classic"));
        assert!(named_in(&table(&[("x-queue-type", short)])).is_none());
    }

    #[test]
    fn classic_supports_everything_and_any_flags() {
        let t = default_type();
        assert_eq!(t.capabilities(), Capabilities::ALL);
        assert!(t.equivalence_keys().contains(&"x-queue-type"));
        let args = table(&[("x-max-priority", AMQPValue::LongInt(5))]);
        assert_eq!(
            validate_declare(&declare(&args)).unwrap().max_priority,
            Some(5)
        );
    }

    #[test]
    fn types_not_run_here_get_the_texts_they_always_got() {
        assert!(
            refusal(&[("x-queue-type", s("fast"))]).ends_with("\"unsupported queue type 'fast'\"")
        );
        let short = AMQPValue::ShortString(ShortString::from("classic"));
        assert!(refusal(&[("x-queue-type", short)]).ends_with("{unacceptable_type,shortstr}"));
    }

    /// Arguments are checked in table order whatever the type: a bad argument before
    /// `x-queue-type` is reported first, one after it is not reached.
    #[test]
    fn an_unknown_type_is_refused_in_argument_order() {
        let bad_ttl = ("x-message-ttl", AMQPValue::LongInt(-1));
        assert!(refusal(&[bad_ttl, ("x-queue-type", s("fast"))]).contains("x-message-ttl"));
        let bad_sac = ("x-single-active-consumer", AMQPValue::LongInt(1));
        assert!(refusal(&[bad_sac, ("x-queue-type", s("fast"))]).contains("'x-queue-type'"));
    }
}
