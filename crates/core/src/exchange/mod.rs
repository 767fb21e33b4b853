//! Exchange types, one file each, as RabbitMQ's `rabbit_exchange_type` behaviour: a type
//! checks its declare and binding arguments, keeps whatever index it routes by, and routes
//! a message ([`RouteInput`]: routing key, headers and, for the types that hash on one,
//! the other properties) to destinations.
//!
//! The bindings common to every type (identity, order, by destination) live in
//! [`crate::routing::Bindings`], which hands each type the changes to its index and asks
//! it to route. Types are registered in one list below (`exchange_types!`); the list
//! generates [`ExchangeKind`] (the registry: [`lookup`] by name) and the per-exchange
//! index enum that `Bindings` holds, so a route is one `match` and a direct call into the
//! type, never a virtual call per binding.
//!
//! A new exchange type is one new file here with an [`ExchangeType`] impl and one line in
//! the registration list.

use crate::error::AmqpError;
use crate::routing::{BindingSet, Destination};
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::FieldTable;
use std::sync::Arc;

/// What a route reads of a message: its routing key, its headers and (for a type that
/// hashes on `message_id`, `correlation_id` or `timestamp`) its other properties. Built
/// once per publish from what the channel already holds; copying it costs three words.
#[derive(Debug, Clone, Copy)]
pub struct RouteInput<'a> {
    /// The message's routing key.
    pub routing_key: &'a str,
    /// Its headers, if any.
    pub headers: Option<&'a FieldTable>,
    /// Its properties, where the caller has them (`None`: routed as a message without
    /// them).
    pub properties: Option<&'a AMQPProperties>,
}

impl<'a> RouteInput<'a> {
    /// A message with this routing key and headers and no other properties.
    pub fn new(routing_key: &'a str, headers: Option<&'a FieldTable>) -> Self {
        RouteInput {
            routing_key,
            headers,
            properties: None,
        }
    }

    /// A message with this routing key and properties (its headers are theirs).
    pub fn with_properties(routing_key: &'a str, properties: Option<&'a AMQPProperties>) -> Self {
        RouteInput {
            routing_key,
            headers: properties.and_then(|p| p.headers().as_ref()),
            properties,
        }
    }
}

/// One exchange type: its rules, and (as the value of `Self`) the index one exchange of
/// the type routes by.
///
/// The value is cloned for every snapshot an exchange publishes, so it must be cheap to
/// clone (persistent collections, shared nodes): a bind copies only what it changes.
pub trait ExchangeType: Clone + Default + std::fmt::Debug + Send + Sync + 'static {
    /// The type's name in exchange.declare (`"direct"`, …).
    const NAME: &'static str;

    /// Whether routes depend on message headers, so a route cannot be cached by routing
    /// key.
    const ROUTES_BY_HEADERS: bool = false;

    /// The index of a new exchange declared with these (already validated) arguments:
    /// a type that routes by one of them reads it here, once, not per message.
    fn with_arguments(_arguments: &FieldTable) -> Self {
        Self::default()
    }

    /// Whether this exchange's routes depend on more than the routing key (headers or
    /// properties), so they cannot be cached by key. The type's constant unless its
    /// declare arguments decide (a consistent-hash exchange with `hash-header`).
    fn routes_by_headers(&self) -> bool {
        Self::ROUTES_BY_HEADERS
    }

    /// Checks the type's own declare arguments (the common ones, such as
    /// `alternate-exchange`, are checked for every type by [`ExchangeKind::validate_declare`]).
    fn validate_declare(
        _arguments: &FieldTable,
        _exchange: &str,
        _vhost: &str,
    ) -> Result<(), AmqpError> {
        Ok(())
    }

    /// Checks a binding's key and arguments at bind (a headers exchange's `x-match`, a
    /// consistent-hash exchange's weight).
    fn validate_binding(_key: &str, _arguments: &FieldTable) -> Result<(), AmqpError> {
        Ok(())
    }

    /// The first binding of `(dest, key)` was added: index it. Bindings that differ only
    /// in arguments share one call.
    fn bind(&mut self, _key: &Arc<str>, _dest: &Destination) {}

    /// The last binding of `(dest, key)` was removed: drop it from the index.
    fn unbind(&mut self, _key: &Arc<str>, _dest: &Destination) {}

    /// Appends the destinations of a message, each once. `set` is every binding of the
    /// exchange, for types that route by it instead of (or besides) an index of their own.
    fn route(&self, set: &BindingSet, msg: &RouteInput<'_>, out: &mut Vec<Destination>);
}

