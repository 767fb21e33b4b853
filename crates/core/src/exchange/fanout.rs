//! The fanout exchange: a message goes to every bound destination, whatever its routing
//! key (rabbit_exchange_type_fanout).
//!
//! It needs no index of its own: the binding set already keeps the bindings by
//! destination, and routes each destination once however many bindings it has.

use super::ExchangeType;
use crate::routing::{BindingSet, Destination};
use amq_protocol::types::FieldTable;

/// The fanout type (no index: it routes by the binding set's destinations).
#[derive(Debug, Clone, Copy, Default)]
pub struct Fanout;

impl ExchangeType for Fanout {
    const NAME: &'static str = "fanout";

    #[inline]
    fn route(
        &self,
        set: &BindingSet,
        _routing_key: &str,
        _headers: Option<&FieldTable>,
        out: &mut Vec<Destination>,
    ) {
        out.extend(set.destinations().cloned());
    }
}
