//! The replicated state machine of a quorum queue, after RabbitMQ's `rabbit_fifo`:
//! [`QqState`] applies [`QqCmd`]s from the queue's Raft log and answers with a
//! [`QqResp`] and [`Effect`]s. Every replica applies the same commands in the same order
//! and must reach the same state and decide the same effects, so nothing here reads a
//! clock (each command carries its proposer's `ts_ms`), draws a random number, or
//! iterates a hash map where the order reaches an outcome. Only the leader's node
//! carries the effects out (deliveries, dead letters, nacks); followers drop them.
//!
//! The queue's rules (ordering, round robin, consumer priorities, single active
//! consumer, requeue position, delivery limit, TTL at the head, drop-head) are the
//! classic queue's [`QueueState`], driven with a deterministic replicated credit per
//! consumer (its prefetch, [`UNLIMITED_PREFETCH`] when 0) instead of local flow state.
//! What RabbitMQ's quorum queues do differently is here: a client's requeue goes to the
//! back, reject-publish blocks once the queue is over its limit (until it is below 80%
//! of it), publishes are deduplicated by publisher and sequence number.
//!
//! `ChannelKey` has no node, so consumers and channels are named here by
//! [`ChanId`] (node, connection, channel) and mapped to a ChannelKey of this queue's own
//! numbering.

mod snapshot;
mod state;
#[cfg(test)]
mod tests;

pub use snapshot::SnapshotError;
pub use state::QqState;

use crate::deadletter::Reason;
use crate::message::Message;
use crate::queue::MsgId;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Credit of a consumer whose prefetch is 0 (unlimited): a fixed bound, so one command
/// never hands out a whole queue.
pub const UNLIMITED_PREFETCH: u32 = 2000;

/// One channel on one node of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChanId {
    /// The node (Raft node id).
    pub node: u64,
    /// The connection, unique on that node while it runs.
    pub connection: u64,
    /// The channel number.
    pub channel: u16,
}

/// A consumer: its channel and tag (basic.get uses the empty tag).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConsumerId {
    /// Its channel.
    pub chan: ChanId,
    /// Its tag.
    pub tag: String,
}

/// A publishing channel, the key of publish deduplication.
pub type PublisherId = ChanId;

/// One published message in an [`QqOp::Enqueue`] batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish {
    /// Who published it.
    pub publisher: PublisherId,
    /// The publisher's sequence number: a (publisher, seq) applied before is dropped.
    pub seq: u64,
    /// The message, as `store::encode_message` writes it.
    #[serde(with = "serde_bytes")]
    pub message: Vec<u8>,
}

/// What a [`QqOp::Checkout`] asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Checkout {
    /// basic.consume.
    Consume {
        /// basic.qos prefetch count (0 = unlimited, bounded by [`UNLIMITED_PREFETCH`]).
        prefetch: u32,
        /// Deliveries need no ack.
        no_ack: bool,
        /// `x-priority`.
        priority: i64,
        /// The exclusive flag (RabbitMQ 3.10's quorum queues ignore it; kept for the
        /// record).
        exclusive: bool,
    },
    /// basic.cancel.
    Cancel,
    /// basic.get.
    Get {
        /// Whether the message is settled at once.
        no_ack: bool,
    },
}

/// Where a [`QqOp::Down`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Down {
    /// A channel (or its connection) closed.
    Channel(ChanId),
    /// A node was lost: every channel on it.
    Node(u64),
}

/// The settings of a quorum queue that its state machine acts on: the declared
/// arguments combined with policies, replicated as one value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QqConfig {
    /// `x-message-ttl`.
    pub message_ttl: Option<u64>,
    /// `x-expires`.
    pub expires: Option<u64>,
    /// `x-max-length`.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow` reject-publish (else drop-head).
    pub reject_publish: bool,
    /// `x-single-active-consumer`.
    pub single_active_consumer: bool,
    /// `x-delivery-limit` (`None`: no limit).
    pub delivery_limit: Option<u64>,
    /// Delayed retry (`x-delayed-retry-*`). Absent in snapshots written before it.
    #[serde(default)]
    pub retry: Option<crate::queue::retry::RetryPolicy>,
}

