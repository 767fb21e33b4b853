//! Recovery from a failed write (a full disk, an I/O error) without a restart.
//!
//! **Segments** (see [`crate::segments`]): a failed `write` keeps its buffer and its
//! segment and is retried by the next append or sync; the records it held are failed for
//! confirms (nacked) since the write was not known good when their commit was asked
//! for, and appends are refused (nacked) until a retry succeeds. A failed fsync still
//! abandons its segment: after one the kernel may have dropped the dirty pages, and a
//! retried fsync would succeed without having written them.
//!
//! **sled** 0.34 keeps the first I/O error of a background or flush write in its
//! config's `global_error`, which only opening the database clears
//! (`PageCache::start` calls `reset_global_error`): from then on every write and flush
//! fails with that error, and its in-memory tree holds changes its log lacks. A reserve
//! file released when space runs out would keep sled from seeing ENOSPC only most of the
//! time (sled writes its log from its own threads whenever a buffer fills, and EIO is not
//! a matter of space), so the store reopens the database in place instead, the one way
//! that clears any error:
//!
//! - every index change since the last good flush is kept in a journal (removals, queue
//!   removals, delivered marks, definition changes; a few bytes each, forgotten at each
//!   good flush). Inserts are not journaled: their records name their index entries, and
//!   the log replay that runs at start ([`crate::replay`]) puts them back;
//! - on a sled error the store is *broken*: new messages are refused (their publishes
//!   nacked), removals are only journaled, reads go on from the old database;
//! - the flusher's next flush reopens it (with a backoff from 100 ms to 5 s while it
//!   fails): the old handle is dropped, sled is opened again once its lock is free, the
//!   journal's definition changes are applied, the log is replayed from the last good
//!   replay position, the whole journal is applied again in order (every change is
//!   idempotent), the segments' use is recounted, and the usual flush follows. If that
//!   flush fails too (the disk is still full) the store stays broken and tries again.
//!
//! A disk completely full leaves sled no room even to reopen, nor to flush the removals
//! that would let segment files go. So the store also keeps a **reserve** file of
//! [`RESERVE`] bytes in the data dir: it is deleted when a flush fails, which gives sled
//! room to reopen and record a purge or acks, so their segment files are deleted; it is
//! written again once a flush succeeds with four times as much free.
//!
//! While the reopen runs, index changes wait for it (they share the store's gate with
//! it), and so do reads of the index.

use crate::replay;
use crate::store::{open_db, segment_use, Db, SledStore};
use broker_core::store::StoreError;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The first wait between reopen attempts; it doubles up to [`REOPEN_BACKOFF_MAX`].
const REOPEN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between reopen attempts.
const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a reopen waits for sled to let go of its lock file (its own threads hold the
/// old database a moment after the last handle is dropped).
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Bytes of the reserve file.
pub const RESERVE: u64 = 8 << 20;

fn reserve_path(dir: &Path) -> PathBuf {
    dir.join("reserve")
}

/// Free bytes on the filesystem of `dir` (0 if unknown).
fn free_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return 0;
    };
    #[allow(unsafe_code)]
    // SAFETY: statvfs only reads the NUL-terminated path and writes the struct we pass.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return 0;
        }
        (st.f_bavail as u64).saturating_mul(st.f_frsize as u64)
    }
}

/// Writes the reserve file unless it is there, or the disk has too little free.
pub(crate) fn keep_reserve(dir: &Path) {
    let path = reserve_path(dir);
    if path.exists() || free_bytes(dir) < 4 * RESERVE {
        return;
    }
    let block = vec![0u8; 1 << 20];
    let written = std::fs::File::create(&path).and_then(|mut f| {
        for _ in 0..RESERVE / (1 << 20) {
            f.write_all(&block)?;
        }
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&path);
        tracing::debug!("cannot write the disk reserve: {e}");
    }
}

/// Deletes the reserve file (a write failed): room for sled to reopen and flush.
pub(crate) fn release_reserve(dir: &Path) {
    if std::fs::remove_file(reserve_path(dir)).is_ok() {
        tracing::warn!(
            "released the {} MiB disk reserve so that the store can record what frees space",
            RESERVE >> 20
        );
    }
}

/// An index change, kept until a flush has made it durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// A message entry removed (ack, reject, expiry, or an insert refused by sled).
    Remove([u8; 16]),
    /// Every entry of a queue removed.
    RemoveQueue(u64),
    /// A queue's delivered mark.
    Mark(u64, u64),
    /// A definition written.
    DefPut(Vec<u8>, Vec<u8>),
    /// A definition removed.
    DefDel(Vec<u8>),
}

impl Op {
    fn apply(&self, db: &Db) -> sled::Result<()> {
        match self {
            Op::Remove(k) => db.messages.remove(k).map(drop),
            Op::RemoveQueue(q) => {
                for kv in db.messages.scan_prefix(q.to_be_bytes()) {
                    db.messages.remove(kv?.0)?;
                }
                Ok(())
            }
            Op::Mark(q, upto) => db
                .messages
                .insert(
                    broker_core::store::delivered_mark_key(*q),
                    &upto.to_be_bytes(),
                )
                .map(drop),
            Op::DefPut(k, v) => db.definitions.insert(&k[..], &v[..]).map(drop),
            Op::DefDel(k) => db.definitions.remove(&k[..]).map(drop),
        }
    }

