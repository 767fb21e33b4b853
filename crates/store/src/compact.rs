//! Compaction: the space of a segment holding a few live records among many dead ones is
//! reclaimed by copying the live ones forward.
//!
//! A sealed segment (never the one being appended to) whose live bytes are below
//! [`COMPACT_BELOW`] percent of what was written to it is walked record by record. Each
//! record's [`Envelope`] names its index entries; those that still point at the record
//! are live. A live record is appended anew (to the current segment) with a *copy*
//! envelope naming the live entries; once the copies are fsynced, each entry is switched
//! to its copy with a sled compare-and-swap on the entry's old value, so an ack or purge
//! that removed the entry meanwhile wins and the copy's reference is simply released.
//! When the last entry leaves the old segment it is doomed, and deleted once an index
//! flush has made the switches durable (the rule for every deletion: a crash never
//! leaves an index entry pointing at a deleted file). Recovery never restores entries
//! from copies (see [`Envelope::copy`]).
//!
//! Each round walks at most [`ROUND_SCAN`] bytes and copies at most [`ROUND_COPY`], on
//! the compactor thread ([`crate::flusher`]), so commits wait for the writer lock only
//! per record, never for a whole segment. With live bytes at or above 40% of every
//! sealed segment, segment files take at most 2.5 times the live bytes, plus the current
//! segment and the one being compacted.

use crate::index::{Envelope, Pointer};
use crate::segments::{record_bytes, Location};
use crate::store::{err, SledStore};
use broker_core::store::{message_key, StoreError};
use std::collections::BTreeSet;

/// A sealed segment is compacted when its live bytes are below this percentage of its
/// size (RabbitMQ's classic queues v2 compact below 50% of a file's messages live).
pub const COMPACT_BELOW: u64 = 40;
/// Bytes of a segment walked per round at most.
pub const ROUND_SCAN: u64 = 4 << 20;
/// Bytes copied per round at most.
pub const ROUND_COPY: u64 = 1 << 20;

/// Where the compactor is.
#[derive(Debug, Default)]
pub struct Compaction {
    /// The segment being compacted and the offset of its next record.
    pub(crate) cursor: Option<(u64, u64)>,
    /// Segments a full walk could not empty (entries pointing at records that are not
    /// there, or records without an envelope): not tried again until a restart.
    pub(crate) skip: BTreeSet<u64>,
}

/// A live record copied forward and the entries to switch to it.
struct Copied {
    at: Location,
    entries: Vec<([u8; 16], sled::IVec, Pointer)>,
}

impl SledStore {
    /// One bounded compaction round; `true` if there is more to do.
    pub fn compact_round(&self) -> Result<bool, StoreError> {
        let mut c = self.compaction.lock().unwrap_or_else(|p| p.into_inner());
        if self.recovery.is_broken() {
            return Ok(false);
        }
        let (segment, from) = match c.cursor.take() {
            Some(at) => at,
            None => match self.segments.compaction_candidate(COMPACT_BELOW, &c.skip) {
                Some(id) => (id, 0),
                None => return Ok(false),
            },
        };
        let since = self.segments.mark();
        let (copies, next) = match self.copy_live(segment, from) {
            Ok(done) => done,
            Err(e) => {
                c.skip.insert(segment);
                return Err(e);
            }
        };
        // the copies are on disk before any entry points at them
        let synced = if copies.is_empty() {
            Ok(())
        } else {
            self.segments
                .sync()
                .and_then(|()| self.segments.check_lost(since, self.segments.mark()))
        };
        if let Err(e) = synced {
            for copy in &copies {
                let n = copy.entries.len() as u64;
                self.segments
                    .release(copy.at.segment, n, record_bytes(copy.at.len));
            }
            c.cursor = Some((segment, from));
            return Err(e);
        }
        let switched = self.switch(copies);
        match next {
            Some(offset) => c.cursor = Some((segment, offset)),
            None => {
                if self.segments.stat(segment).is_some() {
                    // entries are left that the walk did not find: do not walk it again
                    c.skip.insert(segment);
                }
            }
        }
        switched.map(|()| true)
    }

    /// Copies the live records of `segment` from `offset` on, within one round's bounds;
    /// returns the copies and where the walk stopped (`None` at the segment's end).
    fn copy_live(
        &self,
        segment: u64,
        mut offset: u64,
    ) -> Result<(Vec<Copied>, Option<u64>), StoreError> {
        let db = self.db()?;
        let (mut scanned, mut copied) = (0u64, 0u64);
        let mut copies = Vec::new();
        while scanned < ROUND_SCAN && copied < ROUND_COPY {
            let Some((at, payload)) = self.segments.read_next(segment, offset)? else {
                return Ok((copies, None));
            };
            offset = at.offset + record_bytes(at.len);
            scanned += record_bytes(at.len);
            let Ok((Some(env), record)) = Envelope::split(&payload) else {
                return Err(StoreError(format!(
                    "segment {segment}: a record without an envelope cannot be compacted"
                )));
            };
            let mut entries = Vec::new();
            for q in &env.queues {
                let key = message_key(*q, env.seq);
                let Some(value) = db.messages.get(key).map_err(err)? else {
                    continue;
                };
                match Pointer::decode(&value) {
                    Some(p) if p.at == at => entries.push((key, value, p)),
                    _ => {}
                }
            }
            if entries.is_empty() {
                continue;
            }
            let queues: Vec<u64> = entries
                .iter()
                .map(|(k, _, _)| {
                    let mut q = [0u8; 8];
                    q.copy_from_slice(&k[..8]);
                    u64::from_be_bytes(q)
                })
                .collect();
            let prefix = Envelope::encode_as(&queues, env.seq, &env.meta, true);
            let at = self
                .segments
                .append(&prefix, record, entries.len() as u64)?;
            copied += record_bytes(at.len);
            copies.push(Copied { at, entries });
        }
        Ok((copies, Some(offset)))
    }

    /// Points each entry at its copy, unless it changed meanwhile (then the copy's
    /// reference goes instead).
    fn switch(&self, copies: Vec<Copied>) -> Result<(), StoreError> {
        let db = self.db()?;
        let mut failed = None;
        for copy in copies {
            // the gate is held per record, not per round: a flush waiting for it would
            // otherwise hold every insert and removal behind it for the whole round
            let _gate = self.shared();
            let fanout = copy.entries.len() as u32;
            for (key, old, p) in copy.entries {
                let new = Pointer {
                    at: copy.at,
                    meta: p.meta,
                    fanout,
                };
                let swapped = match failed {
                    Some(_) => Ok(Err(())),
                    None => db
                        .messages
                        .compare_and_swap(key, Some(&old[..]), Some(new.encode()))
                        .map(|r| r.map_err(drop)),
                };
                match swapped {
                    Ok(Ok(())) => {
                        self.touched();
                        self.segments.release(p.at.segment, 1, p.share());
                    }
                    Ok(Err(())) => self.segments.release(copy.at.segment, 1, new.share()),
                    Err(e) => {
                        self.segments.release(copy.at.segment, 1, new.share());
                        failed = Some(self.failed(e));
                    }
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }
}
