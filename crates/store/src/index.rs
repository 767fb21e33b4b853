//! What the store says about a message outside its record: the [`Pointer`] sled keeps
//! per queue entry (where the record is, and what the queue needs without reading it),
//! and the [`Envelope`] each segment record starts with (which queue entries point at it)
//! so that recovery can rebuild index entries that were not yet durable at a crash.

use crate::segments::Location;
use broker_core::message::Meta;
use broker_core::store::StoreError;

/// The index entry sled keeps for a message of a queue: where its record is, and what
/// the queue needs of it without reading the record (size, priority, arrival, TTL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pointer {
    /// The record.
    pub at: Location,
    /// What the queue needs of the message.
    pub meta: Meta,
    /// How many index entries share the record (a message routed to several durable
    /// queues is written once): each entry counts for this share of the record's bytes
    /// in its segment's live bytes, which decide compaction.
    pub fanout: u32,
}

impl Pointer {
    /// First byte of an encoded pointer (a record stored inline starts with 1 instead).
    pub const TAG: u8 = b'Q';

    /// Encodes the pointer for sled, compactly (varints; priority and TTL only when
    /// set): sled copies a whole leaf on every insert, so small index values keep
    /// publishing fast. Typically 14 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let m = &self.meta;
        let mut v = Vec::with_capacity(32);
        v.push(Self::TAG);
        let flags = u8::from(m.priority != 0)
            | (u8::from(m.ttl_ms.is_some()) << 1)
            | (u8::from(self.fanout > 1) << 2);
        v.push(flags);
        for x in [
            self.at.segment,
            self.at.offset,
            u64::from(self.at.len),
            u64::from(m.size),
            u64::from(m.body_len),
            m.arrival_ms,
        ] {
            put_varint(&mut v, x);
        }
        if m.priority != 0 {
            v.push(m.priority);
        }
        if let Some(t) = m.ttl_ms {
            put_varint(&mut v, t);
        }
        if self.fanout > 1 {
            put_varint(&mut v, u64::from(self.fanout));
        }
        v
    }

    /// Bytes of its segment this entry accounts for: its share of the record.
    pub fn share(&self) -> u64 {
        crate::segments::record_bytes(self.at.len) / u64::from(self.fanout.max(1))
    }

    /// Decodes an index value; `None` if it is not a pointer.
    pub fn decode(v: &[u8]) -> Option<Pointer> {
        let (&tag, rest) = v.split_first()?;
        if tag != Self::TAG {
            return None;
        }
        let (&flags, mut rest) = rest.split_first()?;
        let mut next = || {
            let (x, r) = get_varint(rest)?;
            rest = r;
            Some(x)
        };
        let (segment, offset, len, size, body_len, arrival_ms) =
            (next()?, next()?, next()?, next()?, next()?, next()?);
        let priority = if flags & 1 != 0 {
            let (&p, r) = rest.split_first()?;
            rest = r;
            p
        } else {
            0
        };
        let ttl_ms = if flags & 2 != 0 {
            let (t, r) = get_varint(rest)?;
            rest = r;
            Some(t)
        } else {
            None
        };
        // pointers written before fan-out was recorded count as single
        let fanout = if flags & 4 != 0 {
            u32::try_from(get_varint(rest)?.0).ok()?.max(1)
        } else {
            1
        };
        Some(Pointer {
            at: Location {
                segment,
                offset,
                len: u32::try_from(len).ok()?,
            },
            meta: Meta {
                size: u32::try_from(size).ok()?,
                body_len: u32::try_from(body_len).ok()?,
                priority,
                arrival_ms,
                ttl_ms,
            },
            fanout,
        })
    }
}

fn put_varint(v: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        v.push((x as u8) | 0x80);
        x >>= 7;
    }
    v.push(x as u8);
}

fn get_varint(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut x = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        x |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((x, &b[i + 1..]));
        }
    }
    None
}

/// The head of every segment record: the queues and sequence of the index entries that
/// point at it, and their meta. Confirms wait only for the segment fsync, so after a
/// crash the index may lack entries for confirmed records; recovery reads them back from
/// here (see [`crate::replay`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Store ids of the durable queues the message went to.
    pub queues: Vec<u64>,
    /// The message's sequence (its store id).
    pub seq: u64,
    /// What each queue's index entry holds besides the location.
    pub meta: Meta,
    /// A copy made by compaction ([`crate::compact`]): recovery never restores index
    /// entries from a copy. An entry is switched to a copy only after the copy is on
    /// disk, and the original's segment is deleted only once the switch is durable, so
    /// recovery never needs one; and restoring from it could bring back a message whose
    /// removal was made durable before the copy was written.
    pub copy: bool,
}

impl Envelope {
    /// First byte of an envelope (a record without one starts with its format version, 1).
    pub const TAG: u8 = b'I';

    /// Encodes the envelope of an original record (varints; priority and TTL only when
    /// set).
    pub fn encode(queues: &[u64], seq: u64, m: &Meta) -> Vec<u8> {
        Self::encode_as(queues, seq, m, false)
    }

