//! Exchange types, one file each, as RabbitMQ's `rabbit_exchange_type` behaviour: a type
//! checks its declare and binding arguments, keeps whatever index it routes by, and routes
//! a message (routing key and headers) to destinations.
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
use amq_protocol::types::FieldTable;
use std::sync::Arc;

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

    /// Checks the type's own declare arguments (the common ones, such as
    /// `alternate-exchange`, are checked for every type by [`ExchangeKind::validate_declare`]).
    fn validate_declare(
        _arguments: &FieldTable,
        _exchange: &str,
        _vhost: &str,
    ) -> Result<(), AmqpError> {
        Ok(())
    }

    /// Checks a binding's arguments at bind (a headers exchange's `x-match`).
    fn validate_binding(_arguments: &FieldTable) -> Result<(), AmqpError> {
        Ok(())
    }

    /// The first binding of `(dest, key)` was added: index it. Bindings that differ only
    /// in arguments share one call.
    fn bind(&mut self, _key: &Arc<str>, _dest: &Destination) {}

    /// The last binding of `(dest, key)` was removed: drop it from the index.
    fn unbind(&mut self, _key: &Arc<str>, _dest: &Destination) {}

    /// Appends the destinations of a message with this routing key and headers, each
    /// once. `set` is every binding of the exchange, for types that route by it instead
    /// of (or besides) an index of their own.
    fn route(
        &self,
        set: &BindingSet,
        routing_key: &str,
        headers: Option<&FieldTable>,
        out: &mut Vec<Destination>,
    );
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

            /// Checks a binding's arguments at bind (406 with RabbitMQ's text).
            pub fn validate_binding(self, arguments: &FieldTable) -> Result<(), AmqpError> {
                match self {
                    $(ExchangeKind::$variant => {
                        <$module::$ty as ExchangeType>::validate_binding(arguments)
                    })+
                }
            }

            /// An empty index for an exchange of this type.
            pub(crate) fn new_index(self) -> Index {
                match self {
                    $(ExchangeKind::$variant => Index::$variant(<$module::$ty>::default()),)+
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
                routing_key: &str,
                headers: Option<&FieldTable>,
                out: &mut Vec<Destination>,
            ) {
                match self {
                    $(Index::$variant(i) => i.route(set, routing_key, headers, out),)+
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
}

impl ExchangeKind {
    /// Parses the type named in exchange.declare; `None` for a type not registered.
    pub fn parse(s: &str) -> Option<ExchangeKind> {
        lookup(s)
    }

    /// The name used on the wire (as [`ExchangeKind::as_str`]).
    pub fn name(self) -> &'static str {
        self.as_str()
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
            ["direct", "fanout", "topic", "headers"]
        );
        assert_eq!(lookup("x-consistent-hash"), None);
        assert_eq!(lookup("Direct"), None);
    }

    #[test]
    fn only_headers_routes_by_headers() {
        for k in ExchangeKind::ALL {
            assert_eq!(k.routes_by_headers(), *k == ExchangeKind::Headers);
            assert_eq!(k.new_index().kind(), *k);
        }
    }

    fn table(k: &str, v: AMQPValue) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert(ShortString::from(k), v);
        t
    }

    #[test]
    fn declare_arguments_are_checked_for_every_type() {
        let bad = table("alternate-exchange", AMQPValue::LongInt(1));
        for k in ExchangeKind::ALL {
            assert_eq!(
                k.validate_declare(&bad, "x", "/").unwrap_err().reply_text(),
                "PRECONDITION_FAILED - invalid type 'signedint' for arg 'alternate-exchange' \
                 in exchange 'x' in vhost '/'"
            );
            let good = table("alternate-exchange", AMQPValue::LongString("ae".into()));
            assert!(k.validate_declare(&good, "x", "/").is_ok());
        }
    }

    #[test]
    fn only_headers_checks_x_match_at_bind() {
        let bad = table("x-match", AMQPValue::LongString(LongString::from("some")));
        for k in ExchangeKind::ALL {
            assert_eq!(
                k.validate_binding(&bad).is_err(),
                *k == ExchangeKind::Headers
            );
        }
    }
}
