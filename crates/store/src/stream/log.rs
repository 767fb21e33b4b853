//! One stream's log: appends gather in a pending chunk, a commit (the flusher's group
//! commit) seals it, writes it and its index entry, fsyncs, and only then lets readers
//! see it; retention drops whole old segments.

use super::chunk::{IndexEntry, Pending, INDEX_ENTRY};
use super::segment::SegFile;
use crate::segments::Segments;
use broker_core::store::StoreError;
use bytes::Bytes;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// A pending chunk is sealed and written (not yet committed) past this many bytes, so a
/// long run between commits does not hold everything in memory.
const PENDING_MAX: usize = 1 << 20;

/// What a stream keeps (RabbitMQ's `x-max-length-bytes`, `x-max-age`,
/// `x-stream-max-segment-size-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Total bytes kept (whole segments go once over).
    pub max_bytes: Option<u64>,
    /// Age of the newest message of a segment past which it goes (ms).
    pub max_age_ms: Option<u64>,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            max_bytes: None,
            max_age_ms: None,
            segment_bytes: 500_000_000,
        }
    }
}

/// Where a reader is: the segment (by first offset) and the byte position of the next
/// chunk in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The segment's first offset.
    pub segment: u64,
    /// Byte position of the next chunk.
    pub pos: u64,
}

/// A chunk read back.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Offset of its first record.
    pub first_offset: u64,
    /// Messages in it.
    pub count: u32,
    /// When it was written (ms).
    pub timestamp: u64,
    /// The records, in offset order; empty when the reader's filter skipped the chunk.
    pub records: Vec<Bytes>,
}

struct Writer {
    /// The offset the next append gets.
    next_offset: u64,
    pending: Pending,
    /// The segment written to, its length so far and its index entries so far.
    current: Arc<SegFile>,
    len: u64,
    entries: u64,
    /// Chunks written since the last commit: (segment, len and entries after it, end
    /// offset, timestamp); readers see them once the commit is done.
    written: Vec<(Arc<SegFile>, u64, u64, u64, u64)>,
    /// Segments closed since the last commit (fsynced by it).
    closed: Vec<Arc<SegFile>>,
    /// Marks of the appends since the last commit: every commit covering one fails if
    /// this commit fails.
    marks: Option<(u64, u64)>,
    /// The last chunk timestamp (timestamps never go backwards within a stream).
    last_ts: u64,
}

