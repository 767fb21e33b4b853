//! The Raft log's record format and what each segment holds (for reclaiming).
//!
//! A record is `len u32 | crc32 u32 | kind u8 | group u64 | index u64 | payload`, all
//! big-endian; `len` counts the body (kind to payload) and the CRC covers it, so a torn
//! or damaged record is caught at recovery and on every read.

use crate::segments::Location;
use broker_core::store::StoreError;
use std::collections::{HashMap, HashSet};

/// Header bytes before the body: its length and CRC32.
pub(super) const HEADER: usize = 8;
/// Body bytes before the payload: kind, group, index.
pub(super) const FIXED: usize = 17;

/// What a record says about its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A log entry at `index` (an entry at an index replaces it and every later one).
    Entry = 1,
    /// The group's vote (the payload); `index` is unused.
    Vote = 2,
    /// Entries from `index` on are gone (a new leader's log overrode them).
    TruncateFrom = 3,
    /// Entries up to and including `index` are gone (a snapshot covers them); the
    /// payload is the purged log id.
    PurgeUpto = 4,
    /// The group is gone: everything it wrote before is void.
    Drop = 5,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Entry,
            2 => Kind::Vote,
            3 => Kind::TruncateFrom,
            4 => Kind::PurgeUpto,
            5 => Kind::Drop,
            _ => return None,
        })
    }
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The Raft group it belongs to.
    pub group: u64,
    /// What it says.
    pub kind: Kind,
    /// The log index it is about (see [`Kind`]).
    pub index: u64,
    /// The caller's bytes (an encoded entry, vote or log id).
    pub payload: Vec<u8>,
}

/// Appends the record's bytes to `buf`.
pub(super) fn encode(buf: &mut Vec<u8>, group: u64, kind: Kind, index: u64, payload: &[u8]) {
    let len = (FIXED + payload.len()) as u32;
    let start = buf.len();
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.push(kind as u8);
    buf.extend_from_slice(&group.to_be_bytes());
    buf.extend_from_slice(&index.to_be_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32fast::hash(&buf[start + HEADER..]);
    buf[start + 4..start + HEADER].copy_from_slice(&crc.to_be_bytes());
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

/// Parses the record at the start of `bytes`: `None` when it is incomplete, zeroed or
/// fails its checksum (a torn tail); otherwise the record and its total length.
pub(super) fn decode(bytes: &[u8]) -> Option<(Record, usize)> {
    let head = bytes.get(..HEADER)?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    if len < FIXED {
        return None;
    }
    let body = bytes.get(HEADER..HEADER + len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let kind = Kind::from_u8(body[0])?;
    let record = Record {
        group: u64_at(body, 1),
        kind,
        index: u64_at(body, 9),
        payload: body[FIXED..].to_vec(),
    };
    Some((record, HEADER + len))
}

/// Checks a record read back at `at` (`bytes` = header and body).
pub(super) fn check(at: &Location, bytes: &[u8]) -> Result<Record, StoreError> {
    match decode(bytes) {
        Some((r, n)) if n == bytes.len() => Ok(r),
        _ => Err(StoreError(format!(
            "raft log segment {}: record at {} is damaged or was never written",
            at.segment, at.offset
        ))),
    }
}

/// What one segment file holds, by group: enough to decide when nobody needs it.
#[derive(Debug, Default)]
pub(super) struct SegInfo {
    /// The highest entry index of each group with entries in it.
    pub(super) entries: HashMap<u64, u64>,
    /// Every group with any record in it.
    pub(super) present: HashSet<u64>,
    /// Truncations in it: (group, first index removed).
    pub(super) truncs: Vec<(u64, u64)>,
    /// Groups dropped in it.
    pub(super) drops: Vec<u64>,
}

impl SegInfo {
    /// Notes a record written to (or found in) this segment.
    pub(super) fn note(&mut self, group: u64, kind: Kind, index: u64) {
        self.present.insert(group);
        match kind {
            Kind::Entry => {
                let max = self.entries.entry(group).or_insert(index);
                *max = (*max).max(index);
            }
            Kind::TruncateFrom => self.truncs.push((group, index)),
            Kind::Drop => self.drops.push(group),
            Kind::Vote | Kind::PurgeUpto => {}
        }
    }
}

/// Which of the segments below `below` nobody needs, given each group's floor (entries
/// under it are not needed) and the dropped groups. A segment goes when every entry in
/// it is under its group's floor or of a dropped group, and none of its truncations or
/// drops still hides records of an older segment that is kept (deleting it would bring
/// those back at recovery). Votes and purge points are written again at the head of
/// every new segment, so the newest ones never depend on an old segment.
pub(super) fn reclaimable(
    segs: &std::collections::BTreeMap<u64, SegInfo>,
    below: u64,
    floors: &HashMap<u64, u64>,
    dropped: &HashSet<u64>,
) -> Vec<u64> {
    let floor = |g: &u64| floors.get(g).copied().unwrap_or(0);
    let mut out = Vec::new();
    for (&id, s) in segs.range(..below) {
        let entries_done = s
            .entries
            .iter()
            .all(|(g, max)| dropped.contains(g) || *max < floor(g));
        let older = || segs.range(..id).map(|(_, o)| o);
        let truncs_done = s.truncs.iter().all(|(g, from)| {
            dropped.contains(g) || older().all(|o| o.entries.get(g).is_none_or(|max| max < from))
        });
        let drops_done = s
            .drops
            .iter()
            .all(|g| older().all(|o| !o.present.contains(g)));
        if entries_done && truncs_done && drops_done {
            out.push(id);
        }
    }
    out
}
