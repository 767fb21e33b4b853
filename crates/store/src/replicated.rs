//! The sled side of the replicated definitions ([`broker_core::replicated`]): the
//! metadata group's apply writes its definition changes and its applied log id in one
//! sled batch, so the two never disagree after a crash; snapshots read and replace the
//! whole definitions tree. Writes are staged like `stage_definition` (the Raft log is
//! the durability point) and journaled like every definition change, so a reopen after a
//! failed write keeps them ([`crate::recover`]).

use crate::recover::Op;
use crate::store::{err, SledStore};
use broker_core::replicated::{
    is_reserved, DefinitionBatch, DefinitionSnapshot, Record, ReplicatedState, APPLIED_KEY,
    MEMBERSHIP_KEY,
};
use broker_core::store::StoreError;
use std::collections::BTreeSet;

fn reserved_key(key: &[u8]) -> StoreError {
    StoreError(format!(
        "definition key {:?} is reserved for the replicated state",
        String::from_utf8_lossy(key)
    ))
}

impl SledStore {
    /// One definition record.
    pub(crate) fn definition_at(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self.db()?.definitions.get(key).map_err(err)?;
        Ok(value.map(|v| v.to_vec()))
    }

    /// The definition records under `prefix`, without the reserved keys.
    pub(crate) fn definitions_under(&self, prefix: &[u8]) -> Result<Vec<Record>, StoreError> {
        let db = self.db()?;
        let mut out = Vec::new();
        for kv in db.definitions.scan_prefix(prefix) {
            let (k, v) = kv.map_err(err)?;
            if !is_reserved(&k) {
                out.push((k.to_vec(), v.to_vec()));
            }
        }
        Ok(out)
    }

    /// Writes a replicated apply's batch: its definition writes, then its applied log
    /// id (and membership), atomically.
    pub(crate) fn apply_replicated(&self, batch: &DefinitionBatch) -> Result<(), StoreError> {
        let mut ops = Vec::with_capacity(batch.writes.len() + 2);
        for (k, v) in &batch.writes {
            if is_reserved(k) {
                return Err(reserved_key(k));
            }
            ops.push(match v {
                Some(v) => Op::DefPut(k.clone(), v.clone()),
                None => Op::DefDel(k.clone()),
            });
        }
        ops.push(Op::DefPut(APPLIED_KEY.to_vec(), batch.applied.clone()));
        if let Some(m) = &batch.membership {
            ops.push(Op::DefPut(MEMBERSHIP_KEY.to_vec(), m.clone()));
        }
        self.write_definitions(ops)
    }

    /// The applied log id and membership the last batch recorded.
    pub(crate) fn read_replicated_state(&self) -> Result<ReplicatedState, StoreError> {
        Ok(ReplicatedState {
            applied: self.definition_at(APPLIED_KEY)?,
            membership: self.definition_at(MEMBERSHIP_KEY)?,
        })
    }

    /// Every definition record and the replicated state.
    pub(crate) fn snapshot_definitions(&self) -> Result<DefinitionSnapshot, StoreError> {
        let db = self.db()?;
        let mut snap = DefinitionSnapshot::default();
        for kv in db.definitions.iter() {
            let (k, v) = kv.map_err(err)?;
            if &k[..] == APPLIED_KEY {
                snap.state.applied = Some(v.to_vec());
            } else if &k[..] == MEMBERSHIP_KEY {
                snap.state.membership = Some(v.to_vec());
            } else if !is_reserved(&k) {
                snap.records.push((k.to_vec(), v.to_vec()));
            }
        }
        Ok(snap)
    }

