//! The stream queue type's implementation inside the queue actor: a stream keeps no
//! ready list; its messages are in its log ([`broker_store::stream::StreamLog`],
//! appended on the publisher's thread by `broker/publish.rs`), and each consumer reads
//! the log from its own offset ([`reader`]), as far as its prefetch (credit) lets it.
//! The queue actor is the shell: for a stream its handlers hand over to [`StreamQueue`]
//! (`actor.rs`).
//!
//! Beyond RabbitMQ over AMQP 0-9-1 (as LavinMQ offers it): a consumer with
//! `x-stream-automatic-offset-tracking` has its acknowledged offset kept under its tag,
//! and resumes after it when it consumes again without `x-stream-offset`; consumers with
//! `x-single-active-consumer` and the same tag form a group of which one reads at a
//! time, the next taking over from the group's offset when it goes.

mod actor;
mod reader;

pub use actor::StreamCommitted;

use super::{ConsumerCancelled, ConsumerHandle, Deliver, QueueEntry};
use crate::broker::node::now_ms;
use broker_core::message::Slot;
use broker_core::names::ChannelKey;
use broker_core::queue::{Consumer, Entry};
use broker_core::stream::OffsetSpec;
use broker_core::AmqpError;
use broker_store::stream::{Cursor, StreamLog};
use broker_wire::types::{AMQPValue, FieldTable};
use reader::{Decoded, Reader};
use std::collections::{HashMap, VecDeque};
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

/// Deliveries one consumer gets in one turn at most (others get their turn).
const TURN_MAX: u64 = 4096;

/// A stream's consumers and the log they read.
pub struct StreamQueue {
    /// The log.
    pub log: Arc<StreamLog>,
    readers: Vec<Reader>,
    cache: VecDeque<Arc<Decoded>>,
    /// The id of the next reader, and of the next delivery.
    next_reader: u64,
    next_delivery: u64,
    /// Unacked deliveries of tracking readers: delivery id → (reader id, offset).
    outstanding: HashMap<u64, (u64, u64)>,
    /// Acknowledged offsets by tracking name (loaded from the log's directory).
    tracked: HashMap<String, u64>,
    /// `tracked` changed since it was last saved.
    tracked_dirty: bool,
    /// A save of `tracked` is scheduled.
    save_scheduled: bool,
}

impl StreamQueue {
    /// A stream queue over `log`, with the offsets it tracked before.
    pub fn new(log: Arc<StreamLog>) -> StreamQueue {
        let tracked = log.load_offsets();
        StreamQueue {
            log,
            readers: Vec::new(),
            cache: VecDeque::new(),
            next_reader: 0,
            next_delivery: 0,
            outstanding: HashMap::new(),
            tracked,
            tracked_dirty: false,
            save_scheduled: false,
        }
    }

    /// basic.consume: the consumer starts where `x-stream-offset` says, or after its
    /// tracked offset (the channel has checked its prefetch and ack mode,
    /// [`broker_core::queue_type::stream::check_consume`]).
    pub fn consume(
        &mut self,
        c: Consumer<ConsumerHandle>,
        args: &FieldTable,
        queue: &str,
        vhost: &str,
    ) -> Result<(), AmqpError> {
        let explicit = args.inner().contains_key("x-stream-offset");
        let spec = broker_core::stream::offset_spec(args, now_ms(), queue, vhost)?;
        let filter = broker_core::stream::filter_spec(args, queue, vhost)?;
        let grouped = flag(args, "x-single-active-consumer");
        let tracking = grouped || flag(args, "x-stream-automatic-offset-tracking");
        let tracked_as: Option<Arc<str>> = tracking.then(|| c.tag.clone());
        // a member joining a group with a reader waits its turn
        let active = !(grouped
            && self
                .readers
                .iter()
                .any(|r| r.grouped && r.active && r.consumer.tag == c.tag));
        let spec = match tracked_as.as_deref().and_then(|t| self.tracked.get(t)) {
            Some(&acked) if !explicit => OffsetSpec::Offset(acked + 1),
            _ => spec,
        };
        let (cursor, next) = self.attach(spec, queue)?;
        self.next_reader += 1;
        self.readers.push(Reader {
            id: self.next_reader,
            consumer: c,
            cursor,
            next,
            chunk: None,
            filter,
            tracked_as,
            grouped,
            active,
        });
        Ok(())
    }

    fn attach(&self, spec: OffsetSpec, queue: &str) -> Result<(Cursor, u64), AmqpError> {
        let log = &self.log;
        let at = match spec {
            OffsetSpec::First => log.seek_offset(0).map(|c| (c, 0)),
            OffsetSpec::Last => log.seek_last_chunk().map(|c| (c, 0)),
            OffsetSpec::Next => Ok((log.seek_end(), log.end_offset())),
            OffsetSpec::Offset(o) => log.seek_offset(o).map(|c| (c, o)),
            OffsetSpec::Timestamp(t) => log.seek_time(t).map(|c| (c, 0)),
        };
        at.map_err(|e| AmqpError::internal(format!("cannot read stream '{queue}': {e}")))
    }

