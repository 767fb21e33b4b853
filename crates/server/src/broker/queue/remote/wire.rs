//! What two nodes say to each other about a classic queue that lives on one of them
//! (docs/design/cluster.md §6): the services the queue's home node answers, and their
//! requests and replies (postcard; a publish batch carries its message records after
//! its head, so the home slices the bodies out of the frame without copying them).

use broker_cluster::net::ServiceId;
use broker_cluster::NodeId;
use broker_core::names::ChannelKey;
use broker_core::Message;
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Publishes to a queue of the called node: a [`PublishHead`] and the records; answered
/// with a [`PublishReply`] once they are enqueued (and fsynced, if persistent).
pub const PUBLISH_SERVICE: ServiceId = 0x5251_0000_0001;

/// Request/response operations on a queue of the called node ([`OpReq`], [`OpReply`]).
pub const OP_SERVICE: ServiceId = 0x5251_0000_0002;

/// One-way notes to a queue of the called node ([`Note`]): in order per sender.
pub const NOTE_SERVICE: ServiceId = 0x5251_0000_0003;

/// Deliveries and cancels for consumers of the called node ([`ToConsumer`]), from the
/// queue's home; answered (empty) once the consumer's channel has written them, so the
/// home releases the consumer's credit only then.
pub const CONSUMER_SERVICE: ServiceId = 0x5251_0000_0004;

/// The head of a publish batch: the queue, and the length of each message record that
/// follows it (`broker_core::store::encode_message`).
#[derive(Debug, Serialize, Deserialize)]
pub struct PublishHead {
    /// The queue's vhost.
    pub vhost: String,
    /// The queue.
    pub queue: String,
    /// Each record's length, in order.
    pub lens: Vec<u32>,
}

/// The home's answer to a publish batch.
#[derive(Debug, Serialize, Deserialize)]
pub enum PublishReply {
    /// Enqueued (persistent ones fsynced), except those at these positions, which the
    /// queue refused (x-overflow reject-publish) or could not store: nacked.
    Taken {
        /// Positions in the batch of the refused messages.
        refused: Vec<u32>,
    },
    /// Nothing was taken (no such queue here, a store failure): every one is nacked.
    Failed(String),
}

/// A request to the queue's home.
#[derive(Debug, Serialize, Deserialize)]
pub enum OpReq {
    /// basic.get for the channel `key` of the asking node.
    Get {
        /// The queue's vhost.
        vhost: String,
        /// The queue.
        queue: String,
        /// The asking channel (the home makes its proxy key from it).
        connection: u64,
        /// Its channel number.
        channel: u16,
        /// Settled on delivery.
        no_ack: bool,
    },
    /// queue.purge.
    Purge {
        /// The queue's vhost.
        vhost: String,
        /// The queue.
        queue: String,
    },
    /// queue.delete's part in the queue (the record goes through the metadata group).
    Delete {
        /// The queue's vhost.
        vhost: String,
        /// The queue.
        queue: String,
        /// Refuse if it has consumers.
        if_unused: bool,
        /// Refuse if it has ready messages.
        if_empty: bool,
    },
    /// basic.consume for the channel of the asking node: the home adds a proxy consumer.
    Consume {
        /// The queue's vhost.
        vhost: String,
        /// The queue.
        queue: String,
        /// The consuming channel's connection on the asking node.
        connection: u64,
        /// Its channel number.
        channel: u16,
        /// The consumer tag.
        tag: String,
        /// Settled on delivery.
        no_ack: bool,
        /// Exclusive consumer.
        exclusive: bool,
        /// `x-priority`.
        priority: i64,
        /// The channel's per-consumer prefetch (0: none).
        prefetch: u32,
    },
    /// basic.cancel of a consumer added by [`OpReq::Consume`].
    Cancel {
        /// The queue's vhost.
        vhost: String,
        /// The queue.
        queue: String,
        /// The channel's connection on the asking node.
        connection: u64,
        /// Its channel number.
        channel: u16,
        /// The consumer tag.
        tag: String,
    },
    /// The counts queue.declare-ok reports.
    Stats {
        /// The queue's vhost.
        vhost: String,
        /// The queue.
        queue: String,
    },
    /// The counts the management API shows (`/api/queues` on a node that does not run
    /// the queue).
    Info {
        /// The queue's vhost.
        vhost: String,
        /// The queue.
        queue: String,
    },
    /// Copies of ready messages, the queue unchanged (the management API's browse).
    Peek {
        /// The queue's vhost.
        vhost: String,
        /// The queue.
        queue: String,
        /// Position of the first.
        offset: u64,
        /// How many at most.
        count: u32,
    },
}

