//! The direct exchange: a message goes to the destinations bound with exactly its routing
//! key (rabbit_exchange_type_direct).
//!
//! The index maps each binding key to its destinations; it is persistent (`imbl`), so an
//! exchange's snapshot is O(1) to take and a bind copies only the key it changes.

use super::{ExchangeType, RouteInput};
use crate::routing::{BindingSet, Destination};
use imbl::{HashMap, OrdSet};
use std::sync::Arc;

/// The direct type; its value is the index of destinations per binding key.
#[derive(Debug, Clone, Default)]
pub struct Direct {
    by_key: HashMap<Arc<str>, OrdSet<Destination>>,
}

impl ExchangeType for Direct {
    const NAME: &'static str = "direct";

    fn bind(&mut self, key: &Arc<str>, dest: &Destination) {
        self.by_key
            .entry(key.clone())
            .or_default()
            .insert(dest.clone());
    }

    fn unbind(&mut self, key: &Arc<str>, dest: &Destination) {
        if let Some(v) = self.by_key.get_mut(key) {
            v.remove(dest);
            if v.is_empty() {
                self.by_key.remove(key);
            }
        }
    }

    #[inline]
    fn route(&self, _set: &BindingSet, msg: &RouteInput<'_>, out: &mut Vec<Destination>) {
        if let Some(v) = self.by_key.get(msg.routing_key) {
            out.extend(v.iter().cloned());
        }
    }
}
