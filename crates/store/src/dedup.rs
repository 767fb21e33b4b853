//! Deduplication caches of durable queues (`broker_core::dedup::DedupStore`): a sled
//! tree `dedup` of (queue store id BE, entry number BE) → expiry and key.
//!
//! A put is in sled's memory at once and durable at the next commit: a commit after
//! puts flushes sled too (only then: publishers without deduplication never pay for
//! it), so a publisher's confirm, which waits for the commit that covers its message,
//! also covers the key. Removals (evictions, expiries) wait for the 100 ms index flush;
//! one lost in a crash brings back an entry that the cache drops again when it is
//! loaded (expired, or past its size). Changes made while sled is failed (a full disk,
//! `recover.rs`) are not journaled: a reopen may lose keys put since the last good
//! flush, and the commits that would have covered them fail (their confirms are
//! nacks).

use crate::store::{err, SledStore};
use broker_core::dedup::DedupStore;
use broker_core::store::StoreError;
use std::sync::atomic::Ordering;

fn key(entity: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&entity.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl SledStore {
    /// Flushes sled if a dedup entry was put since the last commit or flush (called by
    /// `commit`, after the segments are synced).
    pub(crate) fn commit_dedup(&self) -> Result<(), StoreError> {
        if !self.dedup_dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let flushed = self
            .db()
            .and_then(|db| db.db.flush().map_err(|e| self.failed(e)));
        if flushed.is_err() {
            self.dedup_dirty.store(true, Ordering::Release);
        }
        flushed.map(|_| ())
    }
}

impl DedupStore for SledStore {
    fn dedup_put(&self, entity: u64, seq: u64, value: &[u8]) -> Result<(), StoreError> {
        let db = self.db()?;
        db.dedup
            .insert(key(entity, seq), value)
            .map_err(|e| self.failed(e))?;
        // set after the insert (and before the publisher asks for its commit): the
        // commit that takes the flag flushes a database that holds the entry
        self.dedup_dirty.store(true, Ordering::Release);
        self.touched();
        Ok(())
    }

    fn dedup_remove(&self, entity: u64, seqs: &[u64]) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let db = self.db()?;
        self.touched();
        for seq in seqs {
            db.dedup
                .remove(key(entity, *seq))
                .map_err(|e| self.failed(e))?;
        }
        Ok(())
    }

    fn dedup_load(&self, entity: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let db = self.db()?;
        let mut out = Vec::new();
        for kv in db.dedup.scan_prefix(entity.to_be_bytes()) {
            let (k, v) = kv.map_err(err)?;
            if k.len() != 16 {
                continue;
            }
            let mut s = [0u8; 8];
            s.copy_from_slice(&k[8..]);
            out.push((u64::from_be_bytes(s), v.to_vec()));
        }
        Ok(out)
    }

    fn dedup_drop(&self, entity: u64) -> Result<(), StoreError> {
        let db = self.db()?;
        self.touched();
        for kv in db.dedup.scan_prefix(entity.to_be_bytes()) {
            let (k, _) = kv.map_err(err)?;
            db.dedup.remove(k).map_err(|e| self.failed(e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_core::store::MessageStore;

    #[test]
    fn entries_survive_a_reopen_and_drop_removes_them() {
        let dir = std::env::temp_dir().join(format!("dedup-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let s = SledStore::open(&dir).unwrap();
            s.dedup_put(7, 1, b"one").unwrap();
            s.dedup_put(7, 2, b"two").unwrap();
            s.dedup_put(8, 1, b"other").unwrap();
            s.dedup_remove(7, &[1]).unwrap();
            // what a publisher's confirm waits for
            s.commit().unwrap();
        }
        let s = SledStore::open_waiting(&dir, std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(s.dedup_load(7).unwrap(), vec![(2, b"two".to_vec())]);
        s.dedup_drop(7).unwrap();
        assert!(s.dedup_load(7).unwrap().is_empty());
        assert_eq!(s.dedup_load(8).unwrap().len(), 1);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
