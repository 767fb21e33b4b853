//! What the broker keeps on disk and the traits a store implements. Records are encoded
//! here (pure functions), so a store only moves bytes: the sled store in the server is one
//! implementation, and another can replace it without touching the broker.
//!
//! Layout: definitions under typed keys (`e`, `q`, `b` prefixes); messages under
//! `queue id (u64 BE) ++ sequence (u64 BE)`, with a one-byte-longer key marking a message
//! as delivered once (so it comes back with redelivered set after a restart).

use crate::message::Message;
use crate::replicated::{DefinitionBatch, DefinitionSnapshot, Record, ReplicatedState};
use crate::routing::Destination;
use amq_protocol::protocol::basic::parse_properties;
use amq_protocol::types::generation::gen_field_table;
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::FieldTable;
use bytes::Bytes;
use std::sync::Arc;
use thiserror::Error;

/// A store failure (I/O, corruption). Publishes it affects are nacked.
#[derive(Debug, Error, Clone)]
#[error("{0}")]
pub struct StoreError(pub String);

/// The word a store uses for a record cut short at the end of what was written: after a
/// crash, a write that was never confirmed (confirmed records were fsynced first).
pub const INCOMPLETE: &str = "incomplete";

impl StoreError {
    /// Whether this is a record cut short by a crash (see [`INCOMPLETE`]), rather than
    /// damage.
    pub fn is_incomplete_write(&self) -> bool {
        self.0.contains(INCOMPLETE)
    }
}

/// A durable exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeDef {
    /// Vhost name.
    pub vhost: String,
    /// Exchange name.
    pub name: String,
    /// Type name (direct, fanout, topic, headers).
    pub kind: String,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// Internal flag.
    pub internal: bool,
    /// Arguments.
    pub arguments: FieldTable,
    /// An `x-delayed-message` exchange's waiting room: the store id its waiting
    /// messages are kept under (`None` for other types).
    pub room_id: Option<u64>,
}

/// A durable queue with its numeric id (the prefix of its message keys).
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDef {
    /// Vhost name.
    pub vhost: String,
    /// Queue name.
    pub name: String,
    /// Store id, never reused.
    pub id: u64,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// Arguments.
    pub arguments: FieldTable,
    /// The node the queue lives on (its actor and messages): the declaring node's name.
    /// `None` in records written before clusters existed, which means "this node".
    pub home: Option<String>,
    /// A quorum queue's member nodes in a cluster (the declaring node first), chosen
    /// when it was declared; empty for other queues, for a cluster of one and in older
    /// records (a group of one on `home`).
    pub members: Vec<String>,
}

/// A binding between durable entities.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingDef {
    /// Vhost name.
    pub vhost: String,
    /// Source exchange.
    pub source: String,
    /// Destination queue or exchange.
    pub destination: Destination,
    /// Binding key.
    pub routing_key: String,
    /// Arguments.
    pub arguments: FieldTable,
}

/// Everything recovered at start.
#[derive(Debug, Default)]
pub struct Definitions {
    /// Durable exchanges.
    pub exchanges: Vec<ExchangeDef>,
    /// Durable queues.
    pub queues: Vec<QueueDef>,
    /// Durable bindings.
    pub bindings: Vec<BindingDef>,
}

/// A stored message of one queue, as recovery sees it.
#[derive(Debug)]
pub struct StoredMessage {
    /// Sequence number (the message's store id).
    pub seq: u64,
    /// Delivered at least once before.
    pub delivered: bool,
    /// Its priority, size and expiry data, kept in the index.
    pub meta: crate::message::Meta,
    /// The encoded record, for the messages the caller asked to load (the head of the
    /// queue); an error when it cannot be read back (a damaged or truncated store).
    pub record: Option<Result<Vec<u8>, StoreError>>,
}