/// [`QqConfig`] as log entries written before delayed retry hold it
/// ([`QqOp::UpdateConfig`]): the log's encoding has no optional fields, so a field
/// added to the config is a new command ([`QqOp::Configure`]) and old entries still
/// read as they were written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QqConfigV1 {
    /// `x-message-ttl`.
    pub message_ttl: Option<u64>,
    /// `x-expires`.
    pub expires: Option<u64>,
    /// `x-max-length`.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow` reject-publish (else drop-head).
    pub reject_publish: bool,
    /// `x-single-active-consumer`.
    pub single_active_consumer: bool,
    /// `x-delivery-limit` (`None`: no limit).
    pub delivery_limit: Option<u64>,
}

impl From<&QqConfigV1> for QqConfig {
    fn from(c: &QqConfigV1) -> QqConfig {
        QqConfig {
            message_ttl: c.message_ttl,
            expires: c.expires,
            max_length: c.max_length,
            max_length_bytes: c.max_length_bytes,
            reject_publish: c.reject_publish,
            single_active_consumer: c.single_active_consumer,
            delivery_limit: c.delivery_limit,
            retry: None,
        }
    }
}

impl QqConfig {
    /// The settings of these checked arguments.
    pub fn from_args(a: &crate::args::QueueArgs) -> QqConfig {
        QqConfig {
            message_ttl: a.message_ttl,
            expires: a.expires,
            max_length: a.max_length,
            max_length_bytes: a.max_length_bytes,
            reject_publish: a.overflow == crate::args::Overflow::RejectPublish,
            single_active_consumer: a.single_active_consumer,
            delivery_limit: a.delivery_limit,
            retry: a.retry,
        }
    }

    /// The arguments the inner queue state runs with: length limits only with
    /// drop-head (reject-publish is decided by [`QqState`] itself, as RabbitMQ does).
    fn queue_args(&self) -> crate::args::QueueArgs {
        let (max_length, max_length_bytes) = if self.reject_publish {
            (None, None)
        } else {
            (self.max_length, self.max_length_bytes)
        };
        crate::args::QueueArgs {
            message_ttl: self.message_ttl,
            expires: self.expires,
            max_length,
            max_length_bytes,
            single_active_consumer: self.single_active_consumer,
            delivery_limit: self.delivery_limit,
            retry: self.retry,
            ..Default::default()
        }
    }
}

/// One command of a quorum queue's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QqCmd {
    /// The proposing leader's clock (ms since the epoch): TTLs and x-expires use it.
    pub ts_ms: u64,
    /// What to do.
    pub op: QqOp,
}

