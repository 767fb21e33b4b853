//! The store: definitions and the message index in two trees of one sled database in
//! the data dir, message records in segment files beside it (see [`crate::segments`]),
//! and a flusher thread that turns many publishes into one fsync ([`crate::flusher`]).
//!
//! Two kinds of flush: a **commit** (what confirms and `tx.commit` wait for) fsyncs the
//! segments only, since each record names its index entries and recovery puts back any
//! the index lacks ([`crate::replay`]); an **index flush** (records, then sled, then the
//! new replay position) runs in the background every [`INDEX_FLUSH`] when something
//! changed, and makes acks, purges and deliveries durable. Space is reclaimed by
//! [`crate::compact`]; a sled database that failed a write is reopened in place by
//! [`crate::recover`].

use crate::compact::Compaction;
use crate::index::{Envelope, Pointer};
use crate::recover::{Op, Recovery};
use crate::replay::{self, encode_position, REPLAY_FROM};
use crate::segments::Segments;
use broker_core::message::Meta;
use broker_core::replicated::{DefinitionBatch, DefinitionSnapshot, Record, ReplicatedState};
use broker_core::store::{
    delivered_mark_key, message_key, DefinitionStore, MessageStore, StoreError, StoredMessage,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use crate::flusher::{FlushRequest, Flusher, Histogram, FLUSH_BUCKETS, FLUSH_LATENCY};

/// How often the flusher makes the index durable when it changed: acks, purges and
/// deliveries, and the index entries of confirmed messages (until then recovery finds
/// those in the log). sled's own timer is off, so that the index never reaches the disk
/// before the records it points to. It also bounds how much log a recovery replays.
pub const INDEX_FLUSH: Duration = Duration::from_millis(100);

pub(crate) fn err(e: sled::Error) -> StoreError {
    StoreError(e.to_string())
}

/// One open sled database and its trees.
pub(crate) struct Db {
    pub(crate) db: sled::Db,
    pub(crate) definitions: sled::Tree,
    pub(crate) messages: sled::Tree,
    /// Durable queues' deduplication caches (`dedup.rs`).
    pub(crate) dedup: sled::Tree,
}

/// Bytes of index pages sled keeps in memory. At 8 MiB, a million stored messages'
/// entries did not fit: every lookup and removal read pages back from sled's files (a
/// delayed exchange firing 17,000 durable messages a second spent half its time there);
/// 64 MiB holds a few million entries.
const SLED_CACHE: u64 = 64 << 20;

/// Opens sled in `path`, turning its failures (a lock held by another process, damage,
/// a panic on some damaged files) into clear errors.
pub(crate) fn open_db(dir: &Path, path: &Path) -> Result<Db, String> {
    let opened = std::panic::catch_unwind(|| {
        sled::Config::new()
            .path(path)
            .cache_capacity(SLED_CACHE)
            .flush_every_ms(None)
            .open()
    })
    .map_err(|_| {
        format!(
            "the store in {} is damaged: sled could not open it",
            path.display()
        )
    })?;
    let db = opened.map_err(|e| match e {
        sled::Error::Io(ref io)
            if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock") =>
        {
            format!(
                "data dir {} is in use by another broker process ({e})",
                dir.display()
            )
        }
        sled::Error::Corruption { .. } => {
            format!("the store in {} is damaged: {e}", path.display())
        }
        other => format!("cannot open the store in {}: {other}", path.display()),
    })?;
    let definitions = db.open_tree("definitions").map_err(|e| e.to_string())?;
    let messages = db.open_tree("messages").map_err(|e| e.to_string())?;
    let dedup = db.open_tree("dedup").map_err(|e| e.to_string())?;
    Ok(Db {
        db,
        definitions,
        messages,
        dedup,
    })
}

/// Counts the index entries pointing into each segment and the live bytes they account
/// for.
pub(crate) fn segment_use(messages: &sled::Tree) -> Result<HashMap<u64, (u64, u64)>, String> {
    let mut refs: HashMap<u64, (u64, u64)> = HashMap::new();
    for kv in messages.iter() {
        let (k, v) = kv.map_err(|e| format!("cannot read the message index: {e}"))?;
        if k.len() == 16 {
            if let Some(p) = Pointer::decode(&v) {
                let r = refs.entry(p.at.segment).or_default();
                r.0 += 1;
                r.1 += p.share();
            }
        }
    }
    Ok(refs)
}

/// Definitions and the message index in sled, message records in segments.
pub struct SledStore {
    pub(crate) dir: PathBuf,
    /// The sled database; `None` only while a reopen after a failed write could not
    /// open it again (see [`crate::recover`]).
    pub(crate) db: RwLock<Option<Arc<Db>>>,
    pub(crate) segments: Arc<Segments>,
    /// Streams' logs (committed with the segments, numbered in their sequence).
    streams: Arc<crate::stream::Streams>,
    /// The Raft log of every group on the node (committed with the segments too).
    raft: Arc<crate::raft::RaftWal>,
    /// Something was written since the last flush.
    dirty: AtomicBool,
    /// A deduplication entry was put since the last commit: the next commit flushes
    /// sled (`dedup.rs`).
    pub(crate) dedup_dirty: AtomicBool,
    /// Held (shared) by every index change from its start until it is noted in the
    /// journal (an insert: from its record's append), and (exclusive) by an index flush
    /// while it takes the replay position, so every record before that position has its
    /// entries in the index the flush makes durable; and by a reopen, so that no change
    /// is half made on the old database while the new one is set up.
    pub(crate) gate: RwLock<()>,
    /// The compactor's place (one round at a time).
    pub(crate) compaction: Mutex<Compaction>,
    /// Index changes since the last good flush, and whether sled failed a write.
    pub(crate) recovery: Recovery,
}

impl SledStore {
    /// Opens the store in `dir` like [`SledStore::open`], waiting up to `wait` while the
    /// directory is locked. sled lets go of its lock when the last of its own threads
    /// drops the database, a moment after the last handle is dropped, so a reopen in the
    /// same process (tests, tools) can find it still held on a busy machine; a broker
    /// restart is another process, whose exit releases the lock at once.
    pub fn open_waiting(dir: &Path, wait: std::time::Duration) -> Result<SledStore, String> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match SledStore::open(dir) {
                Err(e) if e.contains("in use") && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// Opens (or creates) the store in `dir`. A directory locked by another broker is a
    /// clear error.
    pub fn open(dir: &Path) -> Result<SledStore, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create data dir {}: {e}", dir.display()))?;
        let path = dir.join("store");
        let db = open_db(dir, &path)?;
        let segdir = dir.join("segments");
        let replayed = replay::replay(&db.db, replay::Queues::All, &db.messages, &segdir)
            .map_err(|e| format!("the store in {} is damaged: {e}", path.display()))?;
        if replayed.restored > 0 {
            tracing::info!(
                records = replayed.records,
                restored = replayed.restored,
                "message index entries restored from the log after an unclean stop"
            );
        }
        // count the index entries pointing into each segment, so that segments nothing
        // points into can go and mostly dead ones are compacted
        let refs = segment_use(&db.messages)
            .map_err(|e| format!("the store in {} is damaged: {e}", path.display()))?;
        let segments = Arc::new(Segments::open(&segdir, refs)?);
        let streams = Arc::new(crate::stream::Streams::new(
            dir.join("streams"),
            segments.clone(),
        ));
        let raft = Arc::new(crate::raft::RaftWal::open(
            &dir.join("raft"),
            segments.clone(),
            crate::raft::RAFT_SEGMENT_MAX,
        )?);
        // the index is complete now: replay starts afresh at the new segment
        db.db
            .insert(REPLAY_FROM, &encode_position(segments.position())[..])
            .and_then(|_| db.db.flush())
            .map_err(|e| format!("cannot write the store in {}: {e}", path.display()))?;
        crate::recover::keep_reserve(dir);
        Ok(SledStore {
            dir: dir.to_path_buf(),
            db: RwLock::new(Some(Arc::new(db))),
            segments,
            streams,
            raft,
            dirty: AtomicBool::new(false),
            dedup_dirty: AtomicBool::new(false),
            gate: RwLock::new(()),
            compaction: Mutex::new(Compaction::default()),
            recovery: Recovery::default(),
        })
    }

    /// The streams kept in this data dir.
    pub fn streams(&self) -> Arc<crate::stream::Streams> {
        self.streams.clone()
    }

    /// The Raft log of every group on the node (`data/raft/`).
    pub fn raft(&self) -> Arc<crate::raft::RaftWal> {
        self.raft.clone()
    }

    /// The Raft snapshot files of the node's groups (`data/raft/snapshots/`).
    pub fn raft_snapshots(&self) -> crate::raft::snapshots::SnapshotFiles {
        crate::raft::snapshots::SnapshotFiles::new(&self.dir.join("raft").join("snapshots"))
    }

    /// The open database (a clone of the handle: a reopen waits for none of them).
    pub(crate) fn db(&self) -> Result<Arc<Db>, StoreError> {
        self.db
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| StoreError("the store is reopening after a write error".into()))
    }

    /// The message index tree (tests simulate a crash by removing entries).
    #[cfg(test)]
    pub(crate) fn index(&self) -> sled::Tree {
        self.db().map(|d| d.messages.clone()).unwrap()
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        let sled = self.db().ok().and_then(|d| d.db.size_on_disk().ok());
        sled.unwrap_or(0) + self.segments.bytes_on_disk()
    }

    /// Bytes of segment files on disk, and the live bytes in them (tests, benches).
    pub fn segment_bytes(&self) -> (u64, u64) {
        (self.segments.bytes_on_disk(), self.segments.live_bytes())
    }

    /// The gate, shared (see [`SledStore::gate`]).
    pub(crate) fn shared(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn touched(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// A sled write failed: sled refuses every write from now on, so the database is
    /// reopened at the next flush.
    pub(crate) fn failed(&self, e: sled::Error) -> StoreError {
        self.recovery.broke(&e);
        self.touched();
        err(e)
    }

    /// Reads the record of message `seq` of `queue` back from its segment, without its
    /// envelope, which must name that message (a record found at an index entry's place
    /// that belongs to another message is an error, not a delivery of the wrong one).
    fn read(&self, p: &Pointer, queue: u64, seq: u64) -> Result<Vec<u8>, StoreError> {
        let mut payload = self.segments.read(&p.at)?;
        let skip = match Envelope::split(&payload) {
            Ok((Some(env), _)) if env.seq != seq || !env.queues.contains(&queue) => {
                return Err(StoreError(format!(
                    "segment {}: the record at {} belongs to another message",
                    p.at.segment, p.at.offset
                )))
            }
            Ok((_, record)) => payload.len() - record.len(),
            Err(e) => {
                return Err(StoreError(format!(
                    "segment {}: record at {}: {e}",
                    p.at.segment, p.at.offset
                )))
            }
        };
        payload.drain(..skip);
        Ok(payload)
    }

    /// Reads back the record an index value of message `seq` of `queue` stands for.
    fn record(&self, value: &[u8], queue: u64, seq: u64) -> Result<Vec<u8>, StoreError> {
        match Pointer::decode(value) {
            Some(p) => self.read(&p, queue, seq),
            // a record stored inline (older stores)
            None if value.first() == Some(&1) => Ok(value.to_vec()),
            None => Err(StoreError("unknown message index entry".into())),
        }
    }

    /// Releases the segment reference an index value held.
    fn release(&self, value: &[u8]) {
        if let Some(p) = Pointer::decode(value) {
            self.segments.release(p.at.segment, 1, p.share());
        }
    }

    /// A definition change applied to sled, noted so that a reopen keeps it.
    fn define(&self, op: Op, flush: bool) -> Result<(), StoreError> {
        let gate = self.shared();
        let db = self.db()?;
        let res = match &op {
            Op::DefPut(k, v) => db.definitions.insert(&k[..], &v[..]).map(|_| ()),
            Op::DefDel(k) => db.definitions.remove(&k[..]).map(|_| ()),
            _ => Ok(()),
        };
        res.map_err(|e| self.failed(e))?;
        self.recovery.note(op);
        self.touched();
        drop(gate);
        if flush {
            self.flush()?;
        }
        Ok(())
    }
}

impl DefinitionStore for SledStore {
    fn put_definition(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.define(Op::DefPut(key.to_vec(), value.to_vec()), true)
    }

    fn delete_definition(&self, key: &[u8]) -> Result<(), StoreError> {
        self.define(Op::DefDel(key.to_vec()), true)
    }

    fn stage_definition(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.define(Op::DefPut(key.to_vec(), value.to_vec()), false)
    }

    fn unstage_definition(&self, key: &[u8]) -> Result<(), StoreError> {
        self.define(Op::DefDel(key.to_vec()), false)
    }

    fn definitions(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.definitions_under(&[])
    }

    fn next_id(&self) -> Result<u64, StoreError> {
        // +1 so that 0 is never an id
        let db = self.db()?;
        db.db
            .generate_id()
            .map(|i| i + 1)
            .map_err(|e| self.failed(e))
    }

    fn definition(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.definition_at(key)
    }

    fn definitions_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Record>, StoreError> {
        self.definitions_under(prefix)
    }

    fn apply_definitions(&self, batch: &DefinitionBatch) -> Result<(), StoreError> {
        self.apply_replicated(batch)
    }

    fn replicated_state(&self) -> Result<ReplicatedState, StoreError> {
        self.read_replicated_state()
    }

    fn definitions_snapshot(&self) -> Result<DefinitionSnapshot, StoreError> {
        self.snapshot_definitions()
    }

    fn replace_definitions(&self, snapshot: &DefinitionSnapshot) -> Result<(), StoreError> {
        self.replace_with(snapshot)
    }
}

impl MessageStore for SledStore {
    fn insert(
        &self,
        queues: &[u64],
        seq: u64,
        record: &[u8],
        meta: Meta,
    ) -> Result<(), StoreError> {
        // while sled refuses writes, refuse early: the publish is nacked
        self.recovery.check()?;
        let _gate = self.shared();
        let db = self.db()?;
        let envelope = Envelope::encode(queues, seq, &meta);
        let at = self
            .segments
            .append(&envelope, record, queues.len() as u64)?;
        let p = Pointer {
            at,
            meta,
            fanout: queues.len().max(1) as u32,
        };
        let value = p.encode();
        self.touched();
        for (i, q) in queues.iter().enumerate() {
            if let Err(e) = db.messages.insert(message_key(*q, seq), &value[..]) {
                let left = (queues.len() - i) as u64;
                self.segments.release(at.segment, left, left * p.share());
                // the record is in the log: a reopen must not restore what was refused
                for q in queues {
                    self.recovery.note(Op::Remove(message_key(*q, seq)));
                }
                return Err(self.failed(e));
            }
        }
        Ok(())
    }

    fn mark_delivered(&self, queue: u64, upto: u64) -> Result<(), StoreError> {
        self.touched();
        let _gate = self.shared();
        let res = self
            .db()?
            .messages
            .insert(delivered_mark_key(queue), &upto.to_be_bytes());
        // noted after it is applied (a flush forgets what was noted before it began):
        // a reopen applies it again, or for the first time if sled refused it
        self.recovery.note(Op::Mark(queue, upto));
        if let Err(e) = res {
            self.failed(e);
        }
        Ok(())
    }

    fn remove(&self, queue: u64, seq: u64) -> Result<(), StoreError> {
        self.touched();
        let _gate = self.shared();
        let key = message_key(queue, seq);
        let res = self.db()?.messages.remove(key);
        self.recovery.note(Op::Remove(key));
        match res {
            Ok(Some(old)) => self.release(&old),
            Ok(None) => {}
            // noted: the reopen applies it (and recounts the segments' use)
            Err(e) => {
                self.failed(e);
            }
        }
        Ok(())
    }

    fn remove_queue(&self, queue: u64) -> Result<usize, StoreError> {
        self.touched();
        let _gate = self.shared();
        let db = self.db()?;
        let mut n = 0;
        for kv in db.messages.scan_prefix(queue.to_be_bytes()) {
            let (k, _) = kv.map_err(err)?;
            match db.messages.remove(&k) {
                Ok(Some(old)) if k.len() == 16 => {
                    self.release(&old);
                    n += 1;
                }
                Ok(_) => {}
                Err(e) => {
                    // noted: the reopen removes the rest
                    self.failed(e);
                    n += 1;
                }
            }
        }
        self.recovery.note(Op::RemoveQueue(queue));
        Ok(n)
    }

    fn for_each_in_queue(
        &self,
        queue: u64,
        load: usize,
        f: &mut dyn FnMut(StoredMessage),
    ) -> Result<(), StoreError> {
        let db = self.db()?;
        let mark = match db.messages.get(delivered_mark_key(queue)).map_err(err)? {
            Some(v) if v.len() == 8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&v);
                u64::from_be_bytes(b)
            }
            _ => 0,
        };
        let mut seen = 0usize;
        for kv in db.messages.scan_prefix(queue.to_be_bytes()) {
            let (k, v) = kv.map_err(err)?;
            if k.len() != 16 {
                continue;
            }
            let mut s = [0u8; 8];
            s.copy_from_slice(&k[8..16]);
            let seq = u64::from_be_bytes(s);
            let (meta, record) = match Pointer::decode(&v) {
                Some(p) if seen < load => (p.meta, Some(self.read(&p, queue, seq))),
                // past the window only check that the record is there at all
                Some(p) => (p.meta, self.segments.check(&p.at).err().map(Err)),
                None => (
                    Meta {
                        size: v.len() as u32,
                        ..Meta::default()
                    },
                    Some(self.record(&v, queue, seq)),
                ),
            };
            seen += 1;
            f(StoredMessage {
                seq,
                delivered: seq <= mark,
                meta,
                record,
            });
        }
        Ok(())
    }

    fn get(&self, queue: u64, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        match self
            .db()?
            .messages
            .get(message_key(queue, seq))
            .map_err(err)?
        {
            Some(v) => self.record(&v, queue, seq).map(Some),
            None => Ok(None),
        }
    }

    fn queue_ids(&self) -> Result<Vec<u64>, StoreError> {
        let db = self.db()?;
        let mut ids = Vec::new();
        let mut next: Option<u64> = Some(0);
        while let Some(from) = next {
            let Some(kv) = db.messages.range(from.to_be_bytes()..).next() else {
                break;
            };
            let (k, _) = kv.map_err(err)?;
            if k.len() < 8 {
                break;
            }
            let mut q = [0u8; 8];
            q.copy_from_slice(&k[..8]);
            let id = u64::from_be_bytes(q);
            ids.push(id);
            next = id.checked_add(1);
        }
        Ok(ids)
    }

    fn mark(&self) -> u64 {
        self.segments.mark()
    }

    fn check_lost(&self, since: u64, upto: u64) -> Result<(), StoreError> {
        self.segments.check_lost(since, upto)
    }

    fn commit(&self) -> Result<(), StoreError> {
        // the records name their index entries: once they are on disk, recovery can put
        // back whatever the index has not made durable yet; streams' chunks are durable
        // once their own files are fsynced, and so are the Raft groups' records
        let segments = self.segments.sync();
        let streams = self.streams.commit();
        let raft = self.raft.commit();
        // deduplication keys put since the last commit (only when there are any)
        let dedup = self.commit_dedup();
        segments.and(streams).and(raft).and(dedup)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.dirty.store(false, Ordering::Relaxed);
        if self.recovery.is_broken() {
            if let Err(e) = self.reopen() {
                self.touched();
                return Err(e);
            }
        }
        let position = {
            let _all_indexed = self.gate.write().unwrap_or_else(|p| p.into_inner());
            self.segments.position()
        };
        // records first, then the index that points to them
        let synced = self.segments.sync();
        let doomed = self.segments.take_doomed();
        let journaled = self.recovery.len();
        // a failed segment write does not hold up the removals: they are flushed (and
        // the segments they emptied deleted), which frees the space the write needs;
        // only the replay position waits for the records
        let flushed = self.db().and_then(|db| {
            if synced.is_ok() {
                db.db
                    .insert(REPLAY_FROM, &encode_position(position)[..])
                    .map_err(|e| self.failed(e))?;
            }
            db.db.flush().map_err(|e| self.failed(e))
        });
        if let Err(e) = flushed {
            // nothing is deleted until a flush has made the removals durable
            self.segments.keep_doomed(doomed);
            self.touched();
            crate::recover::release_reserve(&self.dir);
            return Err(e);
        }
        // what the journal kept until now is durable
        self.recovery.forget(journaled);
        // the removals that emptied these segments are durable now
        self.segments.delete(&doomed);
        match &synced {
            Err(_) => {
                self.touched();
                crate::recover::release_reserve(&self.dir);
            }
            Ok(()) => crate::recover::keep_reserve(&self.dir),
        }
        synced
    }

    fn needs_flush(&self) -> bool {
        self.dirty.load(Ordering::Relaxed)
    }

    fn size_on_disk(&self) -> u64 {
        SledStore::size_on_disk(self)
    }

    fn compact(&self) -> Result<bool, StoreError> {
        SledStore::compact_round(self)
    }
}
