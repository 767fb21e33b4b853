//! Streams: append-only, replayable logs, one directory per stream under
//! `data/streams/<id>/` (see [`segment`] for the files and [`chunk`] for their
//! shapes). Appends are made on the publisher's thread into the stream's pending chunk;
//! the flusher's group commit ([`crate::Flusher`], through `SledStore::commit`) seals
//! the chunks of every stream appended to since the last commit, fsyncs them, and only
//! then shows them to readers and lets the publishers' confirms go. Stream appends are
//! numbered in the message store's sequence ([`crate::segments::Segments::take_mark`]),
//! so a channel's commit request covers its stream appends like its other writes, and a
//! failed stream write fails exactly the confirms that may have lost something.

pub mod chunk;
mod log;
pub mod segment;
#[cfg(test)]
mod tests;
mod tracking;

pub use chunk::Summary;
pub use log::{Chunk, Cursor, Retention, StreamLog};
pub use tracking::MAX_TRACKED;

use crate::segments::Segments;
use broker_core::store::StoreError;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// The streams of one data dir.
pub struct Streams {
    dir: PathBuf,
    marks: Arc<Segments>,
    /// Streams appended to since the flusher last committed them.
    dirty: Mutex<Vec<Arc<StreamLog>>>,
}

impl Streams {
    /// The streams under `dir`, numbering appends in `marks`' sequence.
    pub fn new(dir: PathBuf, marks: Arc<Segments>) -> Streams {
        Streams {
            dir,
            marks,
            dirty: Mutex::new(Vec::new()),
        }
    }

    /// Opens (or creates) stream `id`.
    pub fn open(&self, id: u64, retention: Retention) -> Result<Arc<StreamLog>, StoreError> {
        let log = StreamLog::open(
            id,
            self.dir.join(id.to_string()),
            self.marks.clone(),
            retention,
        )?;
        Ok(Arc::new(log))
    }

    /// Appends a record with its filter value (`x-stream-filter-value`) to `log`.
    /// Returns its offset, and whether the stream was clean before: then nobody has
    /// asked for a commit covering it yet, and the caller asks the flusher for one (a
    /// publisher without confirms still needs its messages committed before readers
    /// see them).
    pub fn append(
        &self,
        log: &Arc<StreamLog>,
        record: &[u8],
        filter: Option<&[u8]>,
    ) -> Result<(u64, bool), StoreError> {
        let offset = log.append(record, filter)?;
        let first = !log.dirty.swap(true, Ordering::AcqRel);
        if first {
            self.dirty
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(log.clone());
        }
        Ok((offset, first))
    }

    /// Commits every stream appended to since the last call (the flusher's group
    /// commit). The first error is returned after every stream was tried.
    pub fn commit(&self) -> Result<(), StoreError> {
        let logs = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|p| p.into_inner()));
        let mut res = Ok(());
        for log in logs {
            // cleared first: an append from now on registers the stream again
            log.dirty.store(false, Ordering::Release);
            if let Err(e) = log.commit() {
                tracing::error!(stream = log.id, "stream commit failed: {e}");
                if res.is_ok() {
                    res = Err(e);
                }
            }
        }
        res
    }

    /// Deletes a stream's files.
    pub fn remove(&self, log: &StreamLog) {
        log.remove();
    }

    /// Deletes the directories of streams not in `keep` (streams whose queue is gone:
    /// a crash between the deletion of the queue and of its files).
    pub fn remove_others(&self, keep: &std::collections::HashSet<u64>) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let id = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok());
            if let Some(id) = id {
                if !keep.contains(&id) {
                    tracing::info!(stream = id, "removing the files of a deleted stream");
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
}
