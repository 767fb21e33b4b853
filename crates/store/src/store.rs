//! The store: definitions and the message index in two trees of one sled database in
//! the data dir, message records in segment files beside it (see [`crate::segments`]),
//! and a flusher thread that turns many publishes into one fsync.
//!
//! Two kinds of flush: a **commit** (what confirms and `tx.commit` wait for) fsyncs the
//! segments only, since each record names its index entries and recovery puts back any
//! the index lacks ([`crate::replay`]); an **index flush** (records, then sled, then the
//! new replay position) runs in the background every [`INDEX_FLUSH`] when something
//! changed, and makes acks, purges and deliveries durable.

use crate::index::{Envelope, Pointer};
use crate::replay::{self, encode_position, REPLAY_FROM};
use crate::segments::Segments;
use broker_core::message::Meta;
use broker_core::store::{
    delivered_mark_key, message_key, DefinitionStore, MessageStore, StoreError, StoredMessage,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

/// How often the flusher makes the index durable when it changed: acks, purges and
/// deliveries, and the index entries of confirmed messages (until then recovery finds
/// those in the log). sled's own timer is off, so that the index never reaches the disk
/// before the records it points to. It also bounds how much log a recovery replays.
pub const INDEX_FLUSH: Duration = Duration::from_millis(100);

fn err(e: sled::Error) -> StoreError {
    StoreError(e.to_string())
}

/// Definitions and the message index in sled, message records in segments.
pub struct SledStore {
    db: sled::Db,
    definitions: sled::Tree,
    messages: sled::Tree,
    segments: Segments,
    /// Something was written since the last flush.
    dirty: AtomicBool,
    /// Held (shared) from a record's append until its index entries are inserted, and
    /// (exclusive) by an index flush while it takes the replay position: so every record
    /// before that position has its entries in the index the flush makes durable.
    gate: RwLock<()>,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. A directory locked by another broker is a
    /// clear error.
    pub fn open(dir: &Path) -> Result<SledStore, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create data dir {}: {e}", dir.display()))?;
        let path = dir.join("store");
        // sled may panic on some damaged files: that is a clear error too, not a crash
        let opened = std::panic::catch_unwind(|| {
            sled::Config::new()
                .path(&path)
                .cache_capacity(8 << 20)
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
                if io.kind() == std::io::ErrorKind::WouldBlock
                    || io.to_string().contains("lock") =>
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
        let segdir = dir.join("segments");
        let replayed = replay::replay(&db, &definitions, &messages, &segdir)
            .map_err(|e| format!("the store in {} is damaged: {e}", path.display()))?;
        if replayed.restored > 0 {
            tracing::info!(
                records = replayed.records,
                restored = replayed.restored,
                "message index entries restored from the log after an unclean stop"
            );
        }
        // count the index entries pointing into each segment, so that segments nothing
        // points into can go
        let mut refs: HashMap<u64, u64> = HashMap::new();
        for kv in messages.iter() {
            let (k, v) = kv.map_err(|e| {
                format!(
                    "the store in {} is damaged: cannot read the message index: {e}",
                    path.display()
                )
            })?;
            if k.len() == 16 {
                if let Some(p) = Pointer::decode(&v) {
                    *refs.entry(p.at.segment).or_default() += 1;
                }
            }
        }
        let segments = Segments::open(&segdir, refs)?;
        // the index is complete now: replay starts afresh at the new segment
        db.insert(REPLAY_FROM, &encode_position(segments.position())[..])
            .and_then(|_| db.flush())
            .map_err(|e| format!("cannot write the store in {}: {e}", path.display()))?;
        Ok(SledStore {
            db,
            definitions,
            messages,
            segments,
            dirty: AtomicBool::new(false),
            gate: RwLock::new(()),
        })
    }

    /// The message index tree (tests simulate a crash by removing entries).
    #[cfg(test)]
    pub(crate) fn index(&self) -> &sled::Tree {
        &self.messages
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0) + self.segments.bytes_on_disk()
    }

    fn touched(&self) {
        self.dirty.store(true, Ordering::Relaxed);
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
            self.segments.release(p.at.segment, 1);
        }
    }
}

impl DefinitionStore for SledStore {
    fn put_definition(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.definitions.insert(key, value).map_err(err)?;
        self.db.flush().map_err(err)?;
        Ok(())
    }