    /// Removes a consumer; the next member of its group takes over.
    pub fn cancel(&mut self, channel: ChannelKey, tag: &str) {
        if let Some(i) = self
            .readers
            .iter()
            .position(|r| r.consumer.channel == channel && &*r.consumer.tag == tag)
        {
            let r = self.readers.remove(i);
            self.gone(r);
        }
    }

    /// Removes the consumers of a closed channel.
    pub fn channel_closed(&mut self, channel: ChannelKey) {
        let (gone, kept): (Vec<Reader>, Vec<Reader>) = std::mem::take(&mut self.readers)
            .into_iter()
            .partition(|r| r.consumer.channel == channel);
        self.readers = kept;
        for r in gone {
            self.gone(r);
        }
    }

    /// A reader went: its unacked deliveries are forgotten (they count as not
    /// acknowledged), and if it was its group's active member, the next one (the
    /// earliest to join) takes over after the group's tracked offset.
    fn gone(&mut self, r: Reader) {
        self.outstanding.retain(|_, (reader, _)| *reader != r.id);
        if !(r.grouped && r.active) {
            return;
        }
        let acked = self.tracked.get(&*r.consumer.tag).copied();
        let log = self.log.clone();
        if let Some(next) = self
            .readers
            .iter_mut()
            .find(|n| n.grouped && n.consumer.tag == r.consumer.tag)
        {
            next.active = true;
            if let Some(acked) = acked {
                match log.seek_offset(acked + 1) {
                    Ok(c) => {
                        next.cursor = c;
                        next.next = acked + 1;
                        next.chunk = None;
                    }
                    Err(e) => tracing::error!(stream = log.id, "cannot seek the stream: {e}"),
                }
            }
            tracing::info!(stream = log.id, group = %r.consumer.tag, "single active consumer: the next member takes over");
        }
    }

    /// Acknowledged deliveries: tracking readers' offsets move on.
    pub fn acked(&mut self, ids: &[u64]) {
        for id in ids {
            let Some((reader, offset)) = self.outstanding.remove(id) else {
                continue;
            };
            let name = self
                .readers
                .iter()
                .find(|r| r.id == reader)
                .and_then(|r| r.tracked_as.clone());
            if let Some(name) = name {
                if self.tracked.len() >= broker_store::stream::MAX_TRACKED
                    && !self.tracked.contains_key(&*name)
                {
                    // bounded: a client inventing tags pushes out an old one
                    if let Some(old) = self.tracked.keys().next().cloned() {
                        self.tracked.remove(&old);
                    }
                }
                let e = self.tracked.entry(name.to_string()).or_insert(offset);
                *e = (*e).max(offset);
                self.tracked_dirty = true;
            }
        }
    }

    /// The tracked offsets (for saving).
    pub fn tracked(&self) -> &HashMap<String, u64> {
        &self.tracked
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
        self.outstanding.clear();
        for r in self.readers.drain(..) {
            r.consumer.data.cancel.do_send(ConsumerCancelled {
                consumer_tag: r.consumer.tag.clone(),
            });
        }
    }

    /// Delivers to every active consumer what its credit allows; `push` takes each
    /// delivery. Returns how many went out.
    pub fn deliver(
        &mut self,
        me: &Arc<QueueEntry>,
        mut push: impl FnMut(ChannelKey, &ConsumerHandle, Deliver),
    ) -> u64 {
        let mut total = 0;
        let mut readers = std::mem::take(&mut self.readers);
        for r in readers.iter_mut().filter(|r| r.active) {
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
        while sent < TURN_MAX {
            let Some((offset, msg)) = r.next_message() else {
                if r.advance(&self.log, &mut self.cache) {
                    continue;
                }
                break;
            };
            let units = broker_core::flow::cost(msg.size());
            if !r.consumer.data.gate.try_take(units) {
                break;
            }
            self.next_delivery += 1;
            let id = self.next_delivery;
            if r.tracked_as.is_some() {
                self.outstanding.insert(id, (r.id, offset));
            }
            let entry = Entry {
                id,
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
                msg,
                gate: r.consumer.data.gate.clone(),
                units,
            };
            push(r.consumer.channel, &r.consumer.data, d);
            r.next = offset + 1;
            sent += 1;
        }
        sent
    }
}

/// A boolean consumer argument (true only when given as `true`).
fn flag(args: &FieldTable, key: &str) -> bool {
    matches!(args.inner().get(key), Some(AMQPValue::Boolean(true)))
}
