//! The `x-consistent-hash` exchange, with the API of RabbitMQ's
//! rabbitmq_consistent_hash_exchange plugin: each message goes to one destination, chosen
//! by a hash of its routing key (or of the header named by the exchange's `hash-header`
//! argument, or of the property named by `hash-property`: `message_id`, `correlation_id`
//! or `timestamp`); a binding's key is its weight, a positive integer, and a destination
//! gets a share of the hash space proportional to the sum of its bindings' weights.
//! A message without the header or property hashes as "undefined": all such messages go
//! to one destination, as in the plugin.
//!
//! The plugin numbers buckets in bind order and picks one by jump consistent hash, so its
//! ring depends on the order bindings were made: recovered in another order after a
//! restart (it sorts them), keys move. Here the choice is a weighted rendezvous hash
//! (highest random weight): for each destination, a score from the message's hash and
//! the destination's own hash, divided by its weight; the best score wins. It depends
//! only on the set of bindings, so every node and every restart routes a key to the same
//! queue; adding a destination moves only the keys it now wins (its share), removing one
//! moves only its own keys; and shares follow the weights exactly, with no points to
//! allocate per unit of weight.
//!
//! The index is built at bind and unbind: the destinations, sorted, each with its hash
//! and weight, in a shared array (a snapshot clones a pointer; a bind or unbind rebuilds
//! the array, linear in the destinations, as the plugin's binding management is). A
//! route is one hash of
//! the message and one multiply-and-mix per destination (plus a logarithm when weights
//! differ); no allocation beyond the output vector.

use super::hashing::{hash_destination, mix, HashOn};
use super::{ExchangeType, RouteInput};
use crate::error::AmqpError;
use crate::routing::{BindingSet, Destination};
use amq_protocol::types::FieldTable;
use imbl::OrdMap;
use std::sync::Arc;

/// The largest weight a binding key may give (the plugin, before RabbitMQ 4.3, had no
/// bound and allocated a list entry per unit of weight).
pub const MAX_WEIGHT: u64 = 1_000_000;

/// The consistent-hash type; its value is the exchange's hashing rule and routing table.
#[derive(Debug, Clone, Default)]
pub struct ConsistentHash {
    /// What is hashed (from the declare arguments).
    on: Arc<HashOn>,
    /// Each destination's total weight and hash, by destination.
    weights: OrdMap<Destination, Weighted>,
    /// The same, as a flat array the route scans.
    table: Arc<[Slot]>,
    /// Whether every destination has the same weight (the score is then the mixed hash
    /// itself, with no logarithm).
    equal: bool,
}

#[derive(Debug, Clone, Copy)]
struct Weighted {
    weight: u64,
    seed: u64,
}

#[derive(Debug, Clone)]
struct Slot {
    dest: Destination,
    seed: u64,
    /// 1 / weight.
    inv_weight: f64,
}

/// A binding key's weight: RabbitMQ's texts for a key that is not an integer or is
/// below 1; above [`MAX_WEIGHT`] is refused too.
pub fn weight(key: &str) -> Result<u64, AmqpError> {
    let digits = key.strip_prefix(['+', '-']).unwrap_or(key);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        let shown = key.replace('\\', "\\\\").replace('"', "\\\"");
        return Err(AmqpError::precondition_failed(format!(
            "The binding key must be an integer: <<\"{shown}\">>"
        )));
    }
    let zero = digits.bytes().all(|b| b == b'0');
    if key.starts_with('-') || zero {
        return Err(AmqpError::precondition_failed(
            "The binding key must be greater than 0",
        ));
    }
    match digits.parse::<u64>() {
        Ok(w) if w <= MAX_WEIGHT => Ok(w),
        _ => Err(AmqpError::precondition_failed(format!(
            "The binding key must be at most {MAX_WEIGHT}"
        ))),
    }
}

impl ConsistentHash {
    fn rebuild(&mut self) {
        let first = self.weights.values().next().map(|w| w.weight);
        self.equal = self.weights.values().all(|w| Some(w.weight) == first);
        self.table = self
            .weights
            .iter()
            .map(|(dest, w)| Slot {
                dest: dest.clone(),
                seed: w.seed,
                inv_weight: 1.0 / w.weight as f64,
            })
            .collect();
    }

    /// The destination a message with hash `h` goes to.
    #[inline]
    fn pick(&self, h: u64) -> Option<&Destination> {
        if self.equal {
            // same weights: the highest mixed value wins (the weighted score below is
            // monotone in it, so both rules agree)
            return self
                .table
                .iter()
                .max_by_key(|s| mix(h ^ s.seed))
                .map(|s| &s.dest);
        }
        let mut best: Option<(&Slot, f64)> = None;
        for s in self.table.iter() {
            // u in (0, 1]; ln(u) / weight is the weighted score, larger is better
            let u = ((mix(h ^ s.seed) >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64);
            let score = u.ln() * s.inv_weight;
            if best.is_none_or(|(_, b)| score > b) {
                best = Some((s, score));
            }
        }
        best.map(|(s, _)| &s.dest)
    }
}

impl ExchangeType for ConsistentHash {
    const NAME: &'static str = "x-consistent-hash";

    fn validate_declare(
        arguments: &FieldTable,
        exchange: &str,
        vhost: &str,
    ) -> Result<(), AmqpError> {
        HashOn::from_arguments(arguments, exchange, vhost).map(|_| ())
    }

    fn validate_binding(key: &str, _arguments: &FieldTable) -> Result<(), AmqpError> {
        weight(key).map(|_| ())
    }

    fn with_arguments(arguments: &FieldTable) -> Self {
        ConsistentHash {
            on: Arc::new(HashOn::of_declared(arguments)),
            ..Self::default()
        }
    }

    fn routes_by_headers(&self) -> bool {
        self.on.reads_message()
    }

    fn bind(&mut self, key: &Arc<str>, dest: &Destination) {
        // refused at bind when bad; a key that still does not parse weighs nothing
        let Ok(w) = weight(key) else { return };
        let seed = hash_destination(dest);
        let e = self
            .weights
            .entry(dest.clone())
            .or_insert(Weighted { weight: 0, seed });
        e.weight += w;
        self.rebuild();
    }

    fn unbind(&mut self, key: &Arc<str>, dest: &Destination) {
        let Ok(w) = weight(key) else { return };
        let Some(e) = self.weights.get_mut(dest) else {
            return;
        };
        e.weight = e.weight.saturating_sub(w);
        if e.weight == 0 {
            self.weights.remove(dest);
        }
        self.rebuild();
    }

    #[inline]
    fn route(&self, _set: &BindingSet, msg: &RouteInput<'_>, out: &mut Vec<Destination>) {
        if self.table.is_empty() {
            return;
        }
        if let Some(d) = self.pick(self.on.hash(msg)) {
            out.push(d.clone());
        }
    }
}

#[cfg(test)]
#[path = "hash_tests.rs"]
mod tests;
