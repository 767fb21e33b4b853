//! One authenticated connection's two halves, used by both sides (the dialer's link and
//! the acceptor): the writer task with its two lanes, and the frame reader.
//!
//! The writer drains what is queued and writes it with one vectored write per round, the
//! control lane (votes, heartbeats, replies) first, so a heartbeat never waits behind a
//! snapshot. The bulk lane's bytes are bounded by the link's semaphore: each queued bulk
//! frame holds permits for its size until it is written.
//!
//! Liveness (docs/design/cluster.md §5): a writer with nothing to write for the
//! heartbeat interval writes a heartbeat frame, so a live peer is never silent for long;
//! the reader gives up on a peer from which no byte arrived for the link timeout while
//! it was waiting for one (time spent in a handler it awaits does not count: a slow
//! handler is this node's doing, not a sign that the peer is gone).

use std::io::{self, IoSlice};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::frame::{self, Frame, Kind, HEADER_LEN};

/// Frames written per round at most (two slices each: the kernel takes up to 1024).
const ROUND_FRAMES: usize = 256;
/// Bytes written per round at most, so the control lane gets a turn between bulk rounds.
const ROUND_BYTES: usize = 4 << 20;

/// Which queue a frame waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Small and urgent: votes, heartbeats, replies. Drained first, not bounded in bytes
    /// (its frames are small and each answers or asks one RPC in flight).
    Control,
    /// Appends with entries, snapshots, app data: bounded in bytes per peer.
    Bulk,
}

/// A frame waiting to be written.
pub struct Out {
    head: [u8; HEADER_LEN],
    payload: Bytes,
    /// The bulk lane's permits for this frame, given back when it is written (or dropped).
    _permit: Option<OwnedSemaphorePermit>,
}

impl Out {
    /// A frame with its header, holding `permit` until written.
    pub fn new(
        head: [u8; HEADER_LEN],
        payload: Bytes,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Out {
        Out {
            head,
            payload,
            _permit: permit,
        }
    }

    fn len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }
}

/// The sending side of a connection's lanes; cloned by everyone who writes to it.
#[derive(Clone)]
pub struct Lanes {
    control: mpsc::UnboundedSender<Out>,
    bulk: mpsc::UnboundedSender<Out>,
}

/// The writer's side of the lanes.
pub struct LaneRx {
    control: mpsc::UnboundedReceiver<Out>,
    bulk: mpsc::UnboundedReceiver<Out>,
}

/// A new pair of lanes for one connection.
pub fn lanes() -> (Lanes, LaneRx) {
    let (ct, cr) = mpsc::unbounded_channel();
    let (bt, br) = mpsc::unbounded_channel();
    (
        Lanes {
            control: ct,
            bulk: bt,
        },
        LaneRx {
            control: cr,
            bulk: br,
        },
    )
}

impl Lanes {
    /// Queues `out`; false when the connection's writer is gone.
    pub fn push(&self, lane: Lane, out: Out) -> bool {
        match lane {
            Lane::Control => self.control.send(out).is_ok(),
            Lane::Bulk => self.bulk.send(out).is_ok(),
        }
    }
}

/// Writes what the lanes bring until they close (every `Lanes` dropped) or the socket
/// fails, and a heartbeat frame whenever nothing was written for `heartbeat`.
pub async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: LaneRx,
    heartbeat: Duration,
) -> io::Result<()> {
    let mut round: Vec<Out> = Vec::with_capacity(ROUND_FRAMES);
    loop {
        let first = tokio::select! {
            biased;
            Some(o) = rx.control.recv() => o,
            Some(o) = rx.bulk.recv() => o,
            () = tokio::time::sleep(heartbeat) => {
                Out::new(frame::header(Kind::Heartbeat, 0, 0, 0), bytes::Bytes::new(), None)
            }
            else => return Ok(()),
        };
        let mut bytes = first.len();
        round.push(first);
        while round.len() < ROUND_FRAMES && bytes < ROUND_BYTES {
            let next = match rx.control.try_recv() {
                Ok(o) => o,
                Err(_) => match rx.bulk.try_recv() {
                    Ok(o) => o,
                    Err(_) => break,
                },
            };
            bytes += next.len();
            round.push(next);
        }
        write_round(&mut w, &round).await?;
        round.clear();
    }
}

async fn write_round<W: AsyncWrite + Unpin>(w: &mut W, round: &[Out]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(round.len() * 2);
    for o in round {
        slices.push(IoSlice::new(&o.head));
        if !o.payload.is_empty() {
            slices.push(IoSlice::new(&o.payload));
        }
    }
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = w.write_vectored(rest).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    w.flush().await
}

/// Reads frames off one connection, refusing any above `max` payload bytes.
pub struct FrameReader<R> {
    r: R,
    buf: BytesMut,
    max: usize,
    /// How long a read may wait for the peer's next byte (the link timeout).
    idle: Duration,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader over `r` for frames of at most `max` payload bytes, from a peer that
    /// sends something (a heartbeat at least) more often than every `idle`.
    pub fn new(r: R, max: usize, idle: Duration) -> Self {
        FrameReader {
            r,
            buf: BytesMut::with_capacity(64 * 1024),
            max,
            idle,
        }
    }

    /// The next frame; `None` at a clean end of stream. An oversized or malformed frame
    /// is an `InvalidData` error, a peer silent for the idle time a `TimedOut` one: the
    /// caller closes the connection.
    pub async fn next(&mut self) -> io::Result<Option<Frame>> {
        loop {
            match frame::decode(&mut self.buf, self.max) {
                Ok(Some(f)) => return Ok(Some(f)),
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            let read = tokio::time::timeout(self.idle, self.r.read_buf(&mut self.buf)).await;
            let n = match read {
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("nothing received for {:?}", self.idle),
                    ))
                }
                // TLS reports a close without its close_notify (a peer that exited or was
                // killed) as an error; between two frames it is a clean end all the
                // same: the framing, not TLS, tells a cut frame.
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof && self.buf.is_empty() => {
                    return Ok(None)
                }
                Ok(r) => r?,
            };
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }
}
