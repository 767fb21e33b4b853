//! The Raft log of every group on the node: one write-ahead log in `data/raft/`,
//! committed by the flusher's group commit with the message segments and the streams
//! (`SledStore::commit`), so one fdatasync round covers every group's appends and votes
//! and the classic queues' publishes (RabbitMQ's shared WAL).
//!
//! [`RaftWal::append`] copies a record into a buffer under a mutex and returns at once
//! with its append number (a mark in the message store's sequence, see
//! [`crate::segments::Segments::take_mark`]) and its place; the record is readable from
//! then on (from the buffer, or by `pread` once written out). The flusher's commit
//! writes the buffer out and fdatasyncs; a failed write or fsync loses the marks it
//! covered ([`crate::segments::Segments::lose_marks`]), so the commits asked for them
//! fail, and the log takes no more appends until the broker restarts (as a stream).
//!
//! Segment files (`<id:016x>.wal`) roll at [`RAFT_SEGMENT_MAX`]; each new one starts
//! with every live group's vote and purge point written again, so only entries,
//! truncations and drops keep an old file alive. A file is deleted once nobody needs it
//! ([`record::reclaimable`]): the caller sets each group's floor ([`RaftWal::set_floor`])
//! and a dropped group ([`RaftWal::drop_group`]) holds nothing. Recovery is in
//! [`recover`].

mod record;
mod recover;
pub mod snapshots;
#[cfg(test)]
mod tests;

pub use record::{Kind, Record};
pub use recover::RecoveredGroup;

use crate::segments::{Location, Segments};
use broker_core::store::StoreError;
use record::SegInfo;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A segment file is closed and the next one started past this size.
pub const RAFT_SEGMENT_MAX: u64 = 64 << 20;
/// Buffered bytes handed to the OS at once between commits.
const WRITE_CHUNK: usize = 1 << 20;

/// Counters of the log's commits (tests and metrics).
#[derive(Debug, Default)]
pub struct RaftStats {
    /// Commits that fdatasynced Raft records.
    pub rounds: AtomicU64,
    /// Records those commits covered.
    pub records: AtomicU64,
    /// Commits whose records came from more than one group (a shared fsync).
    pub shared_rounds: AtomicU64,
    /// Segment files deleted.
    pub deleted: AtomicU64,
}

/// A group's latest vote and purge point, written again at the head of each segment.
#[derive(Debug, Default, Clone)]
struct Checkpoint {
    vote: Option<Vec<u8>>,
    purge: Option<(u64, Vec<u8>)>,
}

struct Writer {
    id: u64,
    file: Arc<File>,
    /// Records of the current segment not handed to the OS yet.
    buf: Vec<u8>,
    /// Bytes of the current segment handed to the OS.
    written: u64,
    /// Files written since the last commit (closed ones and maybe the current one).
    unsynced: Vec<Arc<File>>,
    /// The current file was written since the last commit.
    dirty: bool,
    /// A file was created since the last commit: the directory needs an fsync.
    dir_unsynced: bool,
    /// Marks of the appends since the last commit.
    marks: Option<(u64, u64)>,
    /// Groups and records appended since the last commit (stats).
    round_groups: HashSet<u64>,
    round_records: u64,
    /// A write or fsync failed: no more appends.
    failed: bool,
    groups: HashMap<u64, Checkpoint>,
    segs: BTreeMap<u64, SegInfo>,
    floors: HashMap<u64, u64>,
    dropped: HashSet<u64>,
    /// A floor moved or a group was dropped since the last reclaim.
    reclaim_due: bool,
}