    /// Replaces the whole definitions tree with `snap`, atomically.
    pub(crate) fn replace_with(&self, snap: &DefinitionSnapshot) -> Result<(), StoreError> {
        if let Some((k, _)) = snap.records.iter().find(|(k, _)| is_reserved(k)) {
            return Err(reserved_key(k));
        }
        let keep: BTreeSet<&[u8]> = snap.records.iter().map(|(k, _)| &k[..]).collect();
        let mut ops = Vec::new();
        for kv in self.db()?.definitions.iter() {
            let (k, _) = kv.map_err(err)?;
            if !keep.contains(&k[..]) {
                ops.push(Op::DefDel(k.to_vec()));
            }
        }
        for (k, v) in &snap.records {
            ops.push(Op::DefPut(k.clone(), v.clone()));
        }
        for (key, value) in [
            (APPLIED_KEY, &snap.state.applied),
            (MEMBERSHIP_KEY, &snap.state.membership),
        ] {
            ops.push(match value {
                Some(v) => Op::DefPut(key.to_vec(), v.clone()),
                None => Op::DefDel(key.to_vec()),
            });
        }
        self.write_definitions(ops)
    }

    /// Applies definition changes as one sled batch (staged), and journals them so that
    /// a reopen after a failed write applies them again.
    fn write_definitions(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let gate = self.shared();
        let db = self.db()?;
        let mut batch = sled::Batch::default();
        for op in &ops {
            match op {
                Op::DefPut(k, v) => batch.insert(&k[..], &v[..]),
                Op::DefDel(k) => batch.remove(&k[..]),
                _ => {}
            }
        }
        db.definitions
            .apply_batch(batch)
            .map_err(|e| self.failed(e))?;
        for op in ops {
            self.recovery.note(op);
        }
        self.touched();
        drop(gate);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use broker_core::store::{DefinitionStore, MessageStore};

    fn kv(k: &str, v: &str) -> Record {
        (k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn batches_record_the_applied_state_beside_the_records_and_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("replicated-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let expected = {
            let s = SledStore::open(&dir).unwrap();
            s.stage_definition(b"old", b"1").unwrap();
            let batch = DefinitionBatch {
                writes: vec![
                    (b"a".to_vec(), Some(b"1".to_vec())),
                    (b"old".to_vec(), None),
                    (b"b".to_vec(), Some(b"2".to_vec())),
                ],
                applied: b"A1".to_vec(),
                membership: Some(b"M1".to_vec()),
            };
            s.apply_definitions(&batch).unwrap();
            // a batch without a membership keeps the stored one
            let next = DefinitionBatch {
                applied: b"A2".to_vec(),
                ..Default::default()
            };
            s.apply_definitions(&next).unwrap();
            // a batch naming a reserved key is refused whole
            let forged = DefinitionBatch {
                writes: vec![
                    (b"c".to_vec(), Some(b"3".to_vec())),
                    (APPLIED_KEY.to_vec(), Some(b"forged".to_vec())),
                ],
                applied: b"A3".to_vec(),
                membership: None,
            };
            assert!(s.apply_definitions(&forged).is_err());
            // the reserved keys are not definitions
            assert_eq!(s.definitions().unwrap(), vec![kv("a", "1"), kv("b", "2")]);
            let state = s.replicated_state().unwrap();
            assert_eq!(state.applied.as_deref(), Some(&b"A2"[..]));
            assert_eq!(state.membership.as_deref(), Some(&b"M1"[..]));
            s.flush().unwrap();
            s.definitions_snapshot().unwrap()
        };
        // the first store's sled threads may hold its lock a moment after the drop
        let s = SledStore::open_waiting(&dir, std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(s.definitions_snapshot().unwrap(), expected);
        // a snapshot replaces everything, its state included
        let replacement = DefinitionSnapshot {
            records: vec![kv("z", "9")],
            state: ReplicatedState {
                applied: Some(b"A9".to_vec()),
                membership: None,
            },
        };
        s.replace_definitions(&replacement).unwrap();
        assert_eq!(s.definitions_snapshot().unwrap(), replacement);
        assert_eq!(s.definitions_with_prefix(b"z").unwrap(), vec![kv("z", "9")]);
        assert_eq!(s.definition(b"a").unwrap(), None);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
