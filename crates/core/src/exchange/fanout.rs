//! The fanout exchange: a message goes to every bound destination, whatever its routing
//! key (rabbit_exchange_type_fanout).
//!
//! It needs no index of its own: the binding set already keeps the bindings by
//! destination, and routes each destination once however many bindings it has.

use super::{ExchangeType, RouteInput};
use crate::routing::{BindingSet, Destination};

/// The fanout type (no index: it routes by the binding set's destinations).
#[derive(Debug, Clone, Copy, Default)]
pub struct Fanout;

impl ExchangeType for Fanout {
    const NAME: &'static str = "fanout";

    #[inline]
    fn route(&self, set: &BindingSet, _msg: &RouteInput<'_>, out: &mut Vec<Destination>) {
        out.extend(set.destinations().cloned());
    }
}