/// One stream's log.
pub struct StreamLog {
    /// Its store id (the queue's).
    pub id: u64,
    dir: PathBuf,
    marks: Arc<Segments>,
    writer: Mutex<Writer>,
    /// The segments, oldest first; the last is the one written to.
    segments: RwLock<Vec<Arc<SegFile>>>,
    /// The offset after the last durable message.
    committed: AtomicU64,
    /// Appended since the flusher last took it.
    pub(super) dirty: AtomicBool,
    /// A write or fsync failed: appends are refused until the broker restarts.
    failed: AtomicBool,
    deleted: AtomicBool,
    retention: Mutex<Retention>,
    /// Called after each commit that made new messages durable (wakes the readers).
    on_commit: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl StreamLog {
    /// Opens the stream in `dir` (created if new), recovering its segments.
    pub(super) fn open(
        id: u64,
        dir: PathBuf,
        marks: Arc<Segments>,
        retention: Retention,
    ) -> Result<StreamLog, StoreError> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| StoreError(format!("cannot create stream dir: {e}")))?;
        let mut firsts: Vec<u64> = std::fs::read_dir(&dir)
            .map_err(|e| StoreError(format!("cannot read stream dir: {e}")))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        firsts.sort_unstable();
        let mut segs = Vec::new();
        for (i, first) in firsts.iter().enumerate() {
            let s = SegFile::recover(&dir, *first, i + 1 == firsts.len())?;
            if i + 1 < firsts.len() {
                s.sealed.store(true, Ordering::Release);
            }
            segs.push(Arc::new(s));
        }
        if segs.is_empty() {
            segs.push(Arc::new(SegFile::create(&dir, 0)?));
        }
        let current = segs[segs.len() - 1].clone();
        let next_offset = current.end_offset.load(Ordering::Acquire);
        let writer = Writer {
            next_offset,
            pending: Pending {
                first_offset: next_offset,
                ..Pending::default()
            },
            len: current.committed_len.load(Ordering::Acquire),
            entries: current.chunks.load(Ordering::Acquire),
            last_ts: current.last_ts.load(Ordering::Acquire),
            current,
            written: Vec::new(),
            closed: Vec::new(),
            marks: None,
        };
        Ok(StreamLog {
            id,
            dir,
            marks,
            writer: Mutex::new(writer),
            segments: RwLock::new(segs),
            committed: AtomicU64::new(next_offset),
            dirty: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            deleted: AtomicBool::new(false),
            retention: Mutex::new(retention),
            on_commit: Mutex::new(None),
        })
    }

    /// Sets what wakes the readers after a commit.
    pub fn on_commit(&self, f: impl Fn() + Send + Sync + 'static) {
        *lock(&self.on_commit) = Some(Box::new(f));
    }

    /// Changes the retention (a policy changed); applied at the next commit.
    pub fn set_retention(&self, r: Retention) {
        *lock(&self.retention) = r;
    }

    /// Appends a record with its filter value; returns its offset. Readers see it after
    /// the next commit.
    pub(super) fn append(&self, record: &[u8], filter: Option<&[u8]>) -> Result<u64, StoreError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(StoreError(
                "the stream's log failed a write; it takes no messages until restart".into(),
            ));
        }
        if self.deleted.load(Ordering::Acquire) {
            return Err(StoreError("the stream was deleted".into()));
        }
        let mut w = lock(&self.writer);
        let offset = w.next_offset;
        w.pending.push(record, filter);
        w.next_offset += 1;
        let mark = self.marks.take_mark();
        w.marks = Some(match w.marks {
            Some((since, _)) => (since, mark),
            None => (mark - 1, mark),
        });
        if w.pending.data_len() >= PENDING_MAX {
            if let Err(e) = self.write_pending(&mut w) {
                self.fail(&mut w);
                return Err(e);
            }
        }
        Ok(offset)
    }

    /// Seals the pending chunk and writes it and its index entry (not durable yet).
    fn write_pending(&self, w: &mut Writer) -> Result<(), StoreError> {
        if w.pending.count == 0 {
            return Ok(());
        }
        let ts = now_ms().max(w.last_ts);
        w.last_ts = ts;
        let segment_bytes = lock(&self.retention).segment_bytes;
        if w.len > 0 && w.len + w.pending.data_len() as u64 > segment_bytes {
            self.roll(w)?;
        }
        let (h, bytes) = w.pending.seal(ts);
        let cur = w.current.clone();
        cur.seg
            .write_all_at(&bytes, w.len)
            .map_err(|e| StoreError(format!("stream write: {e}")))?;
        let e = IndexEntry {
            first_offset: h.first_offset,
            timestamp: ts,
            pos: w.len,
            count: h.count,
        };
        cur.idx
            .write_all_at(&e.encode(), w.entries * INDEX_ENTRY as u64)
            .map_err(|e| StoreError(format!("stream index write: {e}")))?;
        w.len += bytes.len() as u64;
        w.entries += 1;
        let (len, entries) = (w.len, w.entries);
        w.written.push((cur, len, entries, h.end_offset(), ts));
        Ok(())
    }

    /// Closes the current segment and starts the next at the pending chunk's offset.
    fn roll(&self, w: &mut Writer) -> Result<(), StoreError> {
        let next = Arc::new(SegFile::create(&self.dir, w.pending.first_offset)?);
        let old = std::mem::replace(&mut w.current, next.clone());
        w.closed.push(old);
        w.len = 0;
        w.entries = 0;
        self.segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(next);
        Ok(())
    }

    /// A write or fsync failed: what was appended since the last commit may be lost
    /// (every commit covering it fails), and the log takes nothing more.
    fn fail(&self, w: &mut Writer) {
        self.failed.store(true, Ordering::Release);
        if let Some((since, upto)) = w.marks.take() {
            self.marks.lose_marks(since, upto);
        }
    }

    /// Makes everything appended so far durable, then visible to readers; applies
    /// retention. Run by the flusher.
    pub(super) fn commit(&self) -> Result<(), StoreError> {
        let (written, mut files, marks) = {
            let mut w = lock(&self.writer);
            if let Err(e) = self.write_pending(&mut w) {
                self.fail(&mut w);
                return Err(e);
            }
            let written = std::mem::take(&mut w.written);
            let mut files = std::mem::take(&mut w.closed);
            files.push(w.current.clone());
            (written, files, w.marks.take())
        };
        if written.is_empty() {
            return Ok(());
        }
        files.dedup_by(|a, b| Arc::ptr_eq(a, b));
        let last = files.len() - 1;
        for (i, f) in files.iter().enumerate() {
            // the current segment's index is rebuilt from its chunks after a crash
            // (`SegFile::recover`): one device flush per commit instead of two; a
            // closed segment's index is synced once, here
            let synced = f.seg.sync_data().and_then(|()| match i < last {
                true => f.idx.sync_data(),
                false => Ok(()),
            });
            if let Err(e) = synced {
                let mut w = lock(&self.writer);
                self.failed.store(true, Ordering::Release);
                if let Some((since, upto)) = marks {
                    self.marks.lose_marks(since, upto);
                }
                if let Some((since, upto)) = w.marks.take() {
                    self.marks.lose_marks(since, upto);
                }
                return Err(StoreError(format!("stream fsync: {e}")));
            }
        }
        if files.len() > 1 {
            // new segment files: their directory entries must be durable too
            if let Ok(d) = std::fs::File::open(&self.dir) {
                let _ = d.sync_all();
            }
        }
        let mut end = 0;
        for (seg, len, entries, end_offset, ts) in written {
            seg.committed_len.store(len, Ordering::Release);
            seg.chunks.store(entries, Ordering::Release);
            seg.end_offset.store(end_offset, Ordering::Release);
            if seg.first_ts.load(Ordering::Relaxed) == 0 {
                seg.first_ts.store(ts, Ordering::Release);
            }
            seg.last_ts.store(ts, Ordering::Release);
            end = end_offset;
        }
        for f in &files[..files.len() - 1] {
            f.sealed.store(true, Ordering::Release);
        }
        self.committed.store(end, Ordering::Release);
        self.apply_retention(now_ms());
        if let Some(f) = lock(&self.on_commit).as_ref() {
            f();
        }
        Ok(())
    }

    /// Drops the oldest segments while the stream is over its size or age limit
    /// (never the segment being written). Returns how many went.
    pub fn apply_retention(&self, now: u64) -> usize {
        let r = *lock(&self.retention);
        if r.max_bytes.is_none() && r.max_age_ms.is_none() {
            return 0;
        }
        let mut segs = self.segments.write().unwrap_or_else(|p| p.into_inner());
        let mut total: u64 = segs.iter().map(|s| s.bytes()).sum();
        let mut gone = 0;
        while segs.len() > 1 && segs[0].sealed.load(Ordering::Acquire) {
            let s = &segs[0];
            let too_big = r.max_bytes.is_some_and(|m| total > m);
            let too_old = r
                .max_age_ms
                .is_some_and(|a| s.last_ts.load(Ordering::Acquire).saturating_add(a) < now);
            if !too_big && !too_old {
                break;
            }
            total -= s.bytes();
            s.remove_files(&self.dir);
            segs.remove(0);
            gone += 1;
        }
        gone
    }

    /// The offset the next append gets.
    pub fn next_offset(&self) -> u64 {
        lock(&self.writer).next_offset
    }

    /// The offset after the last durable message (what `next` starts at).
    pub fn end_offset(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// The first offset still kept.
    pub fn first_offset(&self) -> u64 {
        let segs = self.segments.read().unwrap_or_else(|p| p.into_inner());
        segs.first().map_or(0, |s| s.first_offset)
    }

    /// Messages kept (durable ones).
    pub fn message_count(&self) -> u64 {
        self.end_offset().saturating_sub(self.first_offset())
    }

    /// Segments and bytes on disk.
    pub fn disk_use(&self) -> (usize, u64) {
        let segs = self.segments.read().unwrap_or_else(|p| p.into_inner());
        (segs.len(), segs.iter().map(|s| s.bytes()).sum())
    }

    fn segment_list(&self) -> Vec<Arc<SegFile>> {
        self.segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A cursor at the chunk holding `offset` (at the first chunk for an offset before
    /// the stream, at the end for one past it).
    pub fn seek_offset(&self, offset: u64) -> Result<Cursor, StoreError> {
        let segs = self.segment_list();
        let i = segs
            .partition_point(|s| s.first_offset <= offset)
            .saturating_sub(1);
        for s in &segs[i..] {
            if let Some(pos) = s.find_offset(offset.max(s.first_offset))? {
                return Ok(Cursor {
                    segment: s.first_offset,
                    pos,
                });
            }
        }
        Ok(self.end_cursor(&segs))
    }

    /// A cursor at the first chunk written at or after `ts` (ms).
    pub fn seek_time(&self, ts: u64) -> Result<Cursor, StoreError> {
        let segs = self.segment_list();
        for s in &segs {
            if s.last_ts.load(Ordering::Acquire) < ts {
                continue;
            }
            if let Some(pos) = s.find_time(ts)? {
                return Ok(Cursor {
                    segment: s.first_offset,
                    pos,
                });
            }
        }
        Ok(self.end_cursor(&segs))
    }

    /// A cursor at the last durable chunk (RabbitMQ's `last`), or the end if there is
    /// none.
    pub fn seek_last_chunk(&self) -> Result<Cursor, StoreError> {
        let segs = self.segment_list();
        for s in segs.iter().rev() {
            let n = s.chunks.load(Ordering::Acquire);
            if n > 0 {
                return Ok(Cursor {
                    segment: s.first_offset,
                    pos: s.entry(n - 1)?.pos,
                });
            }
        }
        Ok(self.end_cursor(&segs))
    }

    /// A cursor after every durable message.
    pub fn seek_end(&self) -> Cursor {
        self.end_cursor(&self.segment_list())
    }

    fn end_cursor(&self, segs: &[Arc<SegFile>]) -> Cursor {
        match segs.last() {
            Some(s) => Cursor {
                segment: s.first_offset,
                pos: s.committed_len.load(Ordering::Acquire),
            },
            None => Cursor { segment: 0, pos: 0 },
        }
    }

    /// Reads the durable chunk at `cursor` and moves it past; `None` when the reader
    /// is at the end. A cursor in a segment retention removed moves to the oldest kept.
    pub fn read(&self, cursor: &mut Cursor) -> Result<Option<Chunk>, StoreError> {
        self.read_filtered(cursor, &|_| true)
    }

    /// [`StreamLog::read`], skipping the records of chunks whose summary `wanted`
    /// refuses (they come back with no records).
    pub fn read_filtered(
        &self,
        cursor: &mut Cursor,
        wanted: &dyn Fn(&super::chunk::Summary) -> bool,
    ) -> Result<Option<Chunk>, StoreError> {
        loop {
            let segs = self.segment_list();
            let Some(i) = segs.iter().position(|s| s.first_offset == cursor.segment) else {
                let Some(first) = segs.first() else {
                    return Ok(None);
                };
                if first.first_offset < cursor.segment {
                    return Ok(None);
                }
                *cursor = Cursor {
                    segment: first.first_offset,
                    pos: 0,
                };
                continue;
            };
            let s = &segs[i];
            if cursor.pos >= s.committed_len.load(Ordering::Acquire) {
                match segs.get(i + 1) {
                    Some(next) if s.sealed.load(Ordering::Acquire) => {
                        *cursor = Cursor {
                            segment: next.first_offset,
                            pos: 0,
                        };
                        continue;
                    }
                    _ => return Ok(None),
                }
            }
            let (h, records) = s.read_chunk(cursor.pos, wanted)?;
            cursor.pos += h.total_len();
            return Ok(Some(Chunk {
                first_offset: h.first_offset,
                count: h.count,
                timestamp: h.timestamp,
                records: records.unwrap_or_default(),
            }));
        }
    }

    /// The stream's directory.
    pub(super) fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Whether the stream was deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Deletes the stream's files; appends are refused from now on.
    pub(super) fn remove(&self) {
        self.deleted.store(true, Ordering::Release);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