    fn delete_definition(&self, key: &[u8]) -> Result<(), StoreError> {
        self.definitions.remove(key).map_err(err)?;
        self.db.flush().map_err(err)?;
        Ok(())
    }

    fn stage_definition(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.definitions.insert(key, value).map_err(err)?;
        self.dirty.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn unstage_definition(&self, key: &[u8]) -> Result<(), StoreError> {
        self.definitions.remove(key).map_err(err)?;
        self.dirty.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn definitions(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.definitions
            .iter()
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(err))
            .collect()
    }

    fn next_id(&self) -> Result<u64, StoreError> {
        // +1 so that 0 is never an id
        self.db.generate_id().map(|i| i + 1).map_err(err)
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
        let envelope = Envelope::encode(queues, seq, &meta);
        let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let at = self
            .segments
            .append(&envelope, record, queues.len() as u64)?;
        let value = Pointer { at, meta }.encode();
        self.touched();
        for (i, q) in queues.iter().enumerate() {
            if let Err(e) = self.messages.insert(message_key(*q, seq), &value[..]) {
                self.segments.release(at.segment, (queues.len() - i) as u64);
                return Err(err(e));
            }
        }
        Ok(())
    }

    fn mark_delivered(&self, queue: u64, upto: u64) -> Result<(), StoreError> {
        self.touched();
        self.messages
            .insert(delivered_mark_key(queue), &upto.to_be_bytes())
            .map(|_| ())
            .map_err(err)
    }

    fn remove(&self, queue: u64, seq: u64) -> Result<(), StoreError> {
        self.touched();
        if let Some(old) = self.messages.remove(message_key(queue, seq)).map_err(err)? {
            self.release(&old);
        }
        Ok(())
    }

    fn remove_queue(&self, queue: u64) -> Result<usize, StoreError> {
        self.touched();
        let mut n = 0;
        for kv in self.messages.scan_prefix(queue.to_be_bytes()) {
            let (k, _) = kv.map_err(err)?;
            if let Some(old) = self.messages.remove(&k).map_err(err)? {
                if k.len() == 16 {
                    self.release(&old);
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    fn for_each_in_queue(
        &self,
        queue: u64,
        load: usize,
        f: &mut dyn FnMut(StoredMessage),
    ) -> Result<(), StoreError> {
        let mark = match self.messages.get(delivered_mark_key(queue)).map_err(err)? {
            Some(v) if v.len() == 8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&v);
                u64::from_be_bytes(b)
            }
            _ => 0,
        };
        let mut seen = 0usize;
        for kv in self.messages.scan_prefix(queue.to_be_bytes()) {
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
        match self.messages.get(message_key(queue, seq)).map_err(err)? {
            Some(v) => self.record(&v, queue, seq).map(Some),
            None => Ok(None),
        }
    }

    fn queue_ids(&self) -> Result<Vec<u64>, StoreError> {
        let mut ids = Vec::new();
        let mut next: Option<u64> = Some(0);
        while let Some(from) = next {
            let Some(kv) = self.messages.range(from.to_be_bytes()..).next() else {
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
        // back whatever the index has not made durable yet
        self.segments.sync()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.dirty.store(false, Ordering::Relaxed);
        let position = {
            let _all_indexed = self.gate.write().unwrap_or_else(|p| p.into_inner());
            self.segments.position()
        };
        // records first, then the index that points to them
        self.segments.sync()?;
        let doomed = self.segments.take_doomed();
        self.db
            .insert(REPLAY_FROM, &encode_position(position)[..])
            .map_err(err)?;
        self.db.flush().map_err(err)?;
        // the removals that emptied these segments are durable now
        self.segments.delete(&doomed);
        Ok(())
    }

    fn needs_flush(&self) -> bool {
        self.dirty.load(Ordering::Relaxed)
    }

    fn size_on_disk(&self) -> u64 {
        SledStore::size_on_disk(self)
    }
}

/// Upper bounds (seconds) of the flush-latency histogram's buckets.
pub const FLUSH_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0];

/// How long group-commit flushes take (fsync of segments and index), for /metrics.
pub struct Histogram {
    buckets: [std::sync::atomic::AtomicU64; 10],
    count: std::sync::atomic::AtomicU64,
    sum_us: std::sync::atomic::AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        #[allow(clippy::declare_interior_mutable_const)]
        const Z: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Histogram {
            buckets: [Z; 10],
            count: Z,
            sum_us: Z,
        }
    }

    fn observe(&self, d: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let secs = d.as_secs_f64();
        for (i, le) in FLUSH_BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    /// Cumulative bucket counts, total count, and the sum in seconds.
    pub fn snapshot(&self) -> ([u64; 10], u64, f64) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut b = [0u64; 10];
        for (i, x) in self.buckets.iter().enumerate() {
            b[i] = x.load(Relaxed);
        }
        (
            b,
            self.count.load(Relaxed),
            self.sum_us.load(Relaxed) as f64 / 1e6,
        )
    }
}

/// Flush latencies of this process.
pub static FLUSH_LATENCY: Histogram = Histogram::new();

/// A request for an fsync; the reply says whether it succeeded.
pub struct FlushRequest {
    /// The store's mark before the requester's inserts ([`MessageStore::mark`]).
    pub since: u64,
    /// Its mark after them.
    pub upto: u64,
    /// The index (and definitions) must be durable too, not only the records: a
    /// definition change waits for this instead of flushing sled on its own thread.
    pub index: bool,
    /// Called with the outcome, on the flusher thread.
    pub done: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
}

/// Group commit: one thread that flushes the store for every request that arrived before
/// the flush began. Requests are cheap; flushes are shared.
#[derive(Clone)]
pub struct Flusher {
    tx: mpsc::Sender<FlushRequest>,
}

impl Flusher {
    /// Starts the flusher thread for `store`.
    pub fn start(store: std::sync::Arc<dyn MessageStore>) -> Flusher {
        let (tx, rx) = mpsc::channel::<FlushRequest>();
        let spawned = thread::Builder::new()
            .name("store-flusher".into())
            .spawn(move || {
                let mut next_index_flush = Instant::now() + INDEX_FLUSH;
                loop {
                    let wait = next_index_flush.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(wait) {
                        Ok(first) => {
                            let mut batch = vec![first];
                            while let Ok(more) = rx.try_recv() {
                                batch.push(more);
                            }
                            let started = Instant::now();
                            let res = store.commit();
                            FLUSH_LATENCY.observe(started.elapsed());
                            if let Err(e) = &res {
                                tracing::error!(
                                    "store commit failed: {e}; the publishes it covered are nacked"
                                );
                            }
                            let index = if batch.iter().any(|r| r.index) {
                                let flushed = res.clone().and_then(|()| store.flush());
                                next_index_flush = Instant::now() + INDEX_FLUSH;
                                if let Err(e) = &flushed {
                                    tracing::error!("store index flush failed: {e}");
                                }
                                Some(flushed)
                            } else {
                                None
                            };
                            for r in batch {
                                let res = match (&index, r.index) {
                                    (Some(flushed), true) => flushed.clone(),
                                    _ => {
                                        res.clone().and_then(|()| store.check_lost(r.since, r.upto))
                                    }
                                };
                                (r.done)(res);
                            }
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                    if Instant::now() >= next_index_flush {
                        if store.needs_flush() {
                            if let Err(e) = store.flush() {
                                tracing::error!("background store flush failed: {e}");
                            }
                        }
                        next_index_flush = Instant::now() + INDEX_FLUSH;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the flusher thread: {e}");
        }
        Flusher { tx }
    }

    /// Asks for a commit covering the requester's inserts, made between the store marks
    /// `since` and `upto`; `done` runs once one that covers everything written before
    /// this call has finished, with an error if it failed or a failed write or fsync may
    /// have lost any of those inserts.
    pub fn request(
        &self,
        since: u64,
        upto: u64,
        done: impl FnOnce(Result<(), StoreError>) + Send + 'static,
    ) {
        self.send(FlushRequest {
            since,
            upto,
            index: false,
            done: Box::new(done),
        });
    }

    /// Makes everything written to the index and the definitions so far durable (one
    /// sled flush, shared with every request waiting at the time), on the flusher
    /// thread: a durable declare, delete or bind waits for this before its -ok, without
    /// stalling the actors of its worker thread as a `flush()` there would.
    pub async fn sync_index(&self) -> Result<(), StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(FlushRequest {
            since: 0,
            upto: 0,
            index: true,
            done: Box::new(move |res| {
                let _ = tx.send(res);
            }),
        });
        rx.await
            .unwrap_or_else(|_| Err(StoreError("flusher stopped".into())))
    }

    fn send(&self, r: FlushRequest) {
        if let Err(mpsc::SendError(r)) = self.tx.send(r) {
            (r.done)(Err(StoreError("flusher stopped".into())));
        }
    }
}
