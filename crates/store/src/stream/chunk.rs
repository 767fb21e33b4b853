//! The on-disk shapes of a stream: a chunk (a header, then the records of the messages
//! appended between two commits) and an index entry (where a chunk starts, its first
//! offset and its timestamp). A chunk's checksum covers its header and its records, so
//! recovery can tell a complete chunk from a torn write.
//!
//! A chunk's records begin with its filter summary ([`Summary`]): a bloom filter of the
//! `x-stream-filter-value`s of its messages and whether any message has none, so a
//! filtered reader skips chunks without reading their records.

use broker_core::store::StoreError;
use bytes::Bytes;

/// "STRM": the first four bytes of every chunk.
pub const MAGIC: u32 = 0x5354_524d;

/// Bytes of a chunk header.
pub const HEADER: usize = 36;

/// Bytes of an index entry.
pub const INDEX_ENTRY: usize = 32;

/// Bytes of the bloom filter in a chunk's summary (RabbitMQ's default filter size).
pub const BLOOM_BYTES: usize = 16;

/// Bytes of a chunk's summary: the bloom filter, then a flag byte.
pub const SUMMARY: usize = BLOOM_BYTES + 1;

/// What a chunk says about the filter values of its messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Bits set for each filter value (two per value).
    pub bloom: [u8; BLOOM_BYTES],
    /// Some message in the chunk has no filter value.
    pub unfiltered: bool,
}

impl Summary {
    fn bits(value: &[u8]) -> [usize; 2] {
        let h1 = crc32fast::hash(value);
        let mut h = crc32fast::Hasher::new();
        h.update(&[0x5a]);
        h.update(value);
        let h2 = h.finalize();
        let n = (BLOOM_BYTES * 8) as u32;
        [(h1 % n) as usize, (h2 % n) as usize]
    }

    /// Notes a message's filter value (or its lack of one).
    pub fn add(&mut self, value: Option<&[u8]>) {
        match value {
            None => self.unfiltered = true,
            Some(v) => {
                for b in Self::bits(v) {
                    self.bloom[b / 8] |= 1 << (b % 8);
                }
            }
        }
    }

    /// Whether the chunk may hold a message with this filter value (a bloom filter
    /// answers "maybe" or "certainly not").
    pub fn may_contain(&self, value: &[u8]) -> bool {
        Self::bits(value)
            .iter()
            .all(|b| self.bloom[b / 8] & (1 << (b % 8)) != 0)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.bloom);
        out.push(u8::from(self.unfiltered));
    }

    /// Decodes the summary at the start of a chunk's data.
    pub fn decode(b: &[u8]) -> Option<Summary> {
        let bloom = b.get(..BLOOM_BYTES)?.try_into().ok()?;
        Some(Summary {
            bloom,
            unfiltered: *b.get(BLOOM_BYTES)? != 0,
        })
    }
}

/// What a chunk header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Offset of its first message.
    pub first_offset: u64,
    /// Messages in it.
    pub count: u32,
    /// When it was written (ms since the epoch): seeks by time land on chunks.
    pub timestamp: u64,
    /// Bytes of records after the header.
    pub data_len: u32,
    /// CRC-32 of the header's other fields and the records.
    pub crc: u32,
}

impl ChunkHeader {
    /// The whole chunk's length on disk.
    pub fn total_len(&self) -> u64 {
        HEADER as u64 + u64::from(self.data_len)
    }

    /// The offset after its last message.
    pub fn end_offset(&self) -> u64 {
        self.first_offset + u64::from(self.count)
    }

    /// Decodes a header; `None` when the bytes are not one (zeroes, garbage, a torn
    /// write).
    pub fn decode(b: &[u8]) -> Option<ChunkHeader> {
        if b.len() < HEADER || u32::from_be_bytes(b[0..4].try_into().ok()?) != MAGIC || b[4] != 1 {
            return None;
        }
        let u64_at = |i: usize| b[i..i + 8].try_into().ok().map(u64::from_be_bytes);
        let u32_at = |i: usize| b[i..i + 4].try_into().ok().map(u32::from_be_bytes);
        Some(ChunkHeader {
            first_offset: u64_at(8)?,
            count: u32_at(16)?,
            timestamp: u64_at(20)?,
            data_len: u32_at(28)?,
            crc: u32_at(32)?,
        })
    }

