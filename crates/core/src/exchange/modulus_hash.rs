//! The `x-modulus-hash` exchange, as RabbitMQ 4.3 documents it: each message goes to one
//! destination, the one at `hash(routing key) mod N` among the N bound destinations;
//! binding keys are ignored (a destination bound twice counts once).
//!
//! Routing is stable while the bindings stay the same, across restarts and nodes: the
//! destinations are taken in a fixed order (sorted: queues before exchanges, each by
//! name), not in the order they were bound, and the hash is the broker's stable one
//! (`hashing.rs`). Changing N moves most keys (about (N-1)/N of them), RabbitMQ's
//! documented trade-off for its simplicity; `x-consistent-hash` moves only about 1/N.
//!
//! The index is built at bind and unbind (a shared sorted array, so a snapshot clones a
//! pointer); a route is one hash, one remainder and one index.

use super::hashing::hash_key;
use super::{ExchangeType, RouteInput};
use crate::routing::{BindingSet, Destination};
use imbl::OrdMap;
use std::sync::Arc;

/// The modulus-hash type; its value is the sorted list of bound destinations.
#[derive(Debug, Clone, Default)]
pub struct ModulusHash {
    /// Each destination and how many (destination, key) pairs bind it.
    keys: OrdMap<Destination, u32>,
    /// The destinations in order, as a flat array the route indexes.
    sorted: Arc<[Destination]>,
}

impl ModulusHash {
    fn rebuild(&mut self) {
        self.sorted = self.keys.keys().cloned().collect();
    }
}

impl ExchangeType for ModulusHash {
    const NAME: &'static str = "x-modulus-hash";

    fn bind(&mut self, _key: &Arc<str>, dest: &Destination) {
        let n = self.keys.entry(dest.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.rebuild();
        }
    }

    fn unbind(&mut self, _key: &Arc<str>, dest: &Destination) {
        let Some(n) = self.keys.get_mut(dest) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.keys.remove(dest);
            self.rebuild();
        }
    }

    #[inline]
    fn route(&self, _set: &BindingSet, msg: &RouteInput<'_>, out: &mut Vec<Destination>) {
        let n = self.sorted.len() as u64;
        if n == 0 {
            return;
        }
        let i = (hash_key(msg.routing_key) % n) as usize;
        if let Some(d) = self.sorted.get(i) {
            out.push(d.clone());
        }
    }
}