/// The commands, after rabbit_fifo's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QqOp {
    /// Publishes gathered by the leader in one round.
    Enqueue {
        /// The messages, in publish order.
        batch: Vec<Publish>,
    },
    /// basic.consume, basic.cancel or basic.get.
    Checkout {
        /// Who.
        consumer: ConsumerId,
        /// What.
        spec: Checkout,
    },
    /// More credit for a no-ack consumer (the leader grants it as it writes deliveries
    /// out; consumers with acks get credit back by settling).
    Credit {
        /// Who.
        consumer: ConsumerId,
        /// How many more deliveries.
        credit: u32,
    },
    /// basic.ack: these messages delivered on `channel` are done.
    Settle {
        /// The channel they were delivered on.
        channel: ChanId,
        /// Their ids.
        ids: Vec<MsgId>,
    },
    /// nack/reject with requeue, basic.recover: back to the queue's end, delivery count
    /// + 1 (over the delivery limit they are dead-lettered, reason `delivery_limit`).
    Return {
        /// The channel they were delivered on.
        channel: ChanId,
        /// Their ids, in the order they return.
        ids: Vec<MsgId>,
    },
    /// nack/reject without requeue: dead-lettered, reason `rejected`.
    Discard {
        /// The channel they were delivered on.
        channel: ChanId,
        /// Their ids.
        ids: Vec<MsgId>,
    },
    /// A channel or a node is gone: its consumers go, its deliveries come back to their
    /// place (delivery count + 1).
    Down(Down),
    /// Time passed: TTL at the head, x-expires.
    Tick,
    /// queue.purge.
    Purge,
    /// A policy changed the settings (as written before delayed retry: proposers now
    /// send [`QqOp::Configure`]).
    UpdateConfig(QqConfigV1),
    /// A new leader: every delivery comes back (redelivered, count unchanged) and every
    /// consumer is cancelled.
    LeaderChanged,
    /// Several commands of one proposer round in one log entry (one Raft round and one
    /// fsync for all of them), applied in order exactly as if each were an entry of its
    /// own at the batch's time. Answered with [`QqResp::Batch`], one answer per command.
    /// A batch inside a batch is not applied (answered `Ok`): proposers never nest them.
    Batch(Vec<QqOp>),
    /// The queue's settings (its arguments combined with policies) changed.
    Configure(QqConfig),
    /// Deliveries the broker hands back, not a client (they never reached their
    /// consumer, or the management API's move could not place them): back to their
    /// place, not counted against the delivery limit, no retry back-off.
    GiveBack {
        /// The channel they were delivered on.
        channel: ChanId,
        /// Their ids.
        ids: Vec<MsgId>,
    },
}

/// A message basic.get took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Got {
    /// Its id (to settle it).
    pub msg_id: MsgId,
    /// The message, encoded as in the log.
    #[serde(with = "serde_bytes")]
    pub message: Vec<u8>,
    /// When it arrived (ms).
    pub arrival_ms: u64,
    /// Whether it was delivered before.
    pub redelivered: bool,
    /// `x-delivery-count` (RabbitMQ sets it on every basic.get, 0 included).
    pub delivery_count: u32,
    /// Messages left ready.
    pub remaining: u64,
}

/// The answer to a command, for the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QqResp {
    /// Done.
    Ok,
    /// basic.get's answer (`None`: empty).
    Got(Option<Got>),
    /// queue.purge's answer: messages dropped.
    Purged(u64),
    /// An `Enqueue` some of whose publishes were refused (reject-publish overflow, or a
    /// record that does not decode): their publishers and sequence numbers. In the
    /// answer, not only in the leader's effects, so a publisher on any member node
    /// gets its basic.nack from the answer of its forwarded proposal.
    Rejected(Vec<(PublisherId, Vec<u64>)>),
    /// The answers of a [`QqOp::Batch`], in its order.
    Batch(Vec<QqResp>),
}

/// Why a consumer was cancelled by the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// A new leader took over.
    LeaderChanged,
    /// The consumer's node was seen lost (`Down::Node`): if it still runs (its link
    /// came back), its client is told and can subscribe again.
    NodeDown,
}

/// What the leader's node carries out after a command.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Send a message to a consumer.
    Deliver {
        /// To whom.
        consumer: ConsumerId,
        /// The id to settle it by.
        msg_id: MsgId,
        /// The message.
        message: Arc<Message>,
        /// Whether it was delivered before.
        redelivered: bool,
        /// Returns so far; RabbitMQ 3.10 puts `x-delivery-count` on a consumer's
        /// delivery only when it is above 0.
        delivery_count: u32,
    },
    /// Publish a dead letter (at most once).
    DeadLetter {
        /// The message.
        message: Arc<Message>,
        /// Why it died.
        reason: Reason,
    },
    /// Nack these publishes (reject-publish overflow, or a record that does not decode).
    Rejected {
        /// The publishing channel.
        publisher: PublisherId,
        /// Its sequence numbers.
        seqs: Vec<u64>,
    },
    /// Tell a consumer it was cancelled (basic.cancel when it asked for it).
    ConsumerCancelled {
        /// Whom.
        consumer: ConsumerId,
        /// Why.
        reason: CancelReason,
    },
    /// x-expires passed with the queue unused: the leader deletes the queue.
    Expired,
}