    /// Encodes an envelope, of a compaction copy if `copy`.
    pub fn encode_as(queues: &[u64], seq: u64, m: &Meta, copy: bool) -> Vec<u8> {
        let mut v = Vec::with_capacity(16 + 4 * queues.len());
        v.push(Self::TAG);
        put_varint(&mut v, queues.len() as u64);
        for q in queues {
            put_varint(&mut v, *q);
        }
        put_varint(&mut v, seq);
        let flags =
            u8::from(m.priority != 0) | (u8::from(m.ttl_ms.is_some()) << 1) | (u8::from(copy) << 2);
        v.push(flags);
        for x in [u64::from(m.size), u64::from(m.body_len), m.arrival_ms] {
            put_varint(&mut v, x);
        }
        if m.priority != 0 {
            v.push(m.priority);
        }
        if let Some(t) = m.ttl_ms {
            put_varint(&mut v, t);
        }
        v
    }

    /// Splits a record payload into its envelope and the message record. A payload
    /// without an envelope (written by an older broker) gives `None` and the whole payload;
    /// a damaged envelope gives `Err`.
    pub fn split(payload: &[u8]) -> Result<(Option<Envelope>, &[u8]), StoreError> {
        Self::parse(payload).ok_or_else(|| StoreError("damaged record envelope".into()))
    }

    fn parse(payload: &[u8]) -> Option<(Option<Envelope>, &[u8])> {
        if payload.first() != Some(&Self::TAG) {
            return Some((None, payload));
        }
        let mut rest = &payload[1..];
        let mut next = || {
            let (x, r) = get_varint(rest)?;
            rest = r;
            Some(x)
        };
        let n = next()?;
        if n > 65_536 {
            return None;
        }
        let mut queues = Vec::with_capacity(n as usize);
        for _ in 0..n {
            queues.push(next()?);
        }
        let seq = next()?;
        let (&flags, r) = rest.split_first()?;
        rest = r;
        let mut next = || {
            let (x, r) = get_varint(rest)?;
            rest = r;
            Some(x)
        };
        let (size, body_len, arrival_ms) = (next()?, next()?, next()?);
        let priority = if flags & 1 != 0 {
            let (&p, r) = rest.split_first()?;
            rest = r;
            p
        } else {
            0
        };
        let ttl_ms = if flags & 2 != 0 {
            let (t, r) = get_varint(rest)?;
            rest = r;
            Some(t)
        } else {
            None
        };
        let meta = Meta {
            size: u32::try_from(size).ok()?,
            body_len: u32::try_from(body_len).ok()?,
            priority,
            arrival_ms,
            ttl_ms,
        };
        let copy = flags & 4 != 0;
        Some((
            Some(Envelope {
                queues,
                seq,
                meta,
                copy,
            }),
            rest,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_round_trip_compactly() {
        let at = Location {
            segment: 3,
            offset: 123_456,
            len: 1100,
        };
        let p = Pointer {
            at,
            meta: Meta {
                size: 99,
                body_len: 90,
                priority: 3,
                arrival_ms: 1234,
                ttl_ms: Some(500),
            },
            fanout: 1,
        };
        assert_eq!(Pointer::decode(&p.encode()), Some(p));
        let fanned = Pointer { fanout: 3, ..p };
        assert_eq!(Pointer::decode(&fanned.encode()), Some(fanned));
        assert_eq!(fanned.share(), (1100 + 8) / 3);
        let plain = Pointer {
            at,
            meta: Meta::default(),
            fanout: 1,
        };
        assert!(plain.encode().len() <= 14);
        assert_eq!(Pointer::decode(&plain.encode()), Some(plain));
        assert_eq!(Pointer::decode(b"\x01abc"), None);
    }

    #[test]
    fn envelopes_round_trip_and_leave_the_record() {
        let meta = Meta {
            size: 1100,
            body_len: 1024,
            priority: 7,
            arrival_ms: 1_700_000_000_000,
            ttl_ms: Some(60_000),
        };
        let mut payload = Envelope::encode(&[5, 9, 300], 1 << 40, &meta);
        payload.extend_from_slice(b"\x01record");
        let (env, record) = Envelope::split(&payload).unwrap();
        assert_eq!(
            env,
            Some(Envelope {
                queues: vec![5, 9, 300],
                seq: 1 << 40,
                meta,
                copy: false,
            })
        );
        let copy = Envelope::encode_as(&[5], 3, &meta, true);
        assert!(Envelope::split(&copy).unwrap().0.unwrap().copy);
        assert_eq!(record, b"\x01record");
        let plain = Envelope::encode(&[1], 2, &Meta::default());
        let (env, record) = Envelope::split(&plain).unwrap();
        assert_eq!(env.unwrap().meta, Meta::default());
        assert!(record.is_empty());
        // older records have no envelope
        assert_eq!(
            Envelope::split(b"\x01old").unwrap(),
            (None, &b"\x01old"[..])
        );
        // a cut envelope is an error, not a panic
        for cut in 1..payload.len().min(12) {
            let _ = Envelope::split(&payload[..cut]);
        }
        assert!(Envelope::split(&payload[..3]).is_err());
    }
}
