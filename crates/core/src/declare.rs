//! The rules of exchange and queue declares that decide something, with no I/O, shared by
//! AMQP and the management API: whether a redeclare is equivalent to what exists (which
//! flags and arguments must match, with RabbitMQ's 405 and 406 texts), and which names
//! clients may not declare, delete or bind (the default exchange and the `amq.` prefix,
//! 403). Argument values themselves are the types' rules (`crate::exchange`,
//! `crate::queue_type`).

use crate::args::{check_equivalent, EXCHANGE_EQUIVALENCE_KEYS};
use crate::error::AmqpError;
use crate::exchange::ExchangeKind;
use crate::queue_type;
use amq_protocol::types::FieldTable;
use std::fmt::Display;

pub use crate::queue_type::QueueDeclare;

/// The prefix of names only the broker may create.
pub const RESERVED_PREFIX: &str = "amq.";

/// An exchange.declare's properties, or an existing exchange's.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeDeclare<'a> {
    /// Type.
    pub kind: ExchangeKind,
    /// Durable flag.
    pub durable: bool,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// Internal flag.
    pub internal: bool,
    /// Arguments.
    pub arguments: &'a FieldTable,
}

/// RabbitMQ's 406 for a redeclare whose flag differs from the current one.
pub fn inequivalent(
    what: &str,
    arg: &str,
    name: &str,
    got: impl Display,
    cur: impl Display,
    vhost: &str,
) -> AmqpError {
    AmqpError::precondition_failed(format!(
        "inequivalent arg '{arg}' for {what} '{name}' in vhost '{vhost}': received '{got}' but current is '{cur}'"
    ))
}

/// Checks a redeclare of exchange `name` against the current one: type, durable,
/// auto_delete, internal, then the arguments RabbitMQ compares (406 on the first that
/// differs).
pub fn check_exchange_equivalent(
    name: &str,
    vhost: &str,
    cur: &ExchangeDeclare<'_>,
    new: &ExchangeDeclare<'_>,
) -> Result<(), AmqpError> {
    let differs = |arg: &str, got: &dyn Display, was: &dyn Display| {
        Err(inequivalent("exchange", arg, name, got, was, vhost))
    };
    if cur.kind != new.kind {
        return differs("type", &new.kind.as_str(), &cur.kind.as_str());
    }
    if cur.durable != new.durable {
        return differs("durable", &new.durable, &cur.durable);
    }
    if cur.auto_delete != new.auto_delete {
        return differs("auto_delete", &new.auto_delete, &cur.auto_delete);
    }
    if cur.internal != new.internal {
        return differs("internal", &new.internal, &cur.internal);
    }
    check_equivalent(
        "exchange",
        name,
        vhost,
        new.arguments,
        cur.arguments,
        EXCHANGE_EQUIVALENCE_KEYS,
    )
}

/// The 405 RabbitMQ answers for an exclusive queue of another connection, and for a
/// redeclare whose exclusive flag differs.
pub fn queue_locked(name: &str, vhost: &str) -> AmqpError {
    AmqpError::resource_locked(format!(
        "cannot obtain exclusive access to locked queue '{name}' in vhost '{vhost}'. It could be \
         originally declared on another connection or the exclusive property value does \
         not match that of the original declaration."
    ))
}

/// Checks a redeclare against the current queue (whose owner the caller has checked):
/// exclusive (405), durable, auto_delete, then the arguments the current queue's type
/// compares (406), as RabbitMQ: only those, before any check of their values.
pub fn check_queue_equivalent(
    cur: &QueueDeclare<'_>,
    new: &QueueDeclare<'_>,
) -> Result<(), AmqpError> {
    let (name, vhost) = (new.name, new.vhost);
    if cur.exclusive != new.exclusive {
        return Err(queue_locked(name, vhost));
    }
    if cur.durable != new.durable {
        let (got, was) = (new.durable, cur.durable);
        return Err(inequivalent("queue", "durable", name, got, was, vhost));
    }
    if cur.auto_delete != new.auto_delete {
        let (got, was) = (new.auto_delete, cur.auto_delete);
        return Err(inequivalent("queue", "auto_delete", name, got, was, vhost));
    }
    let keys = queue_type::of_arguments(cur.arguments).equivalence_keys();
    check_equivalent("queue", name, vhost, new.arguments, cur.arguments, keys)
}

/// The 403 for declaring, deleting or binding the default exchange.
pub fn default_exchange_refused() -> AmqpError {
    AmqpError::access_refused("operation not permitted on the default exchange")
}

/// Refuses the default exchange (`""`): it cannot be declared, deleted or bound (403).
pub fn check_not_default_exchange(name: &str) -> Result<(), AmqpError> {
    if name.is_empty() {
        return Err(default_exchange_refused());
    }
    Ok(())
}

/// exchange.declare of `name`: the default exchange is refused, and so is a new name
/// with the reserved prefix (an existing amq.* exchange may be redeclared) (403).
pub fn check_exchange_declare_name(name: &str, exists: bool) -> Result<(), AmqpError> {
    check_not_default_exchange(name)?;
    if name.starts_with(RESERVED_PREFIX) && !exists {
        return Err(AmqpError::access_refused(format!(
            "exchange name '{name}' contains reserved prefix 'amq.*'"
        )));
    }
    Ok(())
}

/// The default and amq.* exchanges may not be declared, deleted or bound to by clients,
/// whether they exist or not (403).
pub fn check_not_reserved_exchange(name: &str) -> Result<(), AmqpError> {
    check_exchange_declare_name(name, false)
}

/// exchange.delete of `name`: the default and amq.* exchanges are refused (403).
pub fn check_exchange_delete_name(name: &str, vhost: &str) -> Result<(), AmqpError> {
    check_not_default_exchange(name)?;
    if name.starts_with(RESERVED_PREFIX) {
        return Err(AmqpError::access_refused(format!(
            "deletion of system exchange '{name}' in vhost '{vhost}' not allowed"
        )));
    }
    Ok(())
}

/// queue.declare of `name`: a new name with the reserved prefix is refused (403); an
/// existing one (a server-named `amq.gen-…` queue) may be redeclared.
pub fn check_queue_declare_name(name: &str, exists: bool) -> Result<(), AmqpError> {
    if name.starts_with(RESERVED_PREFIX) && !exists {
        return Err(AmqpError::access_refused(format!(
            "queue name '{name}' contains reserved prefix 'amq.*'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