/// Generates the registry from the list of types: [`ExchangeKind`] with one variant per
/// type, and the index enum `Bindings` holds, both dispatching by `match`.
macro_rules! exchange_types {
    ($($(#[$doc:meta])* $variant:ident => $module:ident :: $ty:ident,)+) => {
        $(pub mod $module;)+

        /// The registered exchange types.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ExchangeKind {
            $($(#[$doc])* $variant,)+
        }

        impl ExchangeKind {
            /// Every registered type.
            pub const ALL: &'static [ExchangeKind] = &[$(ExchangeKind::$variant,)+];

            /// The name used on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ExchangeKind::$variant => <$module::$ty as ExchangeType>::NAME,)+
                }
            }

            /// Whether routes depend on message headers (and so cannot be cached by key).
            pub fn routes_by_headers(self) -> bool {
                match self {
                    $(ExchangeKind::$variant => <$module::$ty as ExchangeType>::ROUTES_BY_HEADERS,)+
                }
            }

            fn validate_own(
                self,
                arguments: &FieldTable,
                exchange: &str,
                vhost: &str,
            ) -> Result<(), AmqpError> {
                match self {
                    $(ExchangeKind::$variant => {
                        <$module::$ty as ExchangeType>::validate_declare(arguments, exchange, vhost)
                    })+
                }
            }

            /// Checks a binding's key and arguments at bind (406 with RabbitMQ's text).
            pub fn validate_binding(self, key: &str, arguments: &FieldTable) -> Result<(), AmqpError> {
                match self {
                    $(ExchangeKind::$variant => {
                        <$module::$ty as ExchangeType>::validate_binding(key, arguments)
                    })+
                }
            }

            /// An empty index for an exchange of this type declared with `arguments`.
            pub(crate) fn new_index(self, arguments: &FieldTable) -> Index {
                match self {
                    $(ExchangeKind::$variant => {
                        Index::$variant(<$module::$ty as ExchangeType>::with_arguments(arguments))
                    })+
                }
            }
        }

        /// One exchange's type-specific index: the registered type's value.
        #[derive(Debug, Clone)]
        pub(crate) enum Index {
            $($variant($module::$ty),)+
        }

        impl Index {
            pub(crate) fn kind(&self) -> ExchangeKind {
                match self {
                    $(Index::$variant(_) => ExchangeKind::$variant,)+
                }
            }

            #[inline]
            pub(crate) fn bind(&mut self, key: &Arc<str>, dest: &Destination) {
                match self {
                    $(Index::$variant(i) => i.bind(key, dest),)+
                }
            }

            #[inline]
            pub(crate) fn unbind(&mut self, key: &Arc<str>, dest: &Destination) {
                match self {
                    $(Index::$variant(i) => i.unbind(key, dest),)+
                }
            }

            #[inline]
            pub(crate) fn route(
                &self,
                set: &BindingSet,
                msg: &RouteInput<'_>,
                out: &mut Vec<Destination>,
            ) {
                match self {
                    $(Index::$variant(i) => i.route(set, msg, out),)+
                }
            }

            #[inline]
            pub(crate) fn routes_by_headers(&self) -> bool {
                match self {
                    $(Index::$variant(i) => i.routes_by_headers(),)+
                }
            }
        }
    };
}

// The registration list: one line per exchange type.
exchange_types! {
    /// Exact routing-key match.
    Direct => direct::Direct,
    /// Every bound destination.
    Fanout => fanout::Fanout,
    /// Dotted-word patterns with `*` and `#`.
    Topic => topic::Topic,
    /// Header values, by `x-match`.
    Headers => headers::Headers,
    /// One destination per message by a weighted consistent hash (RabbitMQ's plugin).
    ConsistentHash => consistent_hash::ConsistentHash,
    /// One destination per message: hash of the routing key mod the destinations.
    ModulusHash => modulus_hash::ModulusHash,
    /// Holds messages with an `x-delay` header, then routes as its `x-delayed-type`.
    Delayed => delayed::Delayed,
}

pub mod hashing;

impl ExchangeKind {
    /// Parses the type named in exchange.declare; `None` for a type not registered.
    pub fn parse(s: &str) -> Option<ExchangeKind> {
        lookup(s)
    }

    /// The name used on the wire (as [`ExchangeKind::as_str`]).
    pub fn name(self) -> &'static str {
        self.as_str()
    }

    /// The type whose rules an exchange declared with `arguments` routes and binds by:
    /// a delayed exchange's `x-delayed-type`, any other its own.
    pub fn routing_kind(self, arguments: &FieldTable) -> ExchangeKind {
        match self {
            ExchangeKind::Delayed => delayed::inner_kind(arguments).unwrap_or(self),
            k => k,
        }
    }

    /// Checks an exchange.declare's arguments: those every type shares
    /// (`alternate-exchange` must be a string), then the type's own.
    pub fn validate_declare(
        self,
        arguments: &FieldTable,
        exchange: &str,
        vhost: &str,
    ) -> Result<(), AmqpError> {
        crate::args::check_exchange_args(arguments, exchange, vhost)?;
        self.validate_own(arguments, exchange, vhost)
    }
}

