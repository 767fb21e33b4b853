//! Recovery of the Raft log on open: the segment files are read in order and every
//! group's state rebuilt (an entry replaces the entries from its index on, a truncation
//! cuts, a purge moves the floor, a drop forgets the group). A torn or damaged record
//! ends the log: the file is cut there (what follows was never acknowledged, since a
//! commit covers a prefix), and any later file is set aside as `.damaged`.

use super::record::{self, Kind, SegInfo};
use super::segment_path;
use crate::segments::Location;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// What a group's records say after recovery.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveredGroup {
    /// The last vote written (the caller's bytes).
    pub vote: Option<Vec<u8>>,
    /// The last purge point: its index and the caller's bytes (the purged log id).
    pub purged: Option<(u64, Vec<u8>)>,
    /// The live entries after the purge point, by index, with their places.
    pub entries: BTreeMap<u64, Location>,
}

/// Everything recovery found.
pub(super) struct Found {
    pub(super) groups: BTreeMap<u64, RecoveredGroup>,
    pub(super) segs: BTreeMap<u64, SegInfo>,
    pub(super) dropped: HashSet<u64>,
    /// The highest segment number found (0 when none).
    pub(super) highest: u64,
}

/// Reads every segment file in `dir` in order.
pub(super) fn scan(dir: &Path) -> Result<Found, String> {
    let mut ids: Vec<u64> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            u64::from_str_radix(name.strip_suffix(".wal")?, 16).ok()
        })
        .collect();
    ids.sort_unstable();
    let mut found = Found {
        groups: BTreeMap::new(),
        segs: BTreeMap::new(),
        dropped: HashSet::new(),
        highest: ids.last().copied().unwrap_or(0),
    };
    for (i, id) in ids.iter().enumerate() {
        let path = segment_path(dir, *id);
        let data = std::fs::read(&path)
            .map_err(|e| format!("cannot read raft log segment {}: {e}", path.display()))?;
        let good = scan_segment(*id, &data, &mut found);
        if good == data.len() {
            continue;
        }
        tracing::warn!(
            segment = id,
            offset = good,
            "raft log: torn or damaged record; the log is cut there"
        );
        let cut = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(good as u64).and_then(|()| f.sync_all()));
        cut.map_err(|e| format!("cannot cut raft log segment {}: {e}", path.display()))?;
        for later in &ids[i + 1..] {
            let p = segment_path(dir, *later);
            tracing::error!(
                segment = later,
                "raft log: set aside after a damaged segment"
            );
            std::fs::rename(&p, p.with_extension("wal.damaged"))
                .map_err(|e| format!("cannot set aside {}: {e}", p.display()))?;
        }
        break;
    }
    Ok(found)
}

/// Applies the records of one segment; returns the length of its good prefix.
fn scan_segment(id: u64, data: &[u8], found: &mut Found) -> usize {
    let info = found.segs.entry(id).or_default();
    let mut pos = 0;
    while pos < data.len() {
        let Some((r, n)) = record::decode(&data[pos..]) else {
            break;
        };
        let at = Location {
            segment: id,
            offset: pos as u64,
            len: (n - record::HEADER) as u32,
        };
        info.note(r.group, r.kind, r.index);
        if r.kind == Kind::Drop {
            found.groups.remove(&r.group);
            found.dropped.insert(r.group);
        } else if !found.dropped.contains(&r.group) {
            let g = found.groups.entry(r.group).or_default();
            match r.kind {
                Kind::Entry => {
                    g.entries.split_off(&r.index);
                    g.entries.insert(r.index, at);
                }
                Kind::Vote => g.vote = Some(r.payload),
                Kind::TruncateFrom => {
                    g.entries.split_off(&r.index);
                }
                Kind::PurgeUpto => {
                    g.entries = g.entries.split_off(&(r.index.saturating_add(1)));
                    g.purged = Some((r.index, r.payload));
                }
                Kind::Drop => {}
            }
        }
        pos += n;
    }
    pos
}
