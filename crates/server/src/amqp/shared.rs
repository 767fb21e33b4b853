//! State a connection shares with its channels. They all live on the same worker thread,
//! so this is `Rc` and `Cell`, not locks: channels append frames to one write buffer,
//! which the connection flushes in batches, and leave notes (hot queues, deferred credit)
//! that the connection acts on before it reads more from the socket.

use crate::broker::flow::ConsumerGate;
use crate::broker::queue::QueueEntry;
use broker_wire::encode;
use broker_wire::protocol::AMQPClass;
use bytes::{Bytes, BytesMut};
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::sync::Arc;

/// Above this many buffered output bytes the connection stops reading from its socket and
/// channels hold back delivery credit, so a client that does not read cannot make the
/// broker buffer without limit.
pub const OUT_HIGH: usize = 256 << 10;
/// Below this, held-back credit is released.
pub const OUT_LOW: usize = 128 << 10;
/// A write buffer's first capacity.
pub const OUT_INITIAL: usize = 32 << 10;
/// Capacity an empty write buffer may keep after a write; past it, it starts over at
/// [`OUT_INITIAL`].
pub const OUT_KEEP: usize = 256 << 10;
/// Commands a connection may have handed to its channels and not yet seen processed
/// before it stops reading.
pub const MAX_PENDING_COMMANDS: usize = 512;
/// Queue copies the commands a connection has handed to its channels may make: a
/// publisher whose messages each go to many queues may have fewer commands pending
/// (down to [`MIN_PENDING_COMMANDS`]), so one publisher fanning out to a thousand queues
/// cannot put half a million messages on their way before pacing can see them.
pub const MAX_PENDING_ROUTES: usize = 16_384;
/// Commands a connection may always have pending, whatever its fanout.
pub const MIN_PENDING_COMMANDS: usize = 4;
/// Bytes a connection with a fanout of [`FANOUT_FULL_READ`] reads at once; with a
/// larger fanout it reads proportionally less (at least [`MIN_READ`]), as each byte read
/// becomes that many queue copies. Up to that fanout, a read takes what the buffer has
/// room for.
pub const MAX_READ: usize = 64 << 10;
/// Fanout up to which a connection reads as much as its buffer has room for.
pub const FANOUT_FULL_READ: usize = 32;
/// The smallest read.
pub const MIN_READ: usize = 4 << 10;

/// Queues this connection published to that were hot, each once. A publisher fanning out
/// to a thousand paced queues has a thousand of them: finding one in a list at every
/// publish was a million comparisons per message.
#[derive(Default)]
pub struct HotQueues {
    /// In the order they became hot.
    list: Vec<Arc<QueueEntry>>,
    /// Their addresses (each is held in `list`, so no address is reused meanwhile).
    seen: HashSet<usize>,
}

impl HotQueues {
    /// Adds a queue unless it is already there.
    pub fn add(&mut self, q: &Arc<QueueEntry>) {
        if self.seen.insert(Arc::as_ptr(q) as usize) {
            self.list.push(q.clone());
        }
    }

    /// Keeps the queues for which `keep` is true.
    pub fn retain(&mut self, keep: impl FnMut(&Arc<QueueEntry>) -> bool) {
        let before = self.list.len();
        self.list.retain(keep);
        if self.list.len() != before {
            self.seen = self.list.iter().map(|q| Arc::as_ptr(q) as usize).collect();
        }
    }

    /// Forgets them all.
    pub fn clear(&mut self) {
        self.list.clear();
        self.seen.clear();
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The queues.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<QueueEntry>> {
        self.list.iter()
    }
}

/// Delivery credit held back: the consumer's gate, its queue (woken when the credit
/// goes back), and how many units.
pub type Deferred = (Arc<ConsumerGate>, Arc<QueueEntry>, u32);

/// Per-connection state shared with its channels (same thread only).
pub struct ConnShared {
    /// The connection's number.
    pub id: u64,
    /// Frames waiting to be written.
    pub out: RefCell<BytesMut>,
    /// A flush message is already on its way to the connection.
    pub flush_requested: Cell<bool>,
    /// Commands forwarded to channels and not processed yet.
    pub pending_commands: Cell<usize>,
    /// The connection paused reading because its channels were behind, and waits to be
    /// woken (channels send it `ResumeRead` once they are back under half of
    /// [`MAX_PENDING_COMMANDS`]).
    pub read_paused: Cell<bool>,
    /// Queues this connection published to that were over their credit or paced.
    pub hot: RefCell<HotQueues>,
    /// Queues the channels' last routed publish went to (at least 1): it scales the
    /// commands the connection may have pending and how much it reads at once.
    pub fanout: Cell<usize>,
    /// Delivery credit held back while the write buffer was full.
    pub deferred: RefCell<Vec<Deferred>>,
    /// Deliveries of queues of other nodes written while the buffer was full: their
    /// home is answered once it drains (`broker/remote_consume.rs`).
    pub deferred_remote: RefCell<Vec<tokio::sync::oneshot::Sender<()>>>,
    /// Whether any channel published (memory alarms only block publishers).
    pub published: Cell<bool>,
    /// Negotiated frame_max, for splitting bodies.
    pub frame_max: Cell<u32>,
    /// The authenticated user, checked against a published message's user_id.
    pub user: RefCell<String>,
}

impl ConnShared {
    /// Fresh state for connection `id`.
    pub fn new(id: u64, frame_max: u32) -> Self {
        Self {
            id,
            out: RefCell::new(BytesMut::with_capacity(OUT_INITIAL)),
            flush_requested: Cell::new(false),
            pending_commands: Cell::new(0),
            read_paused: Cell::new(false),
            hot: RefCell::new(HotQueues::default()),
            fanout: Cell::new(1),
            deferred: RefCell::new(Vec::new()),
            deferred_remote: RefCell::new(Vec::new()),
            published: Cell::new(false),
            frame_max: Cell::new(frame_max),
            user: RefCell::new(String::new()),
        }
    }

