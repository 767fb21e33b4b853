//! One segment of a stream: `NNNNNNNNNNNNNNNNNNNN.seg` (chunks, append-only) and
//! `NNNNNNNNNNNNNNNNNNNN.idx` (one [`IndexEntry`] per chunk), named by the segment's
//! first offset. Readers see only what a commit made durable (`committed_len`,
//! `chunks`); recovery cuts a segment back to its last complete chunk.
//!
//! The index of the segment being written is not fsynced by commits (only the chunks
//! are, and a closed segment's index once): everything in it can be rebuilt from the
//! chunks, and on this kind of virtual disk every fdatasync costs a device flush
//! (~0.2–4 ms), which a confirm waits for. So recovery trusts the index only as far as
//! its entries follow on from each other, and rebuilds the rest from the chunks.

use super::chunk::{self, ChunkHeader, IndexEntry, Summary, HEADER, INDEX_ENTRY, SUMMARY};
use broker_core::store::StoreError;
use bytes::Bytes;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// One segment's files and what readers may see of them.
#[derive(Debug)]
pub struct SegFile {
    /// Offset of its first message (its name).
    pub first_offset: u64,
    /// The chunks.
    pub seg: File,
    /// The index.
    pub idx: File,
    /// Bytes of `seg` that commits made durable (readers stop there).
    pub committed_len: AtomicU64,
    /// Index entries that commits made durable.
    pub chunks: AtomicU64,
    /// The offset after its last durable message.
    pub end_offset: AtomicU64,
    /// Timestamp of its first and last durable chunk (ms).
    pub first_ts: AtomicU64,
    /// See `first_ts`.
    pub last_ts: AtomicU64,
    /// No more chunks will be written to it (a later segment exists).
    pub sealed: AtomicBool,
}

/// The paths of a segment's two files.
pub fn paths(dir: &Path, first_offset: u64) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{first_offset:020}.seg")),
        dir.join(format!("{first_offset:020}.idx")),
    )
}

fn io(what: &str, e: std::io::Error) -> StoreError {
    StoreError(format!("stream {what}: {e}"))
}

impl SegFile {
    /// Creates an empty segment starting at `first_offset`.
    pub fn create(dir: &Path, first_offset: u64) -> Result<SegFile, StoreError> {
        let (s, i) = paths(dir, first_offset);
        let open = |p: &Path| {
            OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(p)
                .map_err(|e| io("cannot create a segment", e))
        };
        Ok(SegFile::new(first_offset, open(&s)?, open(&i)?))
    }

    fn new(first_offset: u64, seg: File, idx: File) -> SegFile {
        SegFile {
            first_offset,
            seg,
            idx,
            committed_len: AtomicU64::new(0),
            chunks: AtomicU64::new(0),
            end_offset: AtomicU64::new(first_offset),
            first_ts: AtomicU64::new(0),
            last_ts: AtomicU64::new(0),
            sealed: AtomicBool::new(false),
        }
    }

    /// Opens an existing segment and cuts it back to its last complete chunk: index
    /// entries whose chunk does not check out are dropped, complete chunks past the
    /// last entry (written, but their entry was not) get theirs back.
    /// `current`: the segment being written, whose index commits did not fsync; its
    /// entries are checked against the chunk headers they name.
    pub fn recover(dir: &Path, first_offset: u64, current: bool) -> Result<SegFile, StoreError> {
        let (s, i) = paths(dir, first_offset);
        let open = |p: &Path| {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(p)
                .map_err(|e| io("cannot open a segment", e))
        };
        let f = SegFile::new(first_offset, open(&s)?, open(&i)?);
        // entries past the first that does not follow on from the one before (a page of
        // the unsynced index lost in a crash reads as zeroes) are rebuilt from the chunks
        let mut n = f.consistent_entries(current)?;
        // the last entries may name chunks a crash cut short
        let mut resume = (0u64, first_offset);
        while n > 0 {
            let e = f.entry(n - 1)?;
            let named = f.check_chunk(e.pos)?;
            if let Some(h) =
                named.filter(|h| (h.first_offset, h.count) == (e.first_offset, e.count))
            {
                resume = (e.pos + h.total_len(), h.end_offset());
                break;
            }
            n -= 1;
        }
        // complete chunks after the last entry
        let (mut pos, mut end) = resume;
        while let Some(h) = f.check_chunk(pos)? {
            if h.first_offset != end {
                break;
            }
            let e = IndexEntry {
                first_offset: h.first_offset,
                timestamp: h.timestamp,
                pos,
                count: h.count,
            };
            f.idx
                .write_all_at(&e.encode(), n * INDEX_ENTRY as u64)
                .map_err(|e| io("index write", e))?;
            n += 1;
            pos += h.total_len();
            end = h.end_offset();
        }
        f.seg.set_len(pos).map_err(|e| io("truncate", e))?;
        f.idx
            .set_len(n * INDEX_ENTRY as u64)
            .and_then(|()| f.idx.sync_data())
            .map_err(|e| io("truncate", e))?;
        f.committed_len.store(pos, Ordering::Release);
        f.chunks.store(n, Ordering::Release);
        f.end_offset.store(end, Ordering::Release);
        if n > 0 {
            f.first_ts.store(f.entry(0)?.timestamp, Ordering::Release);
            f.last_ts
                .store(f.entry(n - 1)?.timestamp, Ordering::Release);
        }
        Ok(f)
    }