/// The registered exchange type of this name.
pub fn lookup(name: &str) -> Option<ExchangeKind> {
    ExchangeKind::ALL
        .iter()
        .copied()
        .find(|k| k.as_str() == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{AMQPValue, LongString, ShortString};

    #[test]
    fn every_registered_type_is_found_by_its_name() {
        for k in ExchangeKind::ALL {
            assert_eq!(lookup(k.as_str()), Some(*k));
            assert_eq!(ExchangeKind::parse(k.name()), Some(*k));
        }
        assert_eq!(
            ExchangeKind::ALL
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>(),
            [
                "direct",
                "fanout",
                "topic",
                "headers",
                "x-consistent-hash",
                "x-modulus-hash",
                "x-delayed-message"
            ]
        );
        assert_eq!(lookup("Direct"), None);
    }

    #[test]
    fn only_headers_routes_by_headers() {
        for k in ExchangeKind::ALL {
            assert_eq!(k.routes_by_headers(), *k == ExchangeKind::Headers);
            let index = k.new_index(&FieldTable::default());
            assert_eq!(index.kind(), *k);
            assert_eq!(index.routes_by_headers(), *k == ExchangeKind::Headers);
        }
    }

    fn table(k: &str, v: AMQPValue) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert(ShortString::from(k), v);
        t
    }

    #[test]
    fn declare_arguments_are_checked_for_every_type() {
        let mut bad = table("alternate-exchange", AMQPValue::LongInt(1));
        bad.insert(
            "x-delayed-type".into(),
            AMQPValue::LongString("direct".into()),
        );
        for k in ExchangeKind::ALL {
            assert_eq!(
                k.validate_declare(&bad, "x", "/").unwrap_err().reply_text(),
                "PRECONDITION_FAILED - invalid type 'signedint' for arg 'alternate-exchange' \
                 in exchange 'x' in vhost '/'"
            );
            let mut good = table("alternate-exchange", AMQPValue::LongString("ae".into()));
            good.insert(
                "x-delayed-type".into(),
                AMQPValue::LongString("direct".into()),
            );
            assert!(k.validate_declare(&good, "x", "/").is_ok());
        }
    }

    #[test]
    fn only_headers_checks_x_match_at_bind() {
        let bad = table("x-match", AMQPValue::LongString(LongString::from("some")));
        for k in ExchangeKind::ALL {
            assert_eq!(
                k.validate_binding("1", &bad).is_err(),
                *k == ExchangeKind::Headers
            );
        }
    }
}