    /// Appends a method frame.
    pub fn method(&self, channel: u16, m: &AMQPClass) {
        encode::method(&mut self.out.borrow_mut(), channel, m);
    }

    /// Bytes waiting to be written.
    pub fn out_len(&self) -> usize {
        self.out.borrow().len()
    }

    /// Commands the connection may have handed to its channels and not yet seen
    /// processed: [`MAX_PENDING_COMMANDS`], fewer for a publisher with a large fanout.
    pub fn pending_limit(&self) -> usize {
        (MAX_PENDING_ROUTES / self.fanout.get().max(1))
            .clamp(MIN_PENDING_COMMANDS, MAX_PENDING_COMMANDS)
    }

    /// Bytes to read at once: no limit, but for a publisher with a large fanout.
    pub fn read_limit(&self) -> usize {
        let f = self.fanout.get().max(1);
        if f <= FANOUT_FULL_READ {
            usize::MAX
        } else {
            (MAX_READ * FANOUT_FULL_READ / f).max(MIN_READ)
        }
    }

    /// Takes what is buffered, for a write. A buffer that grew past [`OUT_KEEP`] is
    /// handed over whole and the next one starts at [`OUT_INITIAL`]: splitting it
    /// instead keeps the rest of its allocation, and the capacity it once needed, for
    /// the next batch, so a thousand consumer connections that each buffered a megabyte
    /// once held a gigabyte between them (a fanout to 1,000 slow consumers: 1.3 GB of
    /// RSS, 82% of it in write buffers).
    pub fn take_out(&self) -> Bytes {
        let mut out = self.out.borrow_mut();
        if out.capacity() > OUT_KEEP {
            std::mem::replace(&mut *out, BytesMut::with_capacity(OUT_INITIAL)).freeze()
        } else {
            out.split().freeze()
        }
    }

    /// After a write: an empty write buffer that grew large gives its memory back.
    pub fn shrink_out(&self) {
        let mut out = self.out.borrow_mut();
        if out.is_empty() && out.capacity() > OUT_KEEP {
            *out = BytesMut::with_capacity(OUT_INITIAL);
        }
    }

    /// Releases held-back delivery credit once the buffer has drained.
    pub fn release_deferred(&self) {
        if self.out_len() >= OUT_LOW {
            return;
        }
        for done in std::mem::take(&mut *self.deferred_remote.borrow_mut()) {
            let _ = done.send(());
        }
        let held = std::mem::take(&mut *self.deferred.borrow_mut());
        for (gate, queue, units) in held {
            if gate.written_n(units) {
                queue.kick();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_buffer_that_grew_large_is_not_kept_for_the_next_batch() {
        let s = ConnShared::new(1, 131_072);
        s.out.borrow_mut().extend_from_slice(&vec![1u8; 1 << 20]);
        let data = s.take_out();
        assert_eq!(data.len(), 1 << 20);
        // split() would leave the buffer as a view of the rest of the same allocation,
        // which keeps the whole megabyte alive after the write is done
        let end_of_data = data.as_ptr() as usize + data.len();
        assert_ne!(
            s.out.borrow().as_ptr() as usize,
            end_of_data,
            "the next batch must not live in the large allocation"
        );
        assert!(s.out.borrow().capacity() <= OUT_INITIAL);
        drop(data);
        // small batches reuse their buffer
        s.out.borrow_mut().extend_from_slice(&[2u8; 100]);
        let small = s.take_out();
        assert_eq!(&small[..], &[2u8; 100][..]);
        assert_eq!(
            s.out.borrow().as_ptr() as usize,
            small.as_ptr() as usize + small.len(),
            "a small buffer is split, not replaced"
        );
    }

    #[test]
    fn a_large_fanout_narrows_pending_commands_and_reads() {
        let s = ConnShared::new(1, 131_072);
        assert_eq!(s.pending_limit(), MAX_PENDING_COMMANDS);
        assert_eq!(s.read_limit(), usize::MAX);
        s.fanout.set(32);
        assert_eq!(s.pending_limit(), MAX_PENDING_COMMANDS);
        assert_eq!(s.read_limit(), usize::MAX);
        s.fanout.set(64);
        assert_eq!(s.read_limit(), MAX_READ / 2);
        s.fanout.set(1000);
        assert_eq!(s.pending_limit(), 16);
        assert_eq!(s.read_limit(), MIN_READ);
        s.fanout.set(1_000_000);
        assert_eq!(s.pending_limit(), MIN_PENDING_COMMANDS);
    }
}
