//! Spill files: where a queue's ready messages past its in-memory window wait
//! (`broker_core::queue::spill`). Each spilling priority level of a queue appends its
//! entries to files of its own under `<data-dir>/spill/`, in order, and reads them back
//! oldest first as its consumers catch up. No fsync: a spill holds what a restart loses
//! anyway (transient messages) or keeps elsewhere (a persisted message is spilled as a
//! reference to its store record, and comes back from the store after a restart), so
//! the directory is emptied at every start.
//!
//! A spill is a run of segment files of at most [`SEGMENT_MAX`] bytes. Records are
//! appended to a buffer that is handed to the OS in chunks; reading follows writing,
//! from the buffer when it has not been written out yet. A segment read to its end is
//! deleted, and a spill that empties starts its file over, so disk use follows the
//! backlog. A write that fails (a full disk) leaves the records in the buffer, in
//! order, and is tried again later: the messages are then in memory, never lost. A
//! record that cannot be read back is reported, and the rest of its segment is lost
//! with it (each record carries a CRC32 of its payload); a read that fails is tried
//! again at the next pop and loses nothing.

use broker_core::message::Slot;
use broker_core::queue::spill::{Lost, Popped, Spill, SpillFactory};
use broker_core::queue::Entry;
use record::{be_u32, decode, encode, Shared, HEADER};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest spill segment; the next record starts a new one.
pub const SEGMENT_MAX: u64 = 64 << 20;
/// Buffered bytes handed to the OS at once.
const WRITE_CHUNK: usize = 256 << 10;
/// Bytes read at once when entries come back (into a buffer kept from read to read;
/// messages are copied out of it, so none keeps a chunk alive).
const READ_CHUNK: usize = 512 << 10;
/// After a failed write, how long before writing is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// The node's spill directory.
#[derive(Debug)]
pub struct SpillDir {
    dir: PathBuf,
    /// Next file number.
    next: AtomicU64,
}

impl SpillDir {
    /// Opens `dir`, removing what a previous run left in it.
    pub fn open(dir: &Path) -> Result<Arc<SpillDir>, String> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|e| format!("cannot empty the spill directory {}: {e}", dir.display()))?;
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the spill directory {}: {e}", dir.display()))?;
        Ok(Arc::new(SpillDir {
            dir: dir.to_path_buf(),
            next: AtomicU64::new(1),
        }))
    }

    /// Bytes of spill files on disk.
    pub fn bytes_on_disk(&self) -> u64 {
        std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    fn create_file(&self) -> Result<(File, PathBuf), std::io::Error> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{n:016}.spill"));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok((f, path))
    }
}

/// Makes one queue's spills (a [`SpillFactory`]).
#[derive(Debug)]
pub struct QueueSpills {
    dir: Arc<SpillDir>,
    /// The queue, for logs.
    queue: Arc<str>,
}

impl QueueSpills {
    /// Spills for `queue` in `dir`.
    pub fn new(dir: Arc<SpillDir>, queue: &str) -> QueueSpills {
        QueueSpills {
            dir,
            queue: queue.into(),
        }
    }
}

impl SpillFactory for QueueSpills {
    fn create(&self) -> Option<Box<dyn Spill>> {
        Some(Box::new(FileSpill {
            dir: self.dir.clone(),
            queue: self.queue.clone(),
            segments: VecDeque::new(),
            buf: Vec::new(),
            read_off: 0,
            len: 0,
            stored: VecDeque::new(),
            failed_at: None,
            read_failed: false,
            rbuf: Vec::new(),
            shared: Shared::default(),
        }))
    }
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    file: File,
    path: PathBuf,
    /// Bytes handed to the OS.
    written: u64,
    /// Records appended, and records read back.
    records: usize,
    read: usize,
    /// What the unread records account for (to count them out if they are lost).
    unread: Lost,
    /// Reference records among the unread ones (their store ids are in `stored`).
    unread_stored: usize,
}

/// A spill in files.
#[derive(Debug)]
struct FileSpill {
    dir: Arc<SpillDir>,
    queue: Arc<str>,
    /// Oldest first; records are appended to the last.
    segments: VecDeque<Segment>,
    /// Records of the last segment not yet handed to the OS (they follow `written`).
    buf: Vec<u8>,
    /// Read position in the first segment.
    read_off: u64,
    /// Entries held.
    len: usize,
    /// Store ids of the spilled references, oldest first (for `clear`).
    stored: VecDeque<u64>,
    /// When a write last failed.
    failed_at: Option<Instant>,
    /// The last read failed (reported once until one succeeds).
    read_failed: bool,
    /// The read buffer, kept from read to read.
    rbuf: Vec<u8>,
    /// Names and properties shared by the messages read back.
    shared: Shared,
}

