//! Evaluating a transaction against the definitions store: the guards read the keyspace
//! as it was before the transaction, the ops apply in order over an overlay of what the
//! earlier ops wrote. Pure apart from the store's reads, so every replica that starts
//! from the same keyspace computes the same writes.

use super::cmd::{Change, Key, MetaCmd, Op};
use broker_core::replicated::is_reserved;
use broker_core::store::{DefinitionStore, StoreError};
use std::collections::{BTreeMap, BTreeSet};

/// What a transaction does.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every guard held: the keys whose record changed, in the order the ops changed
    /// them, and the final writes (key order, `None` removes).
    Applied {
        changes: Vec<Change>,
        writes: Vec<(Key, Option<Vec<u8>>)>,
    },
    /// The guard with this index failed: nothing changes.
    Conflict(usize),
}

/// A key's record; the reserved keys are invisible to commands.
fn read(store: &dyn DefinitionStore, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    if is_reserved(key) {
        return Ok(None);
    }
    store.definition(key)
}

/// The transaction's writes so far over the store.
struct Overlay<'a> {
    store: &'a dyn DefinitionStore,
    written: BTreeMap<Key, Option<Vec<u8>>>,
    changes: Vec<Change>,
}

impl Overlay<'_> {
    fn current(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.written.get(key) {
            Some(v) => Ok(v.clone()),
            None => read(self.store, key),
        }
    }

    fn set(&mut self, key: &[u8], new: Option<Vec<u8>>) -> Result<(), StoreError> {
        if is_reserved(key) {
            return Ok(());
        }
        let old = self.current(key)?;
        if old != new {
            self.changes.push(Change {
                key: key.to_vec(),
                old,
                new: new.clone(),
            });
        }
        self.written.insert(key.to_vec(), new);
        Ok(())
    }

    /// Every key under `prefix` that holds a record now, in key order.
    fn keys_under(&self, prefix: &[u8]) -> Result<BTreeSet<Key>, StoreError> {
        let mut keys: BTreeSet<Key> = self
            .store
            .definitions_with_prefix(prefix)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let written = self
            .written
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix));
        for (k, v) in written {
            if v.is_some() {
                keys.insert(k.clone());
            } else {
                keys.remove(k);
            }
        }
        keys.retain(|k| !is_reserved(k));
        Ok(keys)
    }
}

/// Checks the guards and computes the writes of `cmd` against `store` (read only).
pub(crate) fn evaluate(store: &dyn DefinitionStore, cmd: &MetaCmd) -> Result<Outcome, StoreError> {
    let MetaCmd::Txn { guards, ops } = cmd;
    for (i, guard) in guards.iter().enumerate() {
        if !guard.holds(read(store, guard.key())?.as_deref()) {
            return Ok(Outcome::Conflict(i));
        }
    }
    let mut o = Overlay {
        store,
        written: BTreeMap::new(),
        changes: Vec::new(),
    };
    for op in ops {
        match op {
            Op::Put(k, v) => o.set(k, Some(v.clone()))?,
            Op::Delete(k) => o.set(k, None)?,
            Op::DeletePrefix(prefix) => {
                for k in o.keys_under(prefix)? {
                    o.set(&k, None)?;
                }
            }
        }
    }
    Ok(Outcome::Applied {
        changes: o.changes,
        writes: o.written.into_iter().collect(),
    })
}