    /// Whether `data` (the records) matches the checksum.
    pub fn check(&self, header: &[u8], data: &[u8]) -> bool {
        let mut h = crc32fast::Hasher::new();
        h.update(&header[..32]);
        h.update(data);
        h.finalize() == self.crc
    }
}

/// Builds a chunk from the records appended since the last one: `[len u32 | record]...`.
#[derive(Debug, Default)]
pub struct Pending {
    /// Offset of the first record in `data`.
    pub first_offset: u64,
    /// Records in `data`.
    pub count: u32,
    /// The records, each after its length.
    pub data: Vec<u8>,
    /// Their filter values.
    pub summary: Summary,
}

impl Pending {
    /// Adds a record with its filter value.
    pub fn push(&mut self, record: &[u8], filter: Option<&[u8]>) {
        self.summary.add(filter);
        self.data
            .extend_from_slice(&(record.len() as u32).to_be_bytes());
        self.data.extend_from_slice(record);
        self.count += 1;
    }

    /// Bytes the chunk's data will take (summary and records).
    pub fn data_len(&self) -> usize {
        SUMMARY + self.data.len()
    }

    /// The chunk: header, summary, then records; `timestamp` in ms since the epoch.
    pub fn seal(&mut self, timestamp: u64) -> (ChunkHeader, Vec<u8>) {
        let mut body = Vec::with_capacity(SUMMARY + self.data.len());
        self.summary.encode(&mut body);
        body.extend_from_slice(&self.data);
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.extend_from_slice(&MAGIC.to_be_bytes());
        out.extend_from_slice(&[1, 0, 0, 0]);
        out.extend_from_slice(&self.first_offset.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&timestamp.to_be_bytes());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&out[..32]);
        h.update(&body);
        let crc = h.finalize();
        out.extend_from_slice(&crc.to_be_bytes());
        out.extend_from_slice(&body);
        let header = ChunkHeader {
            first_offset: self.first_offset,
            count: self.count,
            timestamp,
            data_len: body.len() as u32,
            crc,
        };
        self.first_offset += u64::from(self.count);
        self.count = 0;
        self.data.clear();
        self.summary = Summary::default();
        (header, out)
    }
}

/// The records of a chunk read back (slices of one buffer), after its summary.
pub fn split_records(header: &ChunkHeader, data: Bytes) -> Result<Vec<Bytes>, StoreError> {
    let mut out = Vec::with_capacity(header.count as usize);
    let mut at = SUMMARY;
    for _ in 0..header.count {
        let len = data
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| StoreError("stream chunk: record length cut short".into()))?
            as usize;
        at += 4;
        if at + len > data.len() {
            return Err(StoreError("stream chunk: record cut short".into()));
        }
        out.push(data.slice(at..at + len));
        at += len;
    }
    Ok(out)
}

/// An index entry: a chunk's first offset, its timestamp, where it starts in its
/// segment and how many messages it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// First offset.
    pub first_offset: u64,
    /// Timestamp (ms).
    pub timestamp: u64,
    /// Byte position of the chunk header in the segment file.
    pub pos: u64,
    /// Messages in the chunk.
    pub count: u32,
}

impl IndexEntry {
    /// The 32 bytes written to the index file.
    pub fn encode(&self) -> [u8; INDEX_ENTRY] {
        let mut b = [0u8; INDEX_ENTRY];
        b[0..8].copy_from_slice(&self.first_offset.to_be_bytes());
        b[8..16].copy_from_slice(&self.timestamp.to_be_bytes());
        b[16..24].copy_from_slice(&self.pos.to_be_bytes());
        b[24..28].copy_from_slice(&self.count.to_be_bytes());
        b
    }

    /// Decodes one.
    pub fn decode(b: &[u8]) -> Option<IndexEntry> {
        Some(IndexEntry {
            first_offset: u64::from_be_bytes(b.get(0..8)?.try_into().ok()?),
            timestamp: u64::from_be_bytes(b.get(8..16)?.try_into().ok()?),
            pos: u64::from_be_bytes(b.get(16..24)?.try_into().ok()?),
            count: u32::from_be_bytes(b.get(24..28)?.try_into().ok()?),
        })
    }
}
