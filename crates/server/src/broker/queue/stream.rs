//! The stream queue type's implementation inside the queue actor: a stream keeps no
//! ready list; its messages are in its log ([`broker_store::stream::StreamLog`],
//! appended on the publisher's thread by `broker/publish.rs`), and each consumer reads
//! the log from its own offset, as far as its prefetch (credit) lets it. The queue
//! actor is the shell: for a stream its handlers hand over to [`StreamQueue`].
//!
//! Deliveries carry the `x-stream-offset` header (added when a chunk is decoded, once
//! for every consumer reading it). Acks only give credit back: nothing is removed, and
//! retention decides what goes.

use super::{ConsumerCancelled, ConsumerHandle, Deliver, QueueEntry};
use crate::broker::node::now_ms;
use broker_core::message::Slot;
use broker_core::names::ChannelKey;
use broker_core::queue::{Consumer, Entry};
use broker_core::stream::OffsetSpec;
use broker_core::{AmqpError, Message};
use broker_store::stream::{Cursor, StreamLog};
use broker_wire::types::{AMQPValue, FieldTable};
use std::collections::VecDeque;
use std::sync::Arc;

/// What a stream keeps, from its arguments (and policies).
pub fn retention(args: &broker_core::args::QueueArgs) -> broker_store::stream::Retention {
    broker_store::stream::Retention {
        max_bytes: args.max_length_bytes,
        max_age_ms: args.max_age_ms,
        // a tiny size makes a segment per chunk (RabbitMQ 3.10 hangs on it)
        segment_bytes: args
            .stream_segment_bytes
            .unwrap_or(broker_core::queue_type::stream::DEFAULT_SEGMENT_BYTES)
            .max(1),
    }
}

/// Decoded chunks kept for consumers reading near each other.
const CHUNK_CACHE: usize = 16;

/// Deliveries one consumer gets in one turn at most (others get their turn).
const TURN_MAX: usize = 4096;

/// A chunk decoded into messages, with their `x-stream-offset` headers.
struct Decoded {
    /// Where the chunk was read (its cursor before and after).
    at: Cursor,
    next: Cursor,
    first_offset: u64,
    msgs: Vec<Arc<Message>>,
}

/// One consumer's place in the stream.
struct Reader {
    consumer: Consumer<ConsumerHandle>,
    /// The next chunk to read.
    cursor: Cursor,
    /// The next offset to deliver (records before it in a chunk are skipped).
    next: u64,
    /// The chunk being delivered.
    chunk: Option<Arc<Decoded>>,
}

/// A stream's consumers and the log they read.
pub struct StreamQueue {
    /// The log.
    pub log: Arc<StreamLog>,
    readers: Vec<Reader>,
    cache: VecDeque<Arc<Decoded>>,
}

impl StreamQueue {
    /// A stream queue over `log`.
    pub fn new(log: Arc<StreamLog>) -> StreamQueue {
        StreamQueue {
            log,
            readers: Vec::new(),
            cache: VecDeque::new(),
        }
    }

    /// basic.consume: the consumer starts where `x-stream-offset` says (the channel
    /// has checked its prefetch and ack mode, [`broker_core::queue_type::stream::check_consume`]).
    pub fn consume(
        &mut self,
        c: Consumer<ConsumerHandle>,
        args: &FieldTable,
        queue: &str,
        vhost: &str,
    ) -> Result<(), AmqpError> {
        let spec = broker_core::stream::offset_spec(args, now_ms(), queue, vhost)?;
        let (cursor, next) = self
            .attach(spec)
            .map_err(|e| AmqpError::internal(format!("cannot read stream '{queue}': {e}")))?;
        self.readers.push(Reader {
            consumer: c,
            cursor,
            next,
            chunk: None,
        });
        Ok(())
    }

    fn attach(&self, spec: OffsetSpec) -> Result<(Cursor, u64), broker_core::store::StoreError> {
        let log = &self.log;
        Ok(match spec {
            OffsetSpec::First => (log.seek_offset(0)?, 0),
            OffsetSpec::Last => (log.seek_last_chunk()?, 0),
            OffsetSpec::Next => (log.seek_end(), log.end_offset()),
            OffsetSpec::Offset(o) => (log.seek_offset(o)?, o),
            OffsetSpec::Timestamp(t) => (log.seek_time(t)?, 0),
        })
    }

