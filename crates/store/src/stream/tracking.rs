//! Server-side offset tracking: the last offset each tracking consumer (by consumer
//! tag, or group name) acknowledged, kept in the stream's directory as `offsets`
//! (`count u32 | (len u16 | tag | offset u64)*`, replaced whole: written beside, fsynced,
//! renamed). A crash loses at most the acks since the last save; the consumer then
//! reads a few messages again (at least once).

use super::StreamLog;
use broker_core::store::StoreError;
use std::collections::HashMap;
use std::io::Write;

/// Most tags a stream tracks (a client inventing a tag per connection must not grow the
/// file without end: the least recently saved go first).
pub const MAX_TRACKED: usize = 10_000;

impl StreamLog {
    /// The tracked offsets saved for this stream (empty when none were).
    pub fn load_offsets(&self) -> HashMap<String, u64> {
        let Ok(b) = std::fs::read(self.dir().join("offsets")) else {
            return HashMap::new();
        };
        decode(&b).unwrap_or_else(|| {
            tracing::warn!(
                stream = self.id,
                "the stream's tracked offsets are unreadable; starting without them"
            );
            HashMap::new()
        })
    }

    /// Saves the tracked offsets (blocking: fsyncs; call it off the actor threads).
    pub fn save_offsets(&self, offsets: &HashMap<String, u64>) -> Result<(), StoreError> {
        if self.is_deleted() {
            return Ok(());
        }
        let err = |e: std::io::Error| StoreError(format!("cannot save tracked offsets: {e}"));
        let tmp = self.dir().join("offsets.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&encode(offsets)).map_err(err)?;
        f.sync_data().map_err(err)?;
        std::fs::rename(&tmp, self.dir().join("offsets")).map_err(err)?;
        if let Ok(d) = std::fs::File::open(self.dir()) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

fn encode(offsets: &HashMap<String, u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + offsets.len() * 24);
    let kept: Vec<_> = offsets
        .iter()
        .filter(|(t, _)| t.len() <= u16::MAX as usize)
        .take(MAX_TRACKED)
        .collect();
    out.extend_from_slice(&(kept.len() as u32).to_be_bytes());
    for (tag, off) in kept {
        out.extend_from_slice(&(tag.len() as u16).to_be_bytes());
        out.extend_from_slice(tag.as_bytes());
        out.extend_from_slice(&off.to_be_bytes());
    }
    out
}

fn decode(b: &[u8]) -> Option<HashMap<String, u64>> {
    let n = u32::from_be_bytes(b.get(0..4)?.try_into().ok()?) as usize;
    let mut at = 4;
    let mut out = HashMap::with_capacity(n.min(MAX_TRACKED));
    for _ in 0..n {
        let len = u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize;
        at += 2;
        let tag = String::from_utf8(b.get(at..at + len)?.to_vec()).ok()?;
        at += len;
        let off = u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?);
        at += 8;
        out.insert(tag, off);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_and_garbage_is_refused() {
        let mut m = HashMap::new();
        m.insert("consumer-1".to_string(), 42u64);
        m.insert("g".to_string(), 0u64);
        assert_eq!(decode(&encode(&m)), Some(m));
        assert_eq!(decode(&[0, 0, 0, 2, 0]), None);
    }
}