    /// How many entries at the start of the index follow on from each other: each
    /// names at least one message, starts where the one before ended, and lies after it
    /// in the segment (the first starts at the segment's first offset); with `verify`,
    /// the chunk header at its position says the same.
    fn consistent_entries(&self, verify: bool) -> Result<u64, StoreError> {
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut &self.idx, &mut all).map_err(|e| io("index read", e))?;
        let mut expect: Option<(u64, u64)> = None; // (first offset, past this position)
        let mut n = 0u64;
        for b in all.chunks_exact(INDEX_ENTRY) {
            let Some(e) = IndexEntry::decode(b) else {
                break;
            };
            let follows = match expect {
                None => e.first_offset == self.first_offset && e.pos == 0,
                Some((offset, after)) => e.first_offset == offset && e.pos > after,
            };
            if e.count == 0 || !follows || (verify && !self.names_a_chunk(&e)?) {
                break;
            }
            expect = Some((e.first_offset + u64::from(e.count), e.pos));
            n += 1;
        }
        Ok(n)
    }

    /// Whether the chunk header at `e.pos` has `e`'s first offset, count and timestamp.
    fn names_a_chunk(&self, e: &IndexEntry) -> Result<bool, StoreError> {
        let mut hb = [0u8; HEADER];
        match self.seg.read_exact_at(&mut hb, e.pos) {
            Ok(()) => {}
            Err(x) if x.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(x) => return Err(io("read", x)),
        }
        Ok(ChunkHeader::decode(&hb).is_some_and(|h| {
            (h.first_offset, h.count, h.timestamp) == (e.first_offset, e.count, e.timestamp)
        }))
    }

    /// Index entry `n`.
    pub fn entry(&self, n: u64) -> Result<IndexEntry, StoreError> {
        let mut b = [0u8; INDEX_ENTRY];
        self.idx
            .read_exact_at(&mut b, n * INDEX_ENTRY as u64)
            .map_err(|e| io("index read", e))?;
        IndexEntry::decode(&b).ok_or_else(|| StoreError("stream index entry unreadable".into()))
    }

    /// The header of the chunk at `pos` if a complete chunk with a good checksum is
    /// there.
    fn check_chunk(&self, pos: u64) -> Result<Option<ChunkHeader>, StoreError> {
        let mut hb = [0u8; HEADER];
        match self.seg.read_exact_at(&mut hb, pos) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(io("read", e)),
        }
        let Some(h) = ChunkHeader::decode(&hb) else {
            return Ok(None);
        };
        let mut data = vec![0u8; h.data_len as usize];
        match self.seg.read_exact_at(&mut data, pos + HEADER as u64) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(io("read", e)),
        }
        Ok(h.check(&hb, &data).then_some(h))
    }

    /// Reads the durable chunk at `pos`: its header and records; `None` for the records
    /// when `wanted` says no to the chunk's summary (a filtered reader skips it without
    /// reading its records).
    pub fn read_chunk(
        &self,
        pos: u64,
        wanted: &dyn Fn(&Summary) -> bool,
    ) -> Result<(ChunkHeader, Option<Vec<Bytes>>), StoreError> {
        let mut hb = [0u8; HEADER + SUMMARY];
        self.seg
            .read_exact_at(&mut hb, pos)
            .map_err(|e| io("read", e))?;
        let h = ChunkHeader::decode(&hb).ok_or_else(|| {
            StoreError(format!(
                "stream segment {}: no chunk at {pos}",
                self.first_offset
            ))
        })?;
        let summary = Summary::decode(&hb[HEADER..]).unwrap_or_default();
        if !wanted(&summary) {
            return Ok((h, None));
        }
        let mut data = vec![0u8; h.data_len as usize];
        self.seg
            .read_exact_at(&mut data, pos + HEADER as u64)
            .map_err(|e| io("read", e))?;
        if !h.check(&hb, &data) {
            return Err(StoreError(format!(
                "stream segment {}: chunk at {pos} fails its checksum",
                self.first_offset
            )));
        }
        let records = chunk::split_records(&h, Bytes::from(data))?;
        Ok((h, Some(records)))
    }

    /// The position of the durable chunk holding `offset` (the first chunk if it lies
    /// before the segment, `None` past the durable end).
    pub fn find_offset(&self, offset: u64) -> Result<Option<u64>, StoreError> {
        let n = self.chunks.load(Ordering::Acquire);
        if n == 0 || offset >= self.end_offset.load(Ordering::Acquire) {
            return Ok(None);
        }
        // the last entry whose first offset is <= offset
        let (mut lo, mut hi) = (0u64, n);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if self.entry(mid)?.first_offset <= offset {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(Some(self.entry(lo)?.pos))
    }

    /// The position of the first durable chunk with a timestamp at or after `ts`.
    pub fn find_time(&self, ts: u64) -> Result<Option<u64>, StoreError> {
        let n = self.chunks.load(Ordering::Acquire);
        let (mut lo, mut hi) = (0u64, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.entry(mid)?.timestamp < ts {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == n {
            return Ok(None);
        }
        Ok(Some(self.entry(lo)?.pos))
    }

    /// Bytes on disk (both files).
    pub fn bytes(&self) -> u64 {
        self.committed_len.load(Ordering::Relaxed)
            + self.chunks.load(Ordering::Relaxed) * INDEX_ENTRY as u64
    }

    /// Deletes both files (readers holding the segment can still read what they have).
    pub fn remove_files(&self, dir: &Path) {
        let (s, i) = paths(dir, self.first_offset);
        let _ = std::fs::remove_file(s);
        let _ = std::fs::remove_file(i);
    }
}
