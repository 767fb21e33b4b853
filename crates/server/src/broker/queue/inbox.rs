//! A queue's inbox: where channels put published messages for the queue actor. One
//! mailbox message wakes the actor for however many publishes arrive before it runs, and
//! it takes them all in one turn (one clock read, one drain, one delivery batch per
//! channel) instead of one actor turn per message. Connections paused on a hot queue leave
//! a waiter here and are woken as soon as the actor has taken the inbox in.
//!
//! What a publish writes (the message list, the wake flag, the count and bytes that
//! backpressure reads) shares one cache line, which the lock brings to the publishing
//! core anyway: every other line a publish wrote would travel between cores once more
//! per message when publisher and queue run on different workers.

use crate::broker::messages::ResumeRead;
use actix::Recipient;
use broker_core::Message;
use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Published messages on their way into a queue, and who waits for room.
#[derive(Default)]
pub struct Inbox {
    /// What every publish writes, on one cache line.
    hot: CachePadded<Hot>,
    /// Connections (by id) that stopped reading because this queue was over its credit;
    /// each is registered once however often it re-checks.
    waiters: Mutex<Vec<(u64, Recipient<ResumeRead>)>>,
    /// Whether `waiters` is non-empty (read without the lock on every take).
    has_waiters: AtomicBool,
}

/// A publish that waits for a quorum queue's commit to be confirmed: the publishing
/// channel, its id as the queue's deduplication knows it, and the confirm sequence
/// number (0 without confirms: nothing waits, nothing is deduplicated).
#[derive(Clone)]
pub struct Ticket {
    /// Where the outcome goes.
    pub confirm: Recipient<super::QuorumConfirmed>,
    /// The publishing channel, as the queue's log names it.
    pub publisher: broker_core::quorum::ChanId,
    /// The publish's confirm sequence number.
    pub seq: u64,
}

/// What waits in the inbox: the messages, oldest first, and the tickets of those that
/// have one (by position in `msgs`).
#[derive(Default)]
struct Waiting {
    msgs: Vec<Arc<Message>>,
    tickets: Vec<(usize, Ticket)>,
}

/// The part of the inbox a publish writes.
#[derive(Default)]
struct Hot {
    /// The messages, oldest first.
    msgs: Mutex<Waiting>,
    /// A [`super::TakeInbox`] is in the actor's mailbox and has not run yet.
    wake_sent: AtomicBool,
    /// Messages in `msgs` (readable without the lock; written only under it).
    len: AtomicUsize,
    /// Their body bytes.
    bytes: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inbox {
    /// Adds a message. Returns true if the actor must be woken (no wake-up is pending).
    pub fn push(&self, msg: Arc<Message>) -> bool {
        self.push_ticketed(msg, None)
    }

    /// Adds a message with the ticket a quorum queue answers when its commit is done.
    /// Returns true if the actor must be woken.
    pub fn push_ticketed(&self, msg: Arc<Message>, ticket: Option<Ticket>) -> bool {
        let h = &*self.hot;
        {
            let body = msg.body.len() as u64;
            let mut w = lock(&h.msgs);
            if let Some(t) = ticket {
                let at = w.msgs.len();
                w.tickets.push((at, t));
            }
            w.msgs.push(msg);
            // plain stores: every change happens under the lock
            h.len.store(w.msgs.len(), Ordering::SeqCst);
            h.bytes
                .store(h.bytes.load(Ordering::Relaxed) + body, Ordering::Relaxed);
        }
        !h.wake_sent.swap(true, Ordering::AcqRel)
    }

    /// Takes every message (called by the actor). The wake flag is cleared first, so a
    /// push that races with the take either lands in this batch or sends a new wake-up.
    pub fn take(&self) -> Vec<Arc<Message>> {
        self.take_ticketed().0
    }

    /// Takes every message and the tickets among them (by position).
    pub fn take_ticketed(&self) -> (Vec<Arc<Message>>, Vec<(usize, Ticket)>) {
        let h = &*self.hot;
        h.wake_sent.store(false, Ordering::Release);
        let mut w = lock(&h.msgs);
        h.len.store(0, Ordering::SeqCst);
        h.bytes.store(0, Ordering::Relaxed);
        let w = std::mem::take(&mut *w);
        (w.msgs, w.tickets)
    }

    /// Messages waiting (backpressure and reject-publish read it on every publish).
    pub fn len(&self) -> usize {
        self.hot.len.load(Ordering::SeqCst)
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Body bytes waiting.
    pub fn bytes(&self) -> u64 {
        self.hot.bytes.load(Ordering::Relaxed)
    }

    /// Registers a paused connection, to be woken by the next [`Inbox::wake_waiters`].
    pub fn wait(&self, conn: u64, r: Recipient<ResumeRead>) {
        let mut w = lock(&self.waiters);
        if !w.iter().any(|(id, _)| *id == conn) {
            w.push((conn, r));
        }
        self.has_waiters.store(true, Ordering::SeqCst);
    }

    /// Wakes every paused connection (after the actor has taken messages in).
    pub fn wake_waiters(&self) {
        if !self.has_waiters.load(Ordering::SeqCst) {
            return;
        }
        let waiters = {
            let mut w = lock(&self.waiters);
            self.has_waiters.store(false, Ordering::SeqCst);
            std::mem::take(&mut *w)
        };
        for (_, w) in waiters {
            w.do_send(ResumeRead);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(n: u8) -> Arc<Message> {
        Arc::new(Message {
            exchange: "".into(),
            routing_key: "q".into(),
            properties: Default::default(),
            raw_properties: Bytes::from_static(&[0, 0]),
            body: Bytes::from(vec![n]),
            persist_id: None,
            arrival_ms: 0,
        })
    }

    #[test]
    fn one_wake_up_per_batch_and_order_kept() {
        let inbox = Inbox::default();
        assert!(inbox.push(msg(1)), "the first push wakes the actor");
        assert!(!inbox.push(msg(2)), "a wake-up is already on its way");
        let batch = inbox.take();
        assert_eq!(
            batch.iter().map(|m| m.body[0]).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(inbox.take().is_empty());
        assert!(inbox.push(msg(3)), "after a take the next push wakes again");
    }
}