impl Drop for FileSpill {
    fn drop(&mut self) {
        for s in self.segments.drain(..) {
            let _ = std::fs::remove_file(&s.path);
        }
    }
}

impl FileSpill {
    fn new_segment(&mut self) -> Result<(), std::io::Error> {
        let (file, path) = self.dir.create_file()?;
        self.segments.push_back(Segment {
            file,
            path,
            written: 0,
            records: 0,
            read: 0,
            unread: Lost::default(),
            unread_stored: 0,
        });
        Ok(())
    }

    /// Hands the buffer to the OS (unless a write failed less than [`RETRY_AFTER`]
    /// ago); on failure the records stay buffered.
    fn write_out(&mut self, force: bool) {
        if self.buf.is_empty() {
            return;
        }
        if !force && self.failed_at.is_some_and(|t| t.elapsed() < RETRY_AFTER) {
            return;
        }
        let Some(seg) = self.segments.back_mut() else {
            return;
        };
        match seg.file.write_all_at(&self.buf, seg.written) {
            Ok(()) => {
                seg.written += self.buf.len() as u64;
                self.buf.clear();
                if self.failed_at.take().is_some() {
                    tracing::info!(queue = %self.queue, "spill writes work again");
                }
            }
            Err(e) => {
                if self.failed_at.is_none() {
                    tracing::error!(queue = %self.queue, "cannot write a spill file, its messages stay in memory: {e}");
                }
                self.failed_at = Some(Instant::now());
            }
        }
    }

    /// Reads bytes of the first segment from `off` into `out` (grown as needed, never
    /// shrunk or cleared: zeroing a fresh buffer for every read showed in profiles), from
    /// its file, or from the write buffer past what was written (when it is also the
    /// last segment). Returns how many bytes of `out` were filled.
    fn read_into(&self, off: u64, len: usize, out: &mut Vec<u8>) -> Result<usize, std::io::Error> {
        let Some(seg) = self.segments.front() else {
            return Ok(0);
        };
        let last = self.segments.len() == 1;
        let end = seg.written + if last { self.buf.len() as u64 } else { 0 };
        let len = len.min(end.saturating_sub(off) as usize);
        if out.len() < len {
            out.resize(len, 0);
        }
        let from_file = (seg.written.saturating_sub(off) as usize).min(len);
        if from_file > 0 {
            seg.file.read_exact_at(&mut out[..from_file], off)?;
        }
        if from_file < len {
            let b = (off + from_file as u64 - seg.written) as usize;
            out[from_file..len].copy_from_slice(&self.buf[b..b + (len - from_file)]);
        }
        Ok(len)
    }

    /// The first segment is read to its end: deleted, or started over if it is the
    /// one being written.
    fn finish_first(&mut self) {
        if self.segments.len() > 1 {
            if let Some(s) = self.segments.pop_front() {
                let _ = std::fs::remove_file(&s.path);
            }
        } else if let Some(s) = self.segments.front_mut() {
            self.buf.clear();
            s.written = 0;
            s.records = 0;
            s.read = 0;
            s.unread = Lost::default();
            s.unread_stored = 0;
            let _ = s.file.set_len(0);
        }
        self.read_off = 0;
    }

    /// The first segment cannot be read on: its unread records are lost.
    fn lose_first(&mut self, why: &str) -> Lost {
        let Some(s) = self.segments.front() else {
            return Lost::default();
        };
        let lost = s.unread;
        let refs = s.unread_stored;
        tracing::error!(queue = %self.queue, lost = lost.count, "a spill file is damaged, its messages are lost: {why}");
        self.len -= lost.count.min(self.len);
        for _ in 0..refs {
            self.stored.pop_front();
        }
        self.finish_first();
        lost
    }
}

impl Spill for FileSpill {
    fn push(&mut self, e: Entry) -> Result<(), Entry> {
        let full = self
            .segments
            .back()
            .is_none_or(|s| s.written + self.buf.len() as u64 >= SEGMENT_MAX);
        if full {
            self.write_out(true);
            if !self.buf.is_empty() || self.new_segment().is_err() {
                // no room for a new segment now: keep appending to the current one, or
                // with no segment at all, the queue keeps the entry in memory
                if self.segments.is_empty() {
                    return Err(e);
                }
            }
        }
        let size = e.msg.size();
        let body = e.body_len as usize;
        let stored = encode(&e, &mut self.buf);
        if let Some(id) = stored {
            self.stored.push_back(id);
        }
        if let Some(s) = self.segments.back_mut() {
            s.records += 1;
            s.unread.count += 1;
            s.unread.bytes += size;
            s.unread.body_bytes += body;
            s.unread_stored += usize::from(stored.is_some());
        }
        self.len += 1;
        if self.buf.len() >= WRITE_CHUNK {
            self.write_out(false);
        }
        Ok(())
    }

