//! Reading a spill's entries without taking them (the management API's browse): whole
//! segments before the first wanted entry are skipped by their record counts, the
//! records of the segment it starts in are walked chunk by chunk, and nothing of the
//! spill's reading state (its read position, counts, buffers) changes.

use super::record::{be_u32, decode, Shared, HEADER};
use super::{FileSpill, READ_CHUNK};
use broker_core::queue::Entry;
use std::os::unix::fs::FileExt;

impl FileSpill {
    /// Reads bytes `off..off + len` of segment `i` into `out` (cut at its end), from its
    /// file and, for the last segment, from the write buffer past what was written.
    fn read_segment(
        &self,
        i: usize,
        off: u64,
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<usize, String> {
        let Some(seg) = self.segments.get(i) else {
            return Ok(0);
        };
        let last = i + 1 == self.segments.len();
        let end = seg.written + if last { self.buf.len() as u64 } else { 0 };
        let len = len.min(end.saturating_sub(off) as usize);
        out.clear();
        out.resize(len, 0);
        let from_file = (seg.written.saturating_sub(off) as usize).min(len);
        if from_file > 0 {
            seg.file
                .read_exact_at(&mut out[..from_file], off)
                .map_err(|e| format!("cannot read a spill file: {e}"))?;
        }
        if from_file < len {
            let b = (off + from_file as u64 - seg.written) as usize;
            out[from_file..len].copy_from_slice(&self.buf[b..b + (len - from_file)]);
        }
        Ok(len)
    }

    /// Copies of up to `max` entries after the `skip` oldest (`Spill::peek`).
    pub(super) fn peek_entries(&self, mut skip: usize, max: usize) -> Result<Vec<Entry>, String> {
        let mut out = Vec::new();
        let mut shared = Shared::default();
        let mut chunk = Vec::new();
        for (i, seg) in self.segments.iter().enumerate() {
            if out.len() >= max {
                break;
            }
            let (mut off, mut left) = if i == 0 {
                (self.read_off, seg.records - seg.read)
            } else {
                (0, seg.records)
            };
            if skip >= left {
                skip -= left;
                continue;
            }
            // the chunk holds bytes chunk_at..chunk_at + chunk.len() of the segment
            let mut chunk_at = off;
            chunk.clear();
            while left > 0 && out.len() < max {
                let rel = (off - chunk_at) as usize;
                if chunk.len() < rel + HEADER {
                    chunk_at = off;
                    self.read_segment(i, off, READ_CHUNK, &mut chunk)?;
                    if chunk.len() < HEADER {
                        return Err("a spill record is cut short".into());
                    }
                }
                let rel = (off - chunk_at) as usize;
                let len = be_u32(&chunk[rel..]) as usize;
                let crc = be_u32(&chunk[rel + 4..]);
                if skip == 0 {
                    if chunk.len() < rel + HEADER + len {
                        chunk_at = off;
                        self.read_segment(i, off, (HEADER + len).max(READ_CHUNK), &mut chunk)?;
                        if chunk.len() < HEADER + len {
                            return Err("a spill record is cut short".into());
                        }
                    }
                    let rel = (off - chunk_at) as usize;
                    let payload = &chunk[rel + HEADER..rel + HEADER + len];
                    if crc32fast::hash(payload) != crc {
                        return Err("a spill record fails its checksum".into());
                    }
                    out.push(decode(payload, &mut shared)?);
                } else {
                    skip -= 1;
                }
                off += (HEADER + len) as u64;
                left -= 1;
            }
        }
        Ok(out)
    }
}
