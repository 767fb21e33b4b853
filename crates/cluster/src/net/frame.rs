//! Frames between cluster nodes: `len u32 | kind u8 | group u64 | corr u64 | payload`
//! (big-endian; `len` counts everything after itself). One header for every use (Raft
//! RPCs name their group, app services their service id, replies their request's
//! correlation id) keeps the reader a single loop. Payloads come out as `Bytes` split off
//! the read buffer, so a body is copied once, from the kernel.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::GroupId;

/// Bytes of a frame's header: `len` (4), kind (1), group (8), corr (8).
pub const HEADER_LEN: usize = 21;

/// What a frame carries; requests name a group or a service in `group`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Raft `append_entries` (heartbeats are the ones without entries).
    Append = 1,
    /// Raft `vote`.
    Vote = 2,
    /// Raft `install_snapshot` (one chunk).
    Snapshot = 3,
    /// An app-service request that expects a reply.
    Call = 4,
    /// A one-way app-service message.
    Send = 5,
    /// The answer to the request with the same `corr`.
    Reply = 6,
    /// The request with the same `corr` failed on the receiver (first payload byte: a
    /// [`ReplyError`] code, then a UTF-8 text).
    ReplyErr = 7,
    /// Nothing: written by a connection's writer when it had nothing else to write for
    /// the heartbeat interval, so the reader at the other end can tell a quiet peer from
    /// a frozen or cut-off one (no payload, group and corr 0).
    Heartbeat = 8,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Append,
            2 => Kind::Vote,
            3 => Kind::Snapshot,
            4 => Kind::Call,
            5 => Kind::Send,
            6 => Kind::Reply,
            7 => Kind::ReplyErr,
            8 => Kind::Heartbeat,
            _ => return None,
        })
    }
}

/// Why a receiver could not answer a request (the code of a `ReplyErr` frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ReplyError {
    /// No Raft group with this id on the receiver (not created yet, or removed).
    UnknownGroup = 1,
    /// No handler registered for this service id.
    UnknownService = 2,
    /// The handler failed (undecodable request, or its own error).
    Failed = 3,
}

impl ReplyError {
    /// The code of a `ReplyErr` payload's first byte (unknown codes read as `Failed`).
    pub fn from_u8(b: u8) -> ReplyError {
        match b {
            1 => ReplyError::UnknownGroup,
            2 => ReplyError::UnknownService,
            _ => ReplyError::Failed,
        }
    }
}

/// One decoded frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// What it carries.
    pub kind: Kind,
    /// The Raft group or the app service.
    pub group: GroupId,
    /// The correlation id (0 for one-way frames).
    pub corr: u64,
    /// The body, shared with the read buffer's allocation.
    pub payload: Bytes,
}

/// Why the byte stream cannot be read as frames: the connection is closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The peer announced a frame above this node's limit (`max_frame`).
    #[error("frame of {size} bytes is above the limit of {max}")]
    TooLarge {
        /// The announced payload size.
        size: usize,
        /// This node's limit.
        max: usize,
    },
    /// A length shorter than a header, or a kind this version does not know.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
}

/// The header of a frame with `payload_len` bytes of payload.
pub fn header(kind: Kind, group: GroupId, corr: u64, payload_len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    let mut w = &mut h[..];
    // A payload above u32::MAX never reaches here: senders check `max_frame` first.
    w.put_u32((payload_len + HEADER_LEN - 4) as u32);
    w.put_u8(kind as u8);
    w.put_u64(group);
    w.put_u64(corr);
    h
}

/// Takes the next whole frame off the front of `buf`, or `None` when more bytes are
/// needed (then `buf` has room reserved for the rest of the frame, so the next read can
/// take it whole). A frame whose payload is above `max` is refused before any of it is
/// buffered.
pub fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len < HEADER_LEN - 4 {
        return Err(FrameError::Malformed("length shorter than a header"));
    }
    let size = len - (HEADER_LEN - 4);
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let mut f = buf.split_to(len);
    let kind = Kind::from_u8(f.get_u8()).ok_or(FrameError::Malformed("unknown kind"))?;
    let group = f.get_u64();
    let corr = f.get_u64();
    Ok(Some(Frame {
        kind,
        group,
        corr,
        payload: f.freeze(),
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails by panicking
mod tests {
    use super::*;

    fn encoded(kind: Kind, group: u64, corr: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = header(kind, group, corr, payload.len()).to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn round_trip_in_pieces() {
        let mut wire = encoded(Kind::Call, 7, 42, b"hello");
        wire.extend(encoded(Kind::Reply, 0, 43, b""));
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire {
            buf.put_u8(b);
            while let Some(f) = decode(&mut buf, 100).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].kind, got[0].group, got[0].corr),
            (Kind::Call, 7, 42)
        );
        assert_eq!(&got[0].payload[..], b"hello");
        assert_eq!(
            (got[1].kind, got[1].corr, got[1].payload.len()),
            (Kind::Reply, 43, 0)
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn refuses_oversized_and_malformed_frames_from_the_header_alone() {
        let wire = encoded(Kind::Send, 1, 0, &[0u8; 11]);
        let mut buf = BytesMut::from(&wire[..4]);
        assert_eq!(
            decode(&mut buf, 10).unwrap_err(),
            FrameError::TooLarge { size: 11, max: 10 }
        );
        let mut bad = BytesMut::from(&encoded(Kind::Send, 1, 0, b"x")[..]);
        bad[4] = 99;
        assert_eq!(
            decode(&mut bad, 10).unwrap_err(),
            FrameError::Malformed("unknown kind")
        );
        let mut short = BytesMut::from(&[0u8, 0, 0, 3][..]);
        assert!(decode(&mut short, 10).is_err());
    }
}
