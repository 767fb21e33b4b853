//! A durable queue and the store: loading its messages at start or after a restart of
//! its actor, and reading paged-out bodies back.

use super::PAGE_WINDOW;
use broker_core::message::{Meta, Slot};
use broker_core::queue::Entry;
use broker_core::store::MessageStore;
use broker_core::Message;
use std::sync::Arc;

/// A stored message as it goes back into its queue.
#[derive(Debug)]
pub struct Recovered {
    /// In memory, or paged (past the window).
    pub slot: Slot,
    /// Priority, size and expiry data from the index.
    pub meta: Meta,
    /// Whether the queue had delivered it before.
    pub delivered: bool,
}

/// Reads a durable queue's stored messages: the head of the queue into memory, past the
/// window only store ids and sizes (bodies are read back as consumers catch up). Logs
/// each message lost to a damaged record, and returns the messages with their
/// delivered flag, and how many were lost.
pub fn load_stored(
    store: &dyn MessageStore,
    qid: u64,
    queue: &str,
    vhost: &str,
) -> (Vec<Recovered>, usize) {
    let mut batch = Vec::new();
    let mut damaged = 0usize;
    let mut unconfirmed = 0usize;
    let mut gone: Vec<u64> = Vec::new();
    let res = store.for_each_in_queue(qid, PAGE_WINDOW, &mut |m| {
        let slot = match m.record {
            None => Slot::Paged {
                persist_id: m.seq,
                size: m.meta.size,
            },
            Some(Ok(record)) => match broker_core::store::decode_message(&record, m.seq) {
                Ok(mut msg) => {
                    msg.arrival_ms = m.meta.arrival_ms;
                    Slot::Loaded(Arc::new(msg))
                }
                Err(e) => {
                    damaged += 1;
                    gone.push(m.seq);
                    tracing::error!(queue = %queue, seq = m.seq, "damaged message record lost: {e}");
                    return;
                }
            },
            // cut short by a crash before its fsync: it was never confirmed
            Some(Err(e)) if e.is_incomplete_write() => {
                unconfirmed += 1;
                gone.push(m.seq);
                tracing::debug!(queue = %queue, seq = m.seq, "unconfirmed message lost in a crash: {e}");
                return;
            }
            Some(Err(e)) => {
                damaged += 1;
                gone.push(m.seq);
                tracing::error!(queue = %queue, seq = m.seq, "message lost: {e}");
                return;
            }
        };
        batch.push(Recovered {
            slot,
            meta: m.meta,
            delivered: m.delivered,
        });
    });
    if let Err(e) = res {
        tracing::error!(
            queue,
            recovered = batch.len(),
            "cannot read all stored messages: {e}"
        );
    }
    if unconfirmed > 0 {
        tracing::warn!(
            queue = %queue,
            vhost = %vhost,
            dropped = unconfirmed,
            "messages that were never confirmed did not reach the disk before a crash: dropped"
        );
    }
    // reported once: their index entries go
    for seq in gone {
        if let Err(e) = store.remove(qid, seq) {
            tracing::warn!(queue = %queue, seq, "cannot remove a lost message's index entry: {e}");
        }
    }
    if damaged > 0 {
        tracing::error!(
            queue = %queue,
            vhost = %vhost,
            lost = damaged,
            recovered = batch.len(),
            "queue lost messages whose stored records are damaged or missing"
        );
    }
    (batch, damaged)
}

/// The message of an entry: its own if loaded, else read back from the store.
pub fn load_entry(store: &super::StoredAt, e: &Entry) -> Result<Arc<Message>, String> {
    match &e.msg {
        Slot::Loaded(m) => Ok(m.clone()),
        Slot::Paged { persist_id, .. } => page_in(store, *persist_id),
    }
}

/// Reads a paged-out message back from the store.
pub fn page_in(store: &super::StoredAt, persist_id: u64) -> Result<Arc<Message>, String> {
    let (s, qid) = store.as_ref().ok_or("the queue has no store")?;
    let record = s
        .get(*qid, persist_id)
        .map_err(|e| e.to_string())?
        .ok_or("the stored message is gone")?;
    broker_core::store::decode_message(&record, persist_id)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}