/// Durable definitions.
pub trait DefinitionStore: Send + Sync {
    /// Saves (or replaces) a definition record.
    fn put_definition(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Removes a definition record.
    fn delete_definition(&self, key: &[u8]) -> Result<(), StoreError>;
    /// Saves (or replaces) a definition record without waiting for the disk: it becomes
    /// durable with the next index flush (which a caller that must answer only once it
    /// is durable asks the flusher for, off its own thread).
    fn stage_definition(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Removes a definition record without waiting for the disk (see `stage_definition`).
    fn unstage_definition(&self, key: &[u8]) -> Result<(), StoreError>;
    /// All definition records.
    fn definitions(&self) -> Result<Vec<Record>, StoreError>;
    /// A fresh id, unique across restarts.
    fn next_id(&self) -> Result<u64, StoreError>;
    /// One definition record (the metadata group's guards read single keys).
    fn definition(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// The definition records whose keys start with `prefix`, in key order.
    fn definitions_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Record>, StoreError>;
    /// Applies `batch` atomically (all of it or nothing survives a crash), staged like
    /// `stage_definition`: a replicated apply waits for its Raft log, not for sled.
    fn apply_definitions(&self, batch: &DefinitionBatch) -> Result<(), StoreError>;
    /// The replicated state the last applied batch recorded.
    fn replicated_state(&self) -> Result<ReplicatedState, StoreError>;
    /// Every definition record with the replicated state. Consistent as long as no
    /// other writer runs meanwhile (the metadata state machine holds its lock).
    fn definitions_snapshot(&self) -> Result<DefinitionSnapshot, StoreError>;
    /// Replaces every definition record and the replicated state with `snapshot`,
    /// atomically and staged (a follower installing the leader's snapshot).
    fn replace_definitions(&self, snapshot: &DefinitionSnapshot) -> Result<(), StoreError>;
}

/// Persistent messages, keyed by queue id and sequence.
pub trait MessageStore: Send + Sync {
    /// Stores a message once for every queue in `queues` (the record is written once and
    /// shared); `meta` goes into each queue's index entry.
    fn insert(
        &self,
        queues: &[u64],
        seq: u64,
        record: &[u8],
        meta: crate::message::Meta,
    ) -> Result<(), StoreError>;
    /// Records that the queue has delivered every message up to store id `upto` at
    /// least once, so they come back with redelivered set after a restart. One key per
    /// queue: a delivery costs no write of its own. It may over-report (a message
    /// published later but delivered earlier, as with priorities), which the
    /// redelivered flag allows ("may have been delivered before").
    fn mark_delivered(&self, queue: u64, upto: u64) -> Result<(), StoreError>;
    /// Removes a message (ack, reject, purge).
    fn remove(&self, queue: u64, seq: u64) -> Result<(), StoreError>;
    /// Removes every message of a queue.
    fn remove_queue(&self, queue: u64) -> Result<usize, StoreError>;
    /// Visits the messages of a queue in sequence order, one at a time (so a long queue
    /// is never held in memory whole). Records are read for the first `load` messages
    /// only; the rest stay on disk until they near delivery.
    fn for_each_in_queue(
        &self,
        queue: u64,
        load: usize,
        f: &mut dyn FnMut(StoredMessage),
    ) -> Result<(), StoreError>;
    /// One stored message.
    fn get(&self, queue: u64, seq: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// Ids of every queue that has stored messages.
    fn queue_ids(&self) -> Result<Vec<u64>, StoreError>;
    /// Makes everything written so far durable (fsync): messages, removals, marks.
    fn flush(&self) -> Result<(), StoreError>;
    /// Makes every message inserted so far survive a crash; what publisher confirms and
    /// `tx.commit` wait for. Removals and marks may wait for the next [`flush`]. A store
    /// that can recover inserted messages from less than a full flush makes this cheaper.
    ///
    /// [`flush`]: MessageStore::flush
    fn commit(&self) -> Result<(), StoreError> {
        self.flush()
    }
    /// How far inserts have gone (a counter). A publisher asks for a commit with the
    /// marks before and after its inserts: see [`check_lost`].
    ///
    /// [`check_lost`]: MessageStore::check_lost
    fn mark(&self) -> u64 {
        0
    }
    /// An error if a write or fsync failed for an insert made between marks `since` and
    /// `upto`: a commit that succeeds later must not confirm those.
    fn check_lost(&self, _since: u64, _upto: u64) -> Result<(), StoreError> {
        Ok(())
    }
    /// Whether anything was written since the last flush (the flusher flushes such
    /// writes in the background even when no publisher waits for them).
    fn needs_flush(&self) -> bool {
        true
    }
    /// Bytes the store occupies on disk (0 if unknown).
    fn size_on_disk(&self) -> u64 {
        0
    }
    /// One bounded round of space reclamation (a store that compacts its files does a
    /// little of it per call, so that a round never holds up commits for long); `true`
    /// if there is more to do. Called repeatedly on a thread of its own.
    fn compact(&self) -> Result<bool, StoreError> {
        Ok(false)
    }
}

/// Message key: queue id and sequence, big-endian, so keys sort by queue then order.
pub fn message_key(queue: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&queue.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The key of a queue's delivered mark: the highest store id it has delivered. It sorts
/// after every message key of the queue.
pub fn delivered_mark_key(queue: u64) -> [u8; 17] {
    let mut k = [0xffu8; 17];
    k[..8].copy_from_slice(&queue.to_be_bytes());
    k[16] = b'm';
    k
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_table(out: &mut Vec<u8>, t: &FieldTable) {
    if let Ok((bytes, _)) = cookie_factory::gen(gen_field_table(t), Vec::new()) {
        out.extend_from_slice(&bytes);
    } else {
        out.extend_from_slice(&0u32.to_be_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(StoreError("truncated record".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, StoreError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, StoreError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn str(&mut self) -> Result<String, StoreError> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| StoreError("bad utf-8 in record".into()))
    }
    fn table(&mut self) -> Result<FieldTable, StoreError> {
        let (rest, t) = parse_field_table(self.0)
            .map_err(|_| StoreError("bad field table in record".into()))?;
        self.0 = rest;
        Ok(t)
    }
}

fn dest_parts(d: &Destination) -> (u8, &str) {
    match d {
        Destination::Queue(q) => (b'q', q),
        Destination::Exchange(e) => (b'e', e),
    }
}

impl ExchangeDef {
    /// Definition key.
    pub fn key(vhost: &str, name: &str) -> Vec<u8> {
        let mut k = vec![b'e'];
        put_str(&mut k, vhost);
        put_str(&mut k, name);
        k
    }
    /// Encoded value.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        put_str(&mut v, &self.vhost);
        put_str(&mut v, &self.name);
        put_str(&mut v, &self.kind);
        v.push(self.auto_delete as u8);
        v.push(self.internal as u8);
        put_table(&mut v, &self.arguments);
        // appended last, so records of older versions (without it) still decode
        if let Some(id) = self.room_id {
            v.extend_from_slice(&id.to_be_bytes());
        }
        v
    }
    fn decode(b: &[u8]) -> Result<Self, StoreError> {
        let mut r = Reader(b);
        Ok(Self {
            vhost: r.str()?,
            name: r.str()?,
            kind: r.str()?,
            auto_delete: r.u8()? != 0,
            internal: r.u8()? != 0,
            arguments: r.table()?,
            room_id: if r.0.is_empty() { None } else { Some(r.u64()?) },
        })
    }
}

impl QueueDef {
    /// Definition key.
    pub fn key(vhost: &str, name: &str) -> Vec<u8> {
        let mut k = vec![b'q'];
        put_str(&mut k, vhost);
        put_str(&mut k, name);
        k
    }
    /// Encoded value.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        put_str(&mut v, &self.vhost);
        put_str(&mut v, &self.name);
        v.extend_from_slice(&self.id.to_be_bytes());
        v.push(self.auto_delete as u8);
        put_table(&mut v, &self.arguments);
        // appended last, so records of older versions (without it) still decode
        if let Some(home) = &self.home {
            put_str(&mut v, home);
            // after the home, for the same reason (a record with members has a home)
            if !self.members.is_empty() {
                v.extend_from_slice(&(self.members.len() as u32).to_be_bytes());
                for m in &self.members {
                    put_str(&mut v, m);
                }
            }
        }
        v
    }
    fn decode(b: &[u8]) -> Result<Self, StoreError> {
        let mut r = Reader(b);
        Ok(Self {
            vhost: r.str()?,
            name: r.str()?,
            id: r.u64()?,
            auto_delete: r.u8()? != 0,
            arguments: r.table()?,
            home: if r.0.is_empty() { None } else { Some(r.str()?) },
            members: if r.0.is_empty() {
                Vec::new()
            } else {
                let n = r.u32()?;
                (0..n).map(|_| r.str()).collect::<Result<_, _>>()?
            },
        })
    }
}

impl BindingDef {
    /// The prefix of every binding record of `vhost` (a metadata proposer lists them to
    /// delete those of a deleted queue or exchange).
    pub fn vhost_prefix(vhost: &str) -> Vec<u8> {
        let mut k = vec![b'b'];
        put_str(&mut k, vhost);
        k
    }
    /// The prefix of the binding records whose source is exchange `source`.
    pub fn source_prefix(vhost: &str, source: &str) -> Vec<u8> {
        let mut k = Self::vhost_prefix(vhost);
        put_str(&mut k, source);
        k
    }
    /// Whether the binding record `key` (of `vhost_prefix`'s form) names `dest` as its
    /// destination: read from the key's leading fields, without decoding the rest (a
    /// deleted queue's bindings are found among all of a vhost's this way).
    pub fn key_has_destination(key: &[u8], dest: &Destination) -> bool {
        fn skip_str(b: &[u8]) -> Option<&[u8]> {
            let len = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
            b.get(4 + len..)
        }
        let (kind, name) = dest_parts(dest);
        let fields = key.strip_prefix(b"b").and_then(skip_str).and_then(skip_str);
        let Some((&k, rest)) = fields.and_then(|f| f.split_first()) else {
            return false;
        };
        let Some(len) = rest.get(..4).and_then(|l| l.try_into().ok()) else {
            return false;
        };
        let len = u32::from_be_bytes(len) as usize;
        k == kind && rest.get(4..4 + len) == Some(name.as_bytes())
    }
    /// Definition key: a binding's identity is all of its fields.
    pub fn key(&self) -> Vec<u8> {
        let mut k = vec![b'b'];
        k.extend_from_slice(&self.encode());
        k
    }
    /// Encoded value.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        put_str(&mut v, &self.vhost);
        put_str(&mut v, &self.source);
        let (kind, name) = dest_parts(&self.destination);
        v.push(kind);
        put_str(&mut v, name);
        put_str(&mut v, &self.routing_key);
        put_table(&mut v, &self.arguments);
        v
    }
    fn decode(b: &[u8]) -> Result<Self, StoreError> {
        let mut r = Reader(b);
        let vhost = r.str()?;
        let source = r.str()?;
        let kind = r.u8()?;
        let name: Arc<str> = r.str()?.into();
        let destination = match kind {
            b'q' => Destination::Queue(name),
            b'e' => Destination::Exchange(name),
            _ => return Err(StoreError("bad binding destination".into())),
        };
        Ok(Self {
            vhost,
            source,
            destination,
            routing_key: r.str()?,
            arguments: r.table()?,
        })
    }
}

/// Decodes definition records; undecodable ones are returned as errors with their key.
pub fn decode_definitions(records: Vec<(Vec<u8>, Vec<u8>)>) -> (Definitions, Vec<StoreError>) {
    let mut d = Definitions::default();
    let mut errors = Vec::new();
    for (k, v) in records {
        let res = match k.first() {
            Some(b'e') => ExchangeDef::decode(&v).map(|x| d.exchanges.push(x)),
            Some(b'q') => QueueDef::decode(&v).map(|x| d.queues.push(x)),
            Some(b'b') => BindingDef::decode(&v).map(|x| d.bindings.push(x)),
            _ => Ok(()),
        };
        if let Err(e) = res {
            errors.push(StoreError(format!(
                "definition record {:?}: {e}",
                String::from_utf8_lossy(&k)
            )));
        }
    }
    (d, errors)
}

/// Encodes a message for the store: exchange, routing key, property bytes as published,
/// body.
pub fn encode_message(m: &Message) -> Vec<u8> {
    let mut v = Vec::with_capacity(
        16 + m.exchange.len() + m.routing_key.len() + m.raw_properties.len() + m.body.len(),
    );
    v.push(1); // format version
    put_str(&mut v, &m.exchange);
    put_str(&mut v, &m.routing_key);
    v.extend_from_slice(&(m.raw_properties.len() as u32).to_be_bytes());
    v.extend_from_slice(&m.raw_properties);
    v.extend_from_slice(&m.body);
    v
}

/// Decodes a stored message record.
pub fn decode_message(b: &[u8], persist_id: u64) -> Result<Message, StoreError> {
    let mut r = Reader(b);
    if r.u8()? != 1 {
        return Err(StoreError("unknown message record version".into()));
    }
    let exchange = r.str()?;
    let routing_key = r.str()?;
    let n = r.u32()? as usize;
    let raw = r.take(n)?.to_vec();
    let (_, properties) = parse_properties(&raw[..])
        .map_err(|_| StoreError("bad properties in message record".into()))?;
    Ok(Message {
        exchange: exchange.into(),
        routing_key: routing_key.into(),
        properties: properties.into(),
        raw_properties: Bytes::from(raw),
        body: Bytes::copy_from_slice(r.0),
        persist_id: Some(persist_id),
        // the index keeps the arrival time; the caller sets it from there
        arrival_ms: 0,
    })
}

/// Decodes a stored message record held in `b` without copying it: the property bytes
/// and the body are slices of `b` (a stream chunk read back is one buffer shared by its
/// messages).
pub fn decode_message_shared(b: &Bytes, persist_id: u64) -> Result<Message, StoreError> {
    let mut r = Reader(&b[..]);
    if r.u8()? != 1 {
        return Err(StoreError("unknown message record version".into()));
    }
    let exchange = r.str()?;
    let routing_key = r.str()?;
    let n = r.u32()? as usize;
    let start = b.len() - r.0.len();
    let raw = b.slice(start..start + n.min(r.0.len()));
    r.take(n)?;
    let (_, properties) = parse_properties(&raw[..])
        .map_err(|_| StoreError("bad properties in message record".into()))?;
    Ok(Message {
        exchange: exchange.into(),
        routing_key: routing_key.into(),
        properties: properties.into(),
        raw_properties: raw,
        body: b.slice(b.len() - r.0.len()..),
        persist_id: Some(persist_id),
        arrival_ms: 0,
    })
}

/// Publisher confirms that must wait for an fsync: writes are noted as they happen, a
/// flush takes everything noted so far, and only its completion settles them. A publish
/// noted while a flush runs waits for the next one (group commit: many publishes, one
/// flush).
#[derive(Debug, Default)]
pub struct GroupCommit {
    noted: Vec<u64>,
    in_flight: Option<Vec<u64>>,
}

impl GroupCommit {
    /// A publish with sequence number `seq` was written to the store.
    pub fn note(&mut self, seq: u64) {
        self.noted.push(seq);
    }

    /// Whether a flush should be requested now (writes waiting and none in flight).
    pub fn start(&mut self) -> bool {
        if self.in_flight.is_some() || self.noted.is_empty() {
            return false;
        }
        self.in_flight = Some(std::mem::take(&mut self.noted));
        true
    }

    /// The flush finished; returns the publishes it covers, to ack (ok) or nack.
    pub fn finished(&mut self) -> Vec<u64> {
        self.in_flight.take().unwrap_or_default()
    }

    /// Whether anything waits for a flush.
    pub fn is_idle(&self) -> bool {
        self.noted.is_empty() && self.in_flight.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{AMQPValue, LongString};
    use std::cell::RefCell;

    #[test]
    fn definitions_round_trip() {
        let mut args = FieldTable::default();
        args.insert("x-a".into(), AMQPValue::LongString(LongString::from("v")));
        let x = ExchangeDef {
            vhost: "/".into(),
            name: "x".into(),
            kind: "topic".into(),
            auto_delete: false,
            internal: true,
            arguments: args.clone(),
            room_id: None,
        };
        let delayed = ExchangeDef {
            name: "d".into(),
            kind: "x-delayed-message".into(),
            room_id: Some(42),
            ..x.clone()
        };
        let q = QueueDef {
            vhost: "/".into(),
            name: "q".into(),
            id: 7,
            auto_delete: false,
            arguments: args.clone(),
            home: None,
            members: Vec::new(),
        };
        let b = BindingDef {
            vhost: "/".into(),
            source: "x".into(),
            destination: Destination::Queue("q".into()),
            routing_key: "a.#".into(),
            arguments: args,
        };
        let records = vec![
            (ExchangeDef::key("/", "d"), delayed.encode()),
            (ExchangeDef::key("/", "x"), x.encode()),
            (QueueDef::key("/", "q"), q.encode()),
            (b.key(), b.encode()),
            (b"e-broken".to_vec(), vec![1, 2]),
        ];
        let (d, errors) = decode_definitions(records);
        assert_eq!(d.exchanges, vec![delayed, x]);
        assert_eq!(d.queues, vec![q]);
        assert_eq!(d.bindings, vec![b]);
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn a_queue_record_keeps_its_home_node_and_older_records_have_none() {
        let mut q = QueueDef {
            vhost: "/".into(),
            name: "q".into(),
            id: 7,
            auto_delete: true,
            arguments: FieldTable::default(),
            home: None,
            members: Vec::new(),
        };
        let old = q.encode();
        q.home = Some("broker-2@cluster".into());
        let records = vec![(QueueDef::key("/", "q"), q.encode())];
        assert_eq!(decode_definitions(records).0.queues, vec![q.clone()]);
        let (d, _) = decode_definitions(vec![(QueueDef::key("/", "q"), old)]);
        assert_eq!(d.queues[0].home, None);
        // a quorum queue's members follow the home; a record without them has none
        let home_only = q.encode();
        q.members = vec!["broker-2@cluster".into(), "broker-1@cluster".into()];
        let records = vec![(QueueDef::key("/", "q"), q.encode())];
        assert_eq!(decode_definitions(records).0.queues, vec![q.clone()]);
        let (d, _) = decode_definitions(vec![(QueueDef::key("/", "q"), home_only)]);
        assert!(d.queues[0].members.is_empty());
    }

    #[test]
    fn shared_decoding_gives_the_same_message_without_copies() {
        let m = Message {
            exchange: "x".into(),
            routing_key: "rk".into(),
            properties: Default::default(),
            raw_properties: Bytes::from_static(&[0, 0]),
            body: Bytes::from_static(b"hello"),
            persist_id: None,
            arrival_ms: 0,
        };
        let rec = Bytes::from(encode_message(&m));
        let d = decode_message_shared(&rec, 3).unwrap();
        assert_eq!((&*d.exchange, &*d.routing_key), ("x", "rk"));
        assert_eq!(&d.body[..], b"hello");
        assert_eq!(&d.raw_properties[..], &[0, 0]);
        assert_eq!(d.body.as_ptr(), rec[rec.len() - 5..].as_ptr());
        assert!(decode_message_shared(&rec.slice(..rec.len() - 8), 3).is_err());
    }

    #[test]
    fn message_round_trip_and_truncation() {
        let raw = Bytes::from_static(&[0x10, 0x00, 2]); // delivery-mode 2
        let m = Message {
            exchange: "ex".into(),
            routing_key: "rk".into(),
            properties: Default::default(),
            raw_properties: raw,
            body: Bytes::from_static(b"body"),
            persist_id: None,
            arrival_ms: 0,
        };
        let rec = encode_message(&m);
        let back = decode_message(&rec, 9).unwrap();
        assert_eq!(&back.body[..], b"body");
        assert_eq!(back.properties.delivery_mode(), &Some(2));
        assert_eq!(back.persist_id, Some(9));
        for cut in 0..rec.len() - 4 {
            assert!(decode_message(&rec[..cut], 9).is_err() || cut > 20);
        }
    }

    #[test]
    fn a_binding_key_names_its_destination() {
        let b = BindingDef {
            vhost: "/".into(),
            source: "x".into(),
            destination: Destination::Queue("q1".into()),
            routing_key: "k".into(),
            arguments: FieldTable::default(),
        };
        let key = b.key();
        assert!(key.starts_with(&BindingDef::source_prefix("/", "x")));
        assert!(BindingDef::key_has_destination(
            &key,
            &Destination::Queue("q1".into())
        ));
        assert!(!BindingDef::key_has_destination(
            &key,
            &Destination::Queue("q".into())
        ));
        assert!(!BindingDef::key_has_destination(
            &key,
            &Destination::Exchange("q1".into())
        ));
        assert!(!BindingDef::key_has_destination(
            b"b\0",
            &Destination::Queue("q1".into())
        ));
    }

    #[test]
    fn keys_sort_by_queue_then_sequence() {
        assert!(message_key(1, 500) < message_key(2, 1));
        assert!(message_key(1, 1) < message_key(1, 256));
        assert!(delivered_mark_key(3)[..] > message_key(3, u64::MAX - 1)[..]);
        assert!(delivered_mark_key(3)[..] < message_key(4, 0)[..]);
    }

    /// A store wrapper that records the order of events: no confirm goes out before the
    /// flush that covers its write.
    #[test]
    fn confirms_wait_for_the_flush_that_covers_them() {
        let log = RefCell::new(Vec::<String>::new());
        let mut g = GroupCommit::default();
        let write = |g: &mut GroupCommit, seq: u64| {
            log.borrow_mut().push(format!("write {seq}"));
            g.note(seq);
        };
        write(&mut g, 1);
        write(&mut g, 2);
        assert!(g.start());
        log.borrow_mut().push("flush start".into());
        write(&mut g, 3); // arrives during the flush: not covered by it
        assert!(!g.start());
        log.borrow_mut().push("flush done".into());
        for s in g.finished() {
            log.borrow_mut().push(format!("confirm {s}"));
        }
        assert!(g.start());
        log.borrow_mut().push("flush start".into());
        log.borrow_mut().push("flush done".into());
        for s in g.finished() {
            log.borrow_mut().push(format!("confirm {s}"));
        }
        assert!(g.is_idle());
        let log = log.into_inner();
        for seq in 1..=3 {
            let w = log
                .iter()
                .position(|e| *e == format!("write {seq}"))
                .unwrap();
            let c = log
                .iter()
                .position(|e| *e == format!("confirm {seq}"))
                .unwrap();
            let covering_flush_done = log[w..c].iter().any(|e| e == "flush done");
            let flush_started_after_write = log[w..c].iter().any(|e| e == "flush start");
            assert!(
                covering_flush_done && flush_started_after_write,
                "confirm {seq} before its flush: {log:?}"
            );
        }
    }
}