    fn pop(&mut self, max: usize, max_bytes: usize) -> Popped {
        let mut out = Popped::default();
        let mut bytes = 0usize;
        while out.entries.len() < max && (bytes < max_bytes || out.entries.is_empty()) {
            let Some(seg) = self.segments.front() else {
                break;
            };
            if seg.read == seg.records {
                if self.segments.len() == 1 {
                    // all read: the file starts over, so an emptied spill takes no disk
                    self.finish_first();
                    break;
                }
                self.finish_first();
                continue;
            }
            let mut rbuf = std::mem::take(&mut self.rbuf);
            let n = match self.read_into(self.read_off, READ_CHUNK, &mut rbuf) {
                Ok(n) => n,
                Err(e) => {
                    self.rbuf = rbuf;
                    if !self.read_failed {
                        tracing::error!(queue = %self.queue, "cannot read a spill file, retrying: {e}");
                    }
                    self.read_failed = true;
                    break;
                }
            };
            self.read_failed = false;
            let taken = self.take_records(&rbuf[..n], max, max_bytes, &mut bytes, &mut out);
            self.rbuf = rbuf;
            match taken {
                Ok(()) => {}
                Err(why) => {
                    let lost = self.lose_first(&why);
                    out.lost.count += lost.count;
                    out.lost.bytes += lost.bytes;
                    out.lost.body_bytes += lost.body_bytes;
                }
            }
        }
        out
    }

    fn len(&self) -> usize {
        self.len
    }

    fn peek(&self, skip: usize, max: usize) -> Result<Vec<Entry>, String> {
        self.peek_entries(skip, max)
    }

    fn clear(&mut self) -> Vec<u64> {
        let ids: Vec<u64> = self.stored.drain(..).collect();
        for s in self.segments.drain(..) {
            let _ = std::fs::remove_file(&s.path);
        }
        self.buf.clear();
        self.read_off = 0;
        self.len = 0;
        ids
    }
}

impl FileSpill {
    /// Decodes the records of `chunk` (read from `read_off`) into `out` until the
    /// limits; a record longer than the chunk is read whole on its own.
    fn take_records(
        &mut self,
        chunk: &[u8],
        max: usize,
        max_bytes: usize,
        bytes: &mut usize,
        out: &mut Popped,
    ) -> Result<(), String> {
        let mut at = 0usize;
        while out.entries.len() < max && (*bytes < max_bytes || out.entries.is_empty()) {
            let Some(seg) = self.segments.front() else {
                break;
            };
            if seg.read == seg.records {
                break;
            }
            if chunk.len() - at < HEADER {
                if at == 0 {
                    return Err("a record is cut short".into());
                }
                break;
            }
            let len = be_u32(&chunk[at..]) as usize;
            let crc = be_u32(&chunk[at + 4..]);
            let whole = chunk.len() - at - HEADER >= len;
            let mut own = Vec::new();
            let payload: &[u8] = if whole {
                &chunk[at + HEADER..at + HEADER + len]
            } else if at == 0 {
                // longer than a chunk: read on its own
                let n = self
                    .read_into(self.read_off + HEADER as u64, len, &mut own)
                    .map_err(|e| e.to_string())?;
                if n < len {
                    return Err("a record is cut short".into());
                }
                &own[..len]
            } else {
                break;
            };
            if crc32fast::hash(payload) != crc {
                return Err("a record fails its checksum".into());
            }
            let e = decode(payload, &mut self.shared)?;
            let stored = matches!(e.msg, Slot::Paged { .. });
            if let Some(seg) = self.segments.front_mut() {
                seg.read += 1;
                seg.unread.count -= 1;
                seg.unread.bytes -= e.msg.size().min(seg.unread.bytes);
                seg.unread.body_bytes -= (e.body_len as usize).min(seg.unread.body_bytes);
                seg.unread_stored -= usize::from(stored).min(seg.unread_stored);
            }
            if stored {
                self.stored.pop_front();
            }
            self.len -= 1;
            self.read_off += (HEADER + len) as u64;
            at += HEADER + len;
            *bytes += e.msg.size();
            out.entries.push(e);
            if !whole {
                break;
            }
        }
        Ok(())
    }
}

mod peek;
mod record;
#[cfg(test)]
mod tests;
