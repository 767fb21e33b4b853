//! The metadata group's commands and answers (serde: they travel in the Raft log and
//! between nodes), and the changes apply hands to the materializer.

use serde::{Deserialize, Serialize};

/// A key of the definitions store (see `broker_core::store`: `e`/`q`/`b` records,
/// `user\0`, `vhost\0`, `policy\0`... records).
pub type Key = Vec<u8>;

/// A replicated command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCmd {
    /// Applied only if every guard holds; otherwise nothing changes and the answer names
    /// the first guard that failed. Ops apply in order (a later op sees earlier ones).
    Txn {
        /// What the proposer saw when it decided.
        guards: Vec<Guard>,
        /// The writes its decision makes.
        ops: Vec<Op>,
    },
    // Node bookkeeping for membership (docs/design/cluster.md §7) goes here later.
}

/// A condition on the keyspace as it is before the transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Guard {
    /// The key holds no record.
    Absent(Key),
    /// The key holds a record (any value).
    Present(Key),
    /// The key holds exactly this value (the record the proposer decided on).
    Equals(Key, Vec<u8>),
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Sets the key's record.
    Put(Key, Vec<u8>),
    /// Removes the key's record (nothing if absent).
    Delete(Key),
    /// Removes every record whose key starts with this prefix (a vhost's contents).
    DeletePrefix(Key),
}

/// What applying an entry answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaResp {
    /// The entry at this log index was applied (a transaction: all its ops).
    Applied {
        /// Its log index.
        index: u64,
    },
    /// Guard number `guard` (0-based) did not hold: nothing changed. The proposer's view
    /// was stale; it waits for its node to apply up to here and decides again.
    Conflict {
        /// The first guard that failed.
        guard: usize,
    },
}

/// One key an applied transaction changed, for the materializer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The key.
    pub key: Key,
    /// Its record before (`None`: it was absent).
    pub old: Option<Vec<u8>>,
    /// Its record after (`None`: removed).
    pub new: Option<Vec<u8>>,
}

impl Guard {
    /// The key the guard reads.
    pub fn key(&self) -> &[u8] {
        match self {
            Guard::Absent(k) | Guard::Present(k) | Guard::Equals(k, _) => k,
        }
    }

    /// Whether the guard holds for a key whose record is `current`.
    pub fn holds(&self, current: Option<&[u8]>) -> bool {
        match self {
            Guard::Absent(_) => current.is_none(),
            Guard::Present(_) => current.is_some(),
            Guard::Equals(_, v) => current == Some(&v[..]),
        }
    }
}

impl Op {
    /// The key (or prefix) the op writes.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put(k, _) | Op::Delete(k) | Op::DeletePrefix(k) => k,
        }
    }
}

impl MetaCmd {
    /// The first key the command names that is reserved for the state machine's own
    /// records (`broker_core::replicated`), if any: such commands are refused.
    pub fn reserved_key(&self) -> Option<&[u8]> {
        let MetaCmd::Txn { guards, ops } = self;
        let guards = guards.iter().map(Guard::key);
        let ops = ops.iter().filter_map(|op| match op {
            // a prefix that covers the reserved keys is fine: they are skipped
            Op::DeletePrefix(_) => None,
            op => Some(op.key()),
        });
        guards
            .chain(ops)
            .find(|k| broker_core::replicated::is_reserved(k))
    }
}
