//! Publishes of other nodes to a quorum queue of which this node is a member
//! (docs/design/cluster.md §3, §6): a node that is no member of the queue's group
//! sends its publishes here in batches (`broker/queue/remote/outbox.rs`), as to the
//! home of a classic queue. Each message goes into the queue's inbox with a [`Ticket`],
//! so this member's shell proposes them to the group as its own clients' publishes
//! (forwarded to the leader when this node does not lead), and the batch is answered
//! once every ticket is: acked once the group committed the entry (a majority of
//! members fsynced it), nacked (reported refused) for what reject-publish refused or
//! what could not be committed. Nothing is confirmed before the commit.
//!
//! The tickets name one publisher per node, this one ([`PUBLISHER`]), with sequence
//! numbers that only grow, also across restarts (the larger of the last one + 1 and the
//! time in microseconds), and are taken in the order the messages enter the inbox (under
//! one lock), as the group's deduplication (a sequence number at or below the
//! publisher's last is a duplicate) requires.

use crate::broker::queue::{outcome_channel, QueueEntry, Ticket};
use crate::broker::runtime::Runtime;
use broker_core::quorum::ChanId;
use broker_core::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The connection number of the publisher that stands for other nodes' publishes in
/// this node's tickets (no client connection has it: theirs count up from 1, proxy
/// channels have the top bit and the node's id below it).
pub const PUBLISHER: u64 = u64::MAX;

/// The last sequence number handed out (the lock also orders the inbox pushes).
static LAST_SEQ: Mutex<u64> = Mutex::new(0);

/// Enqueues a batch of another node's messages into the local quorum queue `q`;
/// answers, once every one is committed or refused, the positions refused.
pub async fn take(rt: &Runtime, q: &Arc<QueueEntry>, msgs: Vec<Message>) -> Vec<u32> {
    let (confirm, mut rx) = outcome_channel(&rt.node.next_arbiter());
    let publisher = ChanId {
        node: rt.node.store.as_ref().map_or(0, |s| s.cluster.id),
        connection: PUBLISHER,
        channel: 0,
    };
    let mut at: HashMap<u64, u32> = HashMap::with_capacity(msgs.len());
    {
        let mut last = LAST_SEQ.lock().unwrap_or_else(|p| p.into_inner());
        for (i, mut msg) in msgs.into_iter().enumerate() {
            msg.persist_id = None;
            msg.arrival_ms = crate::broker::runtime::now_ms();
            let seq = (*last + 1).max(now_micros());
            *last = seq;
            at.insert(seq, i as u32);
            let ticket = Ticket {
                confirm: confirm.clone(),
                publisher,
                seq,
            };
            q.enqueue_ticketed(Arc::new(msg), Some(ticket));
        }
    }
    drop(confirm);
    let mut refused = Vec::new();
    while !at.is_empty() {
        // every ticket is answered, or dropped with the queue (the actor then stops)
        let Some(outcomes) = rx.recv().await else {
            break;
        };
        for (seq, ok) in outcomes {
            if let (Some(i), false) = (at.remove(&seq), ok) {
                refused.push(i);
            }
        }
    }
    // what was never answered was not confirmed
    refused.extend(at.into_values());
    refused.sort_unstable();
    refused
}

/// The time in microseconds (sequence numbers of a later run start above those of an
/// earlier one).
fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