    fn is_definition(&self) -> bool {
        matches!(self, Op::DefPut(..) | Op::DefDel(_))
    }
}

/// The journal of index changes since the last good flush, and the broken state.
#[derive(Default)]
pub(crate) struct Recovery {
    broken: AtomicBool,
    journal: Mutex<Vec<Op>>,
    /// When the next reopen may be tried, and the wait after that one.
    backoff: Mutex<Option<(Instant, Duration)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Recovery {
    /// sled failed a write: it refuses every write until it is reopened.
    pub(crate) fn broke(&self, e: &sled::Error) {
        if !self.broken.swap(true, Ordering::SeqCst) {
            tracing::error!(
                "store index write failed: {e}; new persistent messages are refused (nacked) \
                 until the index is reopened"
            );
        }
    }

    /// Whether sled failed a write that no reopen has cleared yet.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    /// An error while the store is broken: new messages are refused.
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        if self.is_broken() {
            return Err(StoreError(
                "the store is recovering from a failed write (disk full or I/O error)".into(),
            ));
        }
        Ok(())
    }

    /// Keeps an index change until a flush has made it durable.
    pub(crate) fn note(&self, op: Op) {
        lock(&self.journal).push(op);
    }

    /// Changes kept so far.
    pub(crate) fn len(&self) -> usize {
        lock(&self.journal).len()
    }

    /// Forgets the first `n` changes (a flush that began after they were noted
    /// succeeded).
    pub(crate) fn forget(&self, n: usize) {
        let mut j = lock(&self.journal);
        let n = n.min(j.len());
        j.drain(..n);
        if j.capacity() > 4096 && j.len() < j.capacity() / 4 {
            let keep = j.len().max(1024);
            j.shrink_to(keep);
        }
    }
}

impl SledStore {
    /// Reopens a broken sled database in place (see the module docs), unless the last
    /// attempt was too recent.
    pub(crate) fn reopen(&self) -> Result<(), StoreError> {
        let now = Instant::now();
        let last = *lock(&self.recovery.backoff);
        if let Some((next, _)) = last {
            if now < next {
                return Err(StoreError(
                    "the store is waiting to reopen its index after a failed write".into(),
                ));
            }
        }
        match self.try_reopen() {
            Ok(()) => {
                *lock(&self.recovery.backoff) = None;
                tracing::info!("store index reopened after a failed write; writes resume");
                Ok(())
            }
            Err(e) => {
                let wait = last.map_or(REOPEN_BACKOFF, |(_, w)| (w * 2).min(REOPEN_BACKOFF_MAX));
                *lock(&self.recovery.backoff) = Some((Instant::now() + wait, wait));
                tracing::warn!("cannot reopen the store index yet ({e}); retrying in {wait:?}");
                Err(e)
            }
        }
    }

    fn try_reopen(&self) -> Result<(), StoreError> {
        // no compaction round, and no index change, half made across the two databases
        let mut compaction = lock(&self.compaction);
        // the entries it was looking at may change
        compaction.cursor = None;
        let _gate = self.gate.write().unwrap_or_else(|p| p.into_inner());
        if !self.recovery.is_broken() {
            return Ok(());
        }
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        drop(slot.take());
        let path = self.dir.join("store");
        let deadline = Instant::now() + LOCK_WAIT;
        let mut wait = Duration::from_millis(10);
        let db = loop {
            match open_db(&self.dir, &path) {
                Ok(db) => break db,
                Err(e) if e.contains("in use") && Instant::now() < deadline => {
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_millis(200));
                }
                Err(e) => return Err(StoreError(e)),
            }
        };
        let journal = lock(&self.recovery.journal);
        let fail = |e: sled::Error| StoreError(format!("cannot reapply index changes: {e}"));
        // definitions first: the replay restores entries of queues that exist only
        for op in journal.iter().filter(|op| op.is_definition()) {
            op.apply(&db).map_err(fail)?;
        }
        let segdir = self.dir.join("segments");
        let replayed = replay::replay(
            &db.db,
            replay::Queues::Defined(&db.definitions),
            &db.messages,
            &segdir,
        )
        .map_err(StoreError)?;
        for op in journal.iter() {
            op.apply(&db).map_err(fail)?;
        }
        let refs = segment_use(&db.messages).map_err(StoreError)?;
        tracing::info!(
            restored = replayed.restored,
            reapplied = journal.len(),
            "store index reopened: entries restored from the log, changes reapplied"
        );
        drop(journal);
        self.segments.reset_stats(refs);
        *slot = Some(Arc::new(db));
        self.recovery.broken.store(false, Ordering::SeqCst);
        Ok(())
    }
}
