//! Reading records back without the writer: checking one read back, walking a
//! segment's records for recovery, sizing a segment file found at start.

use super::{segment_path, Location, HEADER, SEGMENT_MAX};
use broker_core::store::StoreError;
use std::path::Path;

/// Checks a record read back (header and payload) against its location: its length
/// and checksum; returns the payload.
pub(super) fn check_record(at: &Location, mut buf: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let crc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len == 0 && crc == 0 {
        // the unwritten (zeroed) part of a segment: an index entry reached the disk
        // before its record, which was never confirmed
        return Err(StoreError(format!(
            "segment {}: record at {} was never written (incomplete write)",
            at.segment, at.offset
        )));
    }
    if len != at.len || crc32fast::hash(&buf[HEADER as usize..]) != crc {
        return Err(StoreError(format!(
            "segment {}: record at {} is damaged (checksum mismatch)",
            at.segment, at.offset
        )));
    }
    buf.drain(..HEADER as usize);
    Ok(buf)
}

/// Bytes written to a segment file found at start: its allocated blocks (files are
/// sparse until written), at most a full segment.
pub(super) fn written_size(entry: &std::fs::DirEntry) -> u64 {
    use std::os::unix::fs::MetadataExt;
    entry
        .metadata()
        .map(|m| (m.blocks() * 512).clamp(1, SEGMENT_MAX))
        .unwrap_or(SEGMENT_MAX)
}

/// Walks the records of every segment file in `dir` from `(segment, offset)` on, in
/// order, calling `f` with each record's location and payload (checksum verified). A
/// segment's walk ends at its zeroed tail, at a torn or damaged record, or at its end;
/// missing segments are skipped. Recovery uses it to find records the index may not
/// have made durable yet.
pub fn scan(
    dir: &Path,
    from: (u64, u64),
    mut f: impl FnMut(Location, &[u8]),
) -> Result<(), String> {
    let mut ids: Vec<u64> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".seg"))
                    .and_then(|n| u64::from_str_radix(n, 16).ok())
            })
            .filter(|id| *id >= from.0)
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    ids.sort_unstable();
    for id in ids {
        let bytes = std::fs::read(segment_path(dir, id))
            .map_err(|e| format!("cannot read segment {id}: {e}"))?;
        let mut at = if id == from.0 { from.1 as usize } else { 0 };
        while at + HEADER as usize <= bytes.len() {
            let h = &bytes[at..at + HEADER as usize];
            let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
            let crc = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
            let start = at + HEADER as usize;
            let end = start + len as usize;
            // no record is empty: a zero length is the unwritten tail
            if len == 0 {
                break;
            }
            if end > bytes.len() || crc32fast::hash(&bytes[start..end]) != crc {
                tracing::warn!(
                    segment = id,
                    offset = at,
                    "log replay stops in this segment at a torn or damaged record"
                );
                break;
            }
            f(
                Location {
                    segment: id,
                    offset: at as u64,
                    len,
                },
                &bytes[start..end],
            );
            at = end;
        }
    }
    Ok(())
}
