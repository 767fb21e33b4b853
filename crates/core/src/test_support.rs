//! Helpers the unit tests of several modules share.

use amq_protocol::types::{AMQPValue, FieldTable, ShortString};

/// A field table of these pairs (keys are short, test-made names).
pub(crate) fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}