impl Writer {
    fn len(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    /// Buffers a record and notes it; returns where it goes.
    fn push(&mut self, group: u64, kind: Kind, index: u64, payload: &[u8]) -> Location {
        let offset = self.len();
        let start = self.buf.len();
        record::encode(&mut self.buf, group, kind, index, payload);
        let len = (self.buf.len() - start - record::HEADER) as u32;
        self.segs
            .entry(self.id)
            .or_default()
            .note(group, kind, index);
        match kind {
            Kind::Vote => self.groups.entry(group).or_default().vote = Some(payload.to_vec()),
            Kind::PurgeUpto => {
                self.groups.entry(group).or_default().purge = Some((index, payload.to_vec()))
            }
            Kind::Drop => {
                self.groups.remove(&group);
                self.floors.remove(&group);
                self.dropped.insert(group);
                self.reclaim_due = true;
            }
            Kind::Entry | Kind::TruncateFrom => {
                self.groups.entry(group).or_default();
            }
        }
        self.round_groups.insert(group);
        self.round_records += 1;
        self.dirty = true;
        Location {
            segment: self.id,
            offset,
            len,
        }
    }

    fn write_out(&mut self) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all_at(&self.buf, self.written)
            .map_err(|e| StoreError(format!("cannot write raft log segment {}: {e}", self.id)))?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

/// The node's Raft log (every group's records in one sequence of files).
pub struct RaftWal {
    dir: PathBuf,
    max: u64,
    marks: Arc<Segments>,
    writer: Mutex<Writer>,
    /// The segment being appended to (readable without the writer lock).
    current: AtomicU64,
    readers: Mutex<HashMap<u64, Arc<File>>>,
    /// What recovery found, until the cluster layer takes it.
    recovered: Mutex<Option<BTreeMap<u64, RecoveredGroup>>>,
    /// Commit counters.
    pub stats: RaftStats,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.wal"))
}

fn create(dir: &Path, id: u64) -> Result<File, StoreError> {
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(segment_path(dir, id))
        .map_err(|e| StoreError(format!("cannot create raft log segment {id}: {e}")))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl RaftWal {
    /// Opens the log in `dir` (created if new), recovering every group from its files
    /// (see [`RaftWal::take_recovered`]), with segments of at most `max` bytes;
    /// appends are numbered in `marks`' sequence.
    pub fn open(dir: &Path, marks: Arc<Segments>, max: u64) -> Result<RaftWal, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let found = recover::scan(dir)?;
        let id = found.highest + 1;
        let file = create(dir, id).map_err(|e| e.0)?;
        let groups = found
            .groups
            .iter()
            .map(|(g, r)| {
                let cp = Checkpoint {
                    vote: r.vote.clone(),
                    purge: r.purged.clone(),
                };
                (*g, cp)
            })
            .collect();
        let earlier = !found.segs.is_empty();
        let mut w = Writer {
            id,
            file: Arc::new(file),
            buf: Vec::with_capacity(WRITE_CHUNK + (64 << 10)),
            written: 0,
            unsynced: Vec::new(),
            dirty: false,
            dir_unsynced: true,
            marks: None,
            round_groups: HashSet::new(),
            round_records: 0,
            failed: false,
            groups,
            segs: found.segs,
            floors: HashMap::new(),
            // files from before (at least the empty one each earlier start left) are
            // looked at by the first commit
            reclaim_due: earlier,
            dropped: found.dropped,
        };
        w.segs.insert(id, SegInfo::default());
        Self::checkpoint(&mut w);
        Ok(RaftWal {
            dir: dir.to_path_buf(),
            max,
            marks,
            current: AtomicU64::new(id),
            writer: Mutex::new(w),
            readers: Mutex::new(HashMap::new()),
            recovered: Mutex::new(Some(found.groups)),
            stats: RaftStats::default(),
        })
    }

    /// What recovery found for each group (vote, purge point, live entries); given once.
    pub fn take_recovered(&self) -> BTreeMap<u64, RecoveredGroup> {
        lock(&self.recovered).take().unwrap_or_default()
    }

    /// Writes every live group's vote and purge point at the head of a new segment.
    fn checkpoint(w: &mut Writer) {
        let mut groups: Vec<(u64, Checkpoint)> =
            w.groups.iter().map(|(g, c)| (*g, c.clone())).collect();
        groups.sort_unstable_by_key(|(g, _)| *g);
        for (g, cp) in groups {
            if let Some(v) = &cp.vote {
                w.push(g, Kind::Vote, 0, v);
            }
            if let Some((index, p)) = &cp.purge {
                w.push(g, Kind::PurgeUpto, *index, p);
            }
        }
        // checkpoints alone do not make a commit round shared
        w.round_groups.clear();
        w.round_records = 0;
    }

    /// The store's append number now: a commit asked for after an append covers it.
    pub fn mark(&self) -> u64 {
        self.marks.mark()
    }

    /// Appends a record of `group`; returns its append number (mark) and its place.
    /// Readable at once; durable after the next commit that covers the mark.
    pub fn append(
        &self,
        group: u64,
        kind: Kind,
        index: u64,
        payload: &[u8],
    ) -> Result<(u64, Location), StoreError> {
        if record::FIXED + payload.len() > u32::MAX as usize {
            return Err(StoreError("raft record larger than 4 GiB".into()));
        }
        let mut w = lock(&self.writer);
        if w.failed {
            return Err(StoreError(
                "the raft log failed a write; it takes nothing more until restart".into(),
            ));
        }
        let total = (record::HEADER + record::FIXED + payload.len()) as u64;
        if w.len() > 0 && w.len() + total > self.max {
            if let Err(e) = self.roll(&mut w) {
                self.fail(&mut w);
                return Err(e);
            }
        }
        let at = w.push(group, kind, index, payload);
        let mark = self.marks.take_mark();
        w.marks = Some(match w.marks {
            Some((since, _)) => (since, mark),
            None => (mark - 1, mark),
        });
        if w.buf.len() >= WRITE_CHUNK {
            if let Err(e) = w.write_out() {
                self.fail(&mut w);
                return Err(e);
            }
        }
        Ok((mark, at))
    }

    /// Closes the current segment and starts the next, with the checkpoints.
    fn roll(&self, w: &mut Writer) -> Result<(), StoreError> {
        w.write_out()?;
        let next = w.id + 1;
        let file = Arc::new(create(&self.dir, next)?);
        let old = std::mem::replace(&mut w.file, file);
        if std::mem::take(&mut w.dirty) {
            w.unsynced.push(old);
        }
        w.id = next;
        w.written = 0;
        w.dir_unsynced = true;
        w.segs.insert(next, SegInfo::default());
        // the closed file may be past every floor already
        w.reclaim_due = true;
        self.current.store(next, Ordering::Release);
        let (groups, records) = (std::mem::take(&mut w.round_groups), w.round_records);
        Self::checkpoint(w);
        w.round_groups = groups;
        w.round_records = records;
        Ok(())
    }

    /// A write or fsync failed: every commit covering an append since the last good
    /// commit fails, and the log takes nothing more.
    fn fail(&self, w: &mut Writer) {
        w.failed = true;
        if let Some((since, upto)) = w.marks.take() {
            self.marks.lose_marks(since, upto);
        }
    }

    /// Reads a record back (from the buffer if it is not written out yet).
    pub fn read(&self, at: &Location) -> Result<Record, StoreError> {
        let size = record::HEADER + at.len as usize;
        if at.segment == self.current.load(Ordering::Acquire) {
            let w = lock(&self.writer);
            if w.id == at.segment && at.offset >= w.written {
                let start = (at.offset - w.written) as usize;
                let Some(bytes) = w.buf.get(start..start + size) else {
                    return Err(StoreError(format!(
                        "raft log segment {}: no record at {}",
                        at.segment, at.offset
                    )));
                };
                return record::check(at, bytes);
            }
        }
        let file = self.reader(at.segment)?;
        let mut buf = vec![0u8; size];
        file.read_exact_at(&mut buf, at.offset)
            .map_err(|e| StoreError(format!("cannot read raft log segment {}: {e}", at.segment)))?;
        record::check(at, &buf)
    }

    fn reader(&self, id: u64) -> Result<Arc<File>, StoreError> {
        let mut readers = lock(&self.readers);
        if let Some(f) = readers.get(&id) {
            return Ok(f.clone());
        }
        let f = File::open(segment_path(&self.dir, id))
            .map_err(|e| StoreError(format!("cannot open raft log segment {id}: {e}")))?;
        let f = Arc::new(f);
        readers.insert(id, f.clone());
        Ok(f)
    }

    /// Entries of `group` under `index` are no longer needed (the cluster layer passes
    /// the purge point + 1, later the oldest entry a quorum queue still reads). A floor
    /// only ever keeps what is still on disk: lowering it brings nothing back.
    pub fn set_floor(&self, group: u64, index: u64) {
        let mut w = lock(&self.writer);
        if !w.dropped.contains(&group) {
            w.floors.insert(group, index);
            w.reclaim_due = true;
        }
    }

    /// The group is gone: a `Drop` record (durable with the next commit), and its
    /// records hold no file from then on.
    pub fn drop_group(&self, group: u64) -> Result<u64, StoreError> {
        self.append(group, Kind::Drop, 0, &[]).map(|(mark, _)| mark)
    }

    /// The segment files on disk (tests, metrics).
    pub fn segment_ids(&self) -> Vec<u64> {
        lock(&self.writer).segs.keys().copied().collect()
    }

    /// Makes every record appended so far durable: writes out the buffer, fdatasyncs
    /// the files written since the last commit (and the directory for a new one), then
    /// deletes the files nobody needs any more (looked at only after a floor moved, a
    /// group was dropped, a file was closed or deleted). Run by the flusher
    /// (`SledStore::commit`).
    pub fn commit(&self) -> Result<(), StoreError> {
        let (files, new_entry, marks, below, due, groups, records) = {
            let mut w = lock(&self.writer);
            if w.failed || (!w.dirty && w.unsynced.is_empty() && !w.reclaim_due) {
                return Ok(());
            }
            if let Err(e) = w.write_out() {
                self.fail(&mut w);
                return Err(e);
            }
            let mut files = std::mem::take(&mut w.unsynced);
            if std::mem::take(&mut w.dirty) {
                files.push(w.file.clone());
            }
            // the floors and drops as they are now: what lets a file go is on disk
            // once this commit is done
            let due =
                std::mem::take(&mut w.reclaim_due).then(|| (w.floors.clone(), w.dropped.clone()));
            (
                files,
                std::mem::take(&mut w.dir_unsynced),
                w.marks.take(),
                w.id,
                due,
                std::mem::take(&mut w.round_groups).len(),
                std::mem::take(&mut w.round_records),
            )
        };
        let synced = match new_entry {
            true => sync_dir(&self.dir),
            false => Ok(()),
        }
        .and_then(|()| files.iter().try_for_each(|f| f.sync_data()));
        if let Err(e) = synced {
            let mut w = lock(&self.writer);
            if let Some((since, upto)) = marks {
                self.marks.lose_marks(since, upto);
            }
            self.fail(&mut w);
            tracing::error!("raft log fsync failed: {e}; the groups on this node stop");
            return Err(StoreError(format!("cannot fsync the raft log: {e}")));
        }
        if records > 0 {
            self.stats.rounds.fetch_add(1, Ordering::Relaxed);
            self.stats.records.fetch_add(records, Ordering::Relaxed);
            if groups > 1 {
                self.stats.shared_rounds.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some((floors, dropped)) = due {
            self.reclaim(below, &floors, &dropped);
        }
        Ok(())
    }

    /// Deletes the segments below `below` that nobody needs, given the floors and drops
    /// as they were when the commit that made them durable began.
    fn reclaim(&self, below: u64, floors: &HashMap<u64, u64>, dropped: &HashSet<u64>) {
        let gone = {
            let mut w = lock(&self.writer);
            let gone = record::reclaimable(&w.segs, below, floors, dropped);
            for id in &gone {
                w.segs.remove(id);
            }
            if !gone.is_empty() {
                // a file kept for a truncation or drop that hid one of these may go
                // next round
                w.reclaim_due = true;
                // a dropped group no file mentions any more is forgotten
                let segs = &w.segs;
                let left: HashSet<u64> = w
                    .dropped
                    .iter()
                    .copied()
                    .filter(|g| segs.values().any(|s| s.present.contains(g)))
                    .collect();
                w.dropped = left;
            }
            gone
        };
        if gone.is_empty() {
            return;
        }
        for id in &gone {
            lock(&self.readers).remove(id);
            match std::fs::remove_file(segment_path(&self.dir, *id)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(segment = id, "cannot delete raft log segment: {e}"),
            }
        }
        self.stats
            .deleted
            .fetch_add(gone.len() as u64, Ordering::Relaxed);
        // the removals durable before a later round deletes a file whose truncations
        // or drops hid records in these
        if let Err(e) = sync_dir(&self.dir) {
            tracing::warn!("cannot fsync the raft log directory: {e}");
        }
    }
}