    /// Removes a consumer; returns it.
    pub fn cancel(&mut self, channel: ChannelKey, tag: &str) -> Option<Consumer<ConsumerHandle>> {
        let i = self
            .readers
            .iter()
            .position(|r| r.consumer.channel == channel && &*r.consumer.tag == tag)?;
        Some(self.readers.remove(i).consumer)
    }

    /// Removes the consumers of a closed channel.
    pub fn channel_closed(&mut self, channel: ChannelKey) {
        self.readers.retain(|r| r.consumer.channel != channel);
    }

    /// Consumers now.
    pub fn consumer_count(&self) -> usize {
        self.readers.len()
    }

    /// (channel, tag, ack required, exclusive, priority) of each consumer.
    pub fn consumers(&self) -> Vec<(ChannelKey, Arc<str>, bool, bool, i64)> {
        self.readers
            .iter()
            .map(|r| {
                let c = &r.consumer;
                (c.channel, c.tag.clone(), !c.no_ack, c.exclusive, c.priority)
            })
            .collect()
    }

    /// Tells every consumer the stream is gone (basic.cancel), and forgets them.
    pub fn cancel_all(&mut self) {
        for r in self.readers.drain(..) {
            r.consumer.data.cancel.do_send(ConsumerCancelled {
                consumer_tag: r.consumer.tag.clone(),
            });
        }
    }

    /// Delivers to every consumer what its credit allows; `push` takes each delivery.
    /// Returns how many went out.
    pub fn deliver(
        &mut self,
        me: &Arc<QueueEntry>,
        mut push: impl FnMut(ChannelKey, &ConsumerHandle, Deliver),
    ) -> u64 {
        let mut total = 0;
        let mut readers = std::mem::take(&mut self.readers);
        for r in &mut readers {
            total += self.deliver_to(r, me, &mut push);
        }
        self.readers = readers;
        total
    }

    fn deliver_to(
        &mut self,
        r: &mut Reader,
        me: &Arc<QueueEntry>,
        push: &mut impl FnMut(ChannelKey, &ConsumerHandle, Deliver),
    ) -> u64 {
        let mut sent = 0;
        while sent < TURN_MAX as u64 {
            let chunk = match &r.chunk {
                Some(c) if r.next < c.first_offset + c.msgs.len() as u64 => c.clone(),
                _ => match self.next_chunk(r) {
                    Some(c) => c,
                    None => break,
                },
            };
            let i = r.next.saturating_sub(chunk.first_offset) as usize;
            let Some(msg) = chunk.msgs.get(i) else {
                r.chunk = None;
                continue;
            };
            let units = broker_core::flow::cost(msg.size());
            if !r.consumer.data.gate.try_take(units) {
                break;
            }
            let offset = chunk.first_offset + i as u64;
            let entry = Entry {
                id: offset,
                msg: Slot::Loaded(msg.clone()),
                redelivered: false,
                priority: 0,
                returns: 0,
                body_len: msg.body.len() as u32,
                expires_at: None,
            };
            let d = Deliver {
                queue: me.clone(),
                consumer_tag: r.consumer.tag.clone(),
                no_ack: false,
                entry,
                msg: msg.clone(),
                gate: r.consumer.data.gate.clone(),
                units,
            };
            push(r.consumer.channel, &r.consumer.data, d);
            r.next = offset + 1;
            sent += 1;
        }
        sent
    }

    /// The chunk after the reader's current one (from the cache when another reader
    /// read it lately), with the reader moved onto it.
    fn next_chunk(&mut self, r: &mut Reader) -> Option<Arc<Decoded>> {
        loop {
            let cached = self.cache.iter().find(|c| c.at == r.cursor).cloned();
            let chunk = match cached {
                Some(c) => c,
                None => {
                    let at = r.cursor;
                    let read = match self.log.read(&mut r.cursor) {
                        Ok(Some(c)) => c,
                        Ok(None) => return None,
                        Err(e) => {
                            tracing::error!(stream = self.log.id, "cannot read the stream: {e}");
                            return None;
                        }
                    };
                    let d = Arc::new(decode(at, r.cursor, read));
                    if self.cache.len() >= CHUNK_CACHE {
                        self.cache.pop_front();
                    }
                    self.cache.push_back(d.clone());
                    d
                }
            };
            r.cursor = chunk.next;
            let end = chunk.first_offset + chunk.msgs.len() as u64;
            if end <= r.next {
                // wholly before where the reader is (a seek into the middle of a chunk)
                continue;
            }
            r.next = r.next.max(chunk.first_offset);
            r.chunk = Some(chunk.clone());
            return Some(chunk);
        }
    }
}