/// The home's answer to an [`OpReq`].
#[derive(Debug, Serialize, Deserialize)]
pub enum OpReply {
    /// basic.get found nothing.
    Empty,
    /// basic.get's message.
    Got {
        /// Its id in the queue (what settles name).
        id: u64,
        /// Delivered before.
        redelivered: bool,
        /// Ready messages left.
        remaining: u32,
        /// The message record.
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
    /// Messages purged or deleted with the queue.
    Count(u32),
    /// Ready messages and consumers.
    Stats {
        /// Ready messages.
        ready: u32,
        /// Consumers.
        consumers: u32,
    },
    /// The management API's counts of a queue.
    Info(RemoteInfo),
    /// A browse's messages (their `id` is 0: nothing is delivered) and the ready count.
    Peeked {
        /// Ready messages in the queue.
        total: u64,
        /// The messages, in delivery order.
        items: Vec<Delivered>,
    },
    /// Refused, with the AMQP reply code and text the client gets.
    Failed {
        /// The reply code.
        code: u16,
        /// The text.
        text: String,
    },
}

/// A one-way note to the queue's home.
#[derive(Debug, Serialize, Deserialize)]
pub enum Note {
    /// basic.ack / nack / reject of messages got through a channel of the sender.
    Settle {
        /// The queue's vhost.
        vhost: String,
        /// The queue.
        queue: String,
        /// 0 ack, 1 requeue, 2 discard, 3 give back (not a client's return).
        kind: u8,
        /// The messages.
        ids: Vec<u64>,
    },
    /// A channel of the sender closed: its unacked messages come back.
    ChannelClosed {
        /// The queue's vhost.
        vhost: String,
        /// The queue.
        queue: String,
        /// The channel's connection on the sender.
        connection: u64,
        /// Its number.
        channel: u16,
    },
}

/// One delivery to a consumer of another node.
#[derive(Debug, Serialize, Deserialize)]
pub struct Delivered {
    /// Its id at the home (what settles name).
    pub id: u64,
    /// Delivered before.
    pub redelivered: bool,
    /// The message record.
    #[serde(with = "serde_bytes")]
    pub record: Vec<u8>,
}

/// What a queue's home tells the node of one of its consumers.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToConsumer {
    /// Deliveries, in the queue's order.
    Deliver {
        /// The queue's vhost.
        vhost: String,
        /// The queue.
        queue: String,
        /// The consumer's connection.
        connection: u64,
        /// Its channel.
        channel: u16,
        /// The consumer tag.
        tag: String,
        /// The messages.
        messages: Vec<Delivered>,
    },
    /// The queue cancelled the consumer (deleted, consumer timeout): basic.cancel.
    Cancel {
        /// The consumer's connection.
        connection: u64,
        /// Its channel.
        channel: u16,
        /// The consumer tag.
        tag: String,
    },
}

/// The key under which the home knows a channel of node `peer`: the top bit marks it
/// as remote (local connection numbers count up from 1), then 31 bits of the node's id
/// and the low 32 bits of its connection number, so no two nodes' channels collide.
pub fn proxy_key(peer: NodeId, connection: u64, channel: u16) -> ChannelKey {
    ChannelKey {
        connection: 1 << 63 | (peer & 0x7fff_ffff) << 32 | (connection & 0xffff_ffff),
        channel,
    }
}

/// A postcard encoding of a request, reply or note.
pub fn encode<T: Serialize>(v: &T) -> Result<Bytes, String> {
    postcard::to_allocvec(v)
        .map(Bytes::from)
        .map_err(|e| format!("unencodable remote queue message: {e}"))
}

/// Decodes a request, reply or note.
pub fn decode<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Result<T, String> {
    postcard::from_bytes(b).map_err(|e| format!("undecodable remote queue message: {e}"))
}

/// A publish batch: the head, then every record.
pub fn encode_publish(vhost: &str, queue: &str, msgs: &[Arc<Message>]) -> Result<Bytes, String> {
    let records: Vec<Vec<u8>> = msgs
        .iter()
        .map(|m| broker_core::store::encode_message(m))
        .collect();
    let head = PublishHead {
        vhost: vhost.to_owned(),
        queue: queue.to_owned(),
        lens: records.iter().map(|r| r.len() as u32).collect(),
    };
    let head = postcard::to_allocvec(&head).map_err(|e| format!("unencodable batch: {e}"))?;
    let total = head.len() + records.iter().map(Vec::len).sum::<usize>();
    let mut out = BytesMut::with_capacity(total);
    out.put_slice(&head);
    for r in &records {
        out.put_slice(r);
    }
    Ok(out.freeze())
}

/// Splits a publish batch into its head and messages (their bodies and properties are
/// slices of `payload`).
pub fn decode_publish(payload: &Bytes) -> Result<(PublishHead, Vec<Message>), String> {
    let (head, rest) = postcard::take_from_bytes::<PublishHead>(payload)
        .map_err(|e| format!("undecodable publish batch: {e}"))?;
    let mut at = payload.len() - rest.len();
    let mut msgs = Vec::with_capacity(head.lens.len());
    for &len in &head.lens {
        let end = at + len as usize;
        if end > payload.len() {
            return Err("publish batch shorter than its head says".into());
        }
        let m = broker_core::store::decode_message_shared(&payload.slice(at..end), 0)
            .map_err(|e| format!("undecodable message in a publish batch: {e}"))?;
        msgs.push(m);
        at = end;
    }
    Ok((head, msgs))
}

/// A queue's counts as its home (or a member of a quorum queue) has them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RemoteInfo {
    /// Ready messages.
    pub ready: u64,
    /// Unacked deliveries.
    pub unacked: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Consumers.
    pub consumers: u64,
    /// A quorum queue's leader as that node knows it.
    pub leader: Option<String>,
    /// Returned messages waiting out their retry back-off.
    pub delayed: u64,
}
