//! One stream consumer's place in the log, and the chunks it reads: decoded once into
//! messages carrying `x-stream-offset` (shared through a small cache by consumers reading
//! near each other), skipped unread when the consumer's filter rules the whole chunk out.

use crate::broker::queue::ConsumerHandle;
use broker_core::queue::Consumer;
use broker_core::stream::Filter;
use broker_core::Message;
use broker_store::stream::{Chunk, Cursor, StreamLog, Summary};
use broker_wire::types::{AMQPValue, FieldTable};
use std::collections::VecDeque;
use std::sync::Arc;

/// Decoded chunks kept for consumers reading near each other.
const CHUNK_CACHE: usize = 16;

/// A chunk decoded into messages, with their `x-stream-offset` headers.
pub(super) struct Decoded {
    /// Where the chunk was read (its cursor before and after).
    at: Cursor,
    next: Cursor,
    pub first_offset: u64,
    /// Its messages; empty when the reader's filter skipped the chunk unread.
    pub msgs: Vec<Arc<Message>>,
    /// Their `x-stream-filter-value`s.
    pub filters: Vec<Option<Vec<u8>>>,
    /// Messages in the chunk (also when skipped).
    pub count: u64,
}

/// One consumer's place in the stream.
pub(super) struct Reader {
    /// Unique within the stream (deliveries of tracked readers point back to it).
    pub id: u64,
    pub consumer: Consumer<ConsumerHandle>,
    /// The next chunk to read.
    pub cursor: Cursor,
    /// The next offset to deliver (records before it in a chunk are skipped).
    pub next: u64,
    /// The chunk being delivered.
    pub chunk: Option<Arc<Decoded>>,
    /// `x-stream-filter`.
    pub filter: Option<Filter>,
    /// Its acknowledged offset is kept under this name (the consumer tag) when it
    /// tracks its offset, or belongs to a single-active-consumer group.
    pub tracked_as: Option<Arc<str>>,
    /// A member of a single-active-consumer group (the group is its tag).
    pub grouped: bool,
    /// Delivering (every reader but the waiting members of a group).
    pub active: bool,
}

impl Reader {
    /// The next message of its current chunk, moving past those its filter refuses;
    /// `None` when the chunk is done.
    pub fn next_message(&mut self) -> Option<(u64, Arc<Message>)> {
        // borrowed, not cloned: this runs once per delivery
        let chunk = self.chunk.as_ref()?;
        let end = chunk.first_offset + chunk.count;
        while self.next < end {
            let i = (self.next - chunk.first_offset) as usize;
            let Some(msg) = chunk.msgs.get(i) else {
                // skipped unread: nothing in it for this reader
                self.next = end;
                break;
            };
            let ok = self
                .filter
                .as_ref()
                .is_none_or(|f| f.matches(chunk.filters.get(i).and_then(|v| v.as_deref())));
            if ok {
                return Some((self.next, msg.clone()));
            }
            self.next += 1;
        }
        self.chunk = None;
        None
    }

    /// Moves onto the chunk after its current one (from `cache` when another reader
    /// read it lately); false at the end of the log.
    pub fn advance(&mut self, log: &StreamLog, cache: &mut VecDeque<Arc<Decoded>>) -> bool {
        loop {
            let cached = cache.iter().find(|c| c.at == self.cursor).cloned();
            let chunk = match cached {
                Some(c) => c,
                None => {
                    let at = self.cursor;
                    let filter = self.filter.as_ref();
                    let wanted = |s: &Summary| wants(filter, s);
                    let read = match log.read_filtered(&mut self.cursor, &wanted) {
                        Ok(Some(c)) => c,
                        Ok(None) => return false,
                        Err(e) => {
                            tracing::error!(stream = log.id, "cannot read the stream: {e}");
                            return false;
                        }
                    };
                    let whole = read.records.len() as u64 == u64::from(read.count);
                    let d = Arc::new(decode(at, self.cursor, read));
                    if whole {
                        if cache.len() >= CHUNK_CACHE {
                            cache.pop_front();
                        }
                        cache.push_back(d.clone());
                    }
                    d
                }
            };
            self.cursor = chunk.next;
            if chunk.first_offset + chunk.count <= self.next {
                // wholly before where the reader is (a seek into the middle of a chunk)
                continue;
            }
            self.next = self.next.max(chunk.first_offset);
            self.chunk = Some(chunk);
            return true;
        }
    }
}

/// Whether a chunk with this summary may hold a message for a reader with this filter.
fn wants(filter: Option<&Filter>, s: &Summary) -> bool {
    match filter {
        None => true,
        Some(f) => {
            (f.match_unfiltered && s.unfiltered) || f.values.iter().any(|v| s.may_contain(v))
        }
    }
}

/// Decodes a chunk's records into messages carrying their `x-stream-offset`.
fn decode(at: Cursor, next: Cursor, chunk: Chunk) -> Decoded {
    let mut msgs = Vec::with_capacity(chunk.records.len());
    let mut filters = Vec::with_capacity(chunk.records.len());
    for (i, rec) in chunk.records.iter().enumerate() {
        let offset = chunk.first_offset + i as u64;
        let m = broker_core::store::decode_message_shared(rec, 0).unwrap_or_else(|e| {
            tracing::error!(offset, "a stream record cannot be decoded: {e}");
            // an empty message keeps the offsets in step
            empty_message()
        });
        filters.push(broker_core::stream::filter_value(&m));
        msgs.push(Arc::new(with_offset(m, offset)));
    }
    Decoded {
        at,
        next,
        first_offset: chunk.first_offset,
        msgs,
        filters,
        count: u64::from(chunk.count),
    }
}

/// The message as a stream delivers it: `x-stream-offset` in its headers (a publisher's
/// own header of that name is overwritten, as RabbitMQ does). The header is spliced into
/// the property bytes (the parsed properties, which deliveries do not use, stay as
/// published); only a message that carries the header already is re-encoded.
fn with_offset(m: Message, offset: u64) -> Message {
    let value = i64::try_from(offset).unwrap_or(i64::MAX);
    let has = m
        .properties
        .headers()
        .as_ref()
        .is_some_and(|h| h.inner().contains_key("x-stream-offset"));
    if !has {
        if let Some(raw) =
            broker_wire::encode::with_long_header(&m.raw_properties, "x-stream-offset", value)
        {
            return Message {
                raw_properties: raw,
                persist_id: None,
                ..m
            };
        }
    }
    let mut headers: FieldTable = m.properties.headers().clone().unwrap_or_default();
    headers.insert("x-stream-offset".into(), AMQPValue::LongLongInt(value));
    let props = (*m.properties).clone().with_headers(headers);
    Message {
        raw_properties: broker_wire::encode::properties(&props),
        properties: props.into(),
        persist_id: None,
        ..m
    }
}

/// A message standing in for a record that cannot be decoded (the error is logged).
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