/// Decodes a chunk's records into messages carrying their `x-stream-offset`.
fn decode(at: Cursor, next: Cursor, chunk: broker_store::stream::Chunk) -> Decoded {
    let mut msgs = Vec::with_capacity(chunk.records.len());
    for (i, rec) in chunk.records.iter().enumerate() {
        let offset = chunk.first_offset + i as u64;
        match broker_core::store::decode_message(rec, 0) {
            Ok(m) => msgs.push(Arc::new(with_offset(m, offset, chunk.timestamp))),
            Err(e) => {
                tracing::error!(offset, "a stream record cannot be decoded: {e}");
                // an empty message keeps the offsets in step
                msgs.push(Arc::new(with_offset(
                    empty_message(),
                    offset,
                    chunk.timestamp,
                )));
            }
        }
    }
    Decoded {
        at,
        next,
        first_offset: chunk.first_offset,
        msgs,
    }
}

/// The message as a stream delivers it: `x-stream-offset` in its headers.
fn with_offset(m: Message, offset: u64, _timestamp: u64) -> Message {
    let mut headers: FieldTable = m.properties.headers().clone().unwrap_or_default();
    headers.insert(
        "x-stream-offset".into(),
        AMQPValue::LongLongInt(offset as i64),
    );
    let props = (*m.properties).clone().with_headers(headers);
    Message {
        raw_properties: broker_wire::encode::properties(&props),
        properties: props.into(),
        persist_id: None,
        ..m
    }
}

/// A message standing in for a record that cannot be decoded (keeps the offsets in
/// step; the error is logged).
fn empty_message() -> Message {
    let props = broker_wire::protocol::basic::AMQPProperties::default();
    Message {
        exchange: Arc::from(""),
        routing_key: Arc::from(""),
        raw_properties: broker_wire::encode::properties(&props),
        properties: props.into(),
        body: bytes::Bytes::new(),
        persist_id: None,
        arrival_ms: 0,
    }
}

/// The log committed new messages: its readers may have more to read.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct StreamCommitted;

impl actix::Handler<StreamCommitted> for super::QueueActor {
    type Result = ();
    fn handle(&mut self, _: StreamCommitted, _: &mut actix::Context<Self>) {
        self.stream_deliver();
    }
}

/// What the queue actor's handlers do for a stream.
impl super::QueueActor {
    /// Delivers what the stream's consumers have credit for.
    pub(super) fn stream_deliver(&mut self) {
        let Some(me) = self.me.upgrade() else { return };
        let Some(s) = self.stream.as_mut() else {
            return;
        };
        let outbox = &mut self.outbox;
        let n = s.deliver(&me, |key, h, d| {
            match outbox.iter_mut().find(|(k, _, _)| *k == key) {
                Some((_, _, v)) => v.push(d),
                None => outbox.push((key, h.deliver.clone(), vec![d])),
            }
        });
        if n > 0 {
            me.counters
                .delivered
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        self.flush_deliveries();
    }

    /// basic.consume on a stream.
    pub(super) fn stream_consume(
        &mut self,
        c: Consumer<ConsumerHandle>,
        args: &FieldTable,
    ) -> Result<(), AmqpError> {
        let vhost = self.vhost_name();
        let name = self.name.clone();
        if let Some(s) = self.stream.as_mut() {
            s.consume(c, args, &name, &vhost)?;
        }
        self.stream_deliver();
        Ok(())
    }

    /// The stream's message count (what declare-ok and the management API show).
    pub(super) fn stream_count(&self) -> u64 {
        self.stream.as_ref().map_or(0, |s| s.log.message_count())
    }

    /// queue.delete of a stream: its consumers are cancelled and its files deleted.
    pub(super) fn stream_delete(&mut self, if_unused: bool) -> Result<u32, AmqpError> {
        let vhost = self.vhost_name();
        let Some(s) = self.stream.as_mut() else {
            return Ok(0);
        };
        if if_unused && s.consumer_count() > 0 {
            return Err(AmqpError::precondition_failed(format!(
                "queue '{}' in vhost '{vhost}' in use",
                self.name
            )));
        }
        // RabbitMQ's delete-ok for a stream counts no messages
        let n = 0;
        s.cancel_all();
        if let Some(store) = self.node.store.as_ref() {
            store.streams.remove(&s.log);
        }
        self.deleted = true;
        Ok(n)
    }
}
