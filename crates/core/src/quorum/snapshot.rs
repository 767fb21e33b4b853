//! Snapshots of a [`QqState`], messages included, so a follower can be sent the state
//! instead of the log. The encoding is serde JSON of a plain record; it depends only on
//! the state (every map is ordered), so two replicas in the same state export the same
//! bytes.

use super::state::Cons;
use super::*;
use crate::names::ChannelKey;
use crate::queue::{Consumer, Entry, QueueSnapshot, QueueState, UnackedEntry};
use crate::store::{decode_message_shared, encode_message};
use bytes::Bytes;

/// A snapshot that cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("quorum queue snapshot: {0}")]
pub struct SnapshotError(String);

/// A queued message as a snapshot holds it.
#[derive(Serialize, Deserialize)]
struct SnapEntry {
    id: MsgId,
    #[serde(with = "serde_bytes")]
    message: Vec<u8>,
    arrival_ms: u64,
    redelivered: bool,
    returns: u32,
    expires_at: Option<u64>,
}

/// A delivery awaiting ack: the message, its channel number in the state and consumer.
#[derive(Serialize, Deserialize)]
struct SnapUnacked {
    entry: SnapEntry,
    channel: u64,
    consumer: Option<String>,
    at: u64,
}

/// A returned message waiting out its retry back-off.
#[derive(Serialize, Deserialize)]
struct SnapDelayed {
    entry: SnapEntry,
    due: u64,
    to_back: bool,
}

/// A consumer in the inner state's order.
#[derive(Serialize, Deserialize)]
struct SnapConsumer {
    id: ConsumerId,
    channel: u64,
    no_ack: bool,
    priority: i64,
    cons: Option<Cons>,
}

#[derive(Serialize, Deserialize)]
struct Snap {
    cfg: QqConfig,
    ready: Vec<SnapEntry>,
    unacked: Vec<SnapUnacked>,
    next_id: MsgId,
    consumers: Vec<SnapConsumer>,
    next_consumer: usize,
    active: Option<(u64, String)>,
    had_consumer: bool,
    checked: Vec<(MsgId, ConsumerId)>,
    channels: Vec<(ChanId, u64)>,
    next_chan: u64,
    enqueuers: Vec<(PublisherId, u64)>,
    /// Absent in snapshots written before refused publishes were remembered.
    #[serde(default)]
    refused: Vec<(PublisherId, Vec<u64>)>,
    blocked: bool,
    last_used: u64,
    now: u64,
    /// Absent in snapshots written before delayed retry.
    #[serde(default)]
    delayed: Vec<SnapDelayed>,
}

fn snap_entry(e: &Entry) -> SnapEntry {
    let (message, arrival_ms) = match e.msg.loaded() {
        Some(m) => (encode_message(m), m.arrival_ms),
        None => (Vec::new(), 0),
    };
    SnapEntry {
        id: e.id,
        message,
        arrival_ms,
        redelivered: e.redelivered,
        returns: e.returns,
        expires_at: e.expires_at,
    }
}

fn entry(s: SnapEntry) -> Result<Entry, SnapshotError> {
    let m = decode_message_shared(&Bytes::from(s.message), 0).map_err(|e| SnapshotError(e.0))?;
    let m = Arc::new(Message {
        persist_id: None,
        arrival_ms: s.arrival_ms,
        ..m
    });
    let meta = m.meta();
    Ok(Entry {
        id: s.id,
        msg: crate::message::Slot::Loaded(m),
        redelivered: s.redelivered,
        priority: meta.priority,
        returns: s.returns,
        body_len: meta.body_len,
        expires_at: s.expires_at,
    })
}

fn key(n: u64) -> ChannelKey {
    ChannelKey {
        connection: n,
        channel: 0,
    }
}

impl QqState {
    /// The whole state, messages included.
    pub fn export(&self) -> Vec<u8> {
        let s = self.q.snapshot();
        let snap = Snap {
            cfg: self.cfg.clone(),
            ready: s.ready.iter().map(snap_entry).collect(),
            unacked: s
                .unacked
                .iter()
                .map(|u| SnapUnacked {
                    entry: snap_entry(&u.entry),
                    channel: u.channel.connection,
                    consumer: u.consumer.as_deref().map(str::to_owned),
                    at: u.at,
                })
                .collect(),
            next_id: s.next_id,
            consumers: s
                .consumers
                .iter()
                .map(|c| SnapConsumer {
                    id: c.data.clone(),
                    channel: c.channel.connection,
                    no_ack: c.no_ack,
                    priority: c.priority,
                    cons: self.consumers.get(&c.data).cloned(),
                })
                .collect(),
            next_consumer: s.next_consumer,
            active: s.active.map(|(k, t)| (k.connection, t.to_string())),
            had_consumer: s.had_consumer,
            checked: self.checked.iter().map(|(k, v)| (*k, v.clone())).collect(),
            channels: self.channels.iter().map(|(k, v)| (*k, *v)).collect(),
            next_chan: self.next_chan,
            enqueuers: self.enqueuers.iter().map(|(k, v)| (*k, *v)).collect(),
            refused: self
                .refused
                .iter()
                .map(|(k, v)| (*k, v.iter().copied().collect()))
                .collect(),
            blocked: self.blocked,
            last_used: self.last_used,
            now: self.now,
            delayed: s
                .delayed
                .iter()
                .map(|w| SnapDelayed {
                    entry: snap_entry(&w.entry),
                    due: w.due,
                    to_back: w.to_back,
                })
                .collect(),
        };
        // a plain record of strings, numbers and byte vectors always serializes
        serde_json::to_vec(&snap).unwrap_or_default()
    }

    /// The state [`QqState::export`] wrote.
    pub fn import(bytes: &[u8]) -> Result<QqState, SnapshotError> {
        let s: Snap = serde_json::from_slice(bytes).map_err(|e| SnapshotError(e.to_string()))?;
        let mut consumers = Vec::with_capacity(s.consumers.len());
        let mut cons = std::collections::BTreeMap::new();
        for c in s.consumers {
            if let Some(x) = c.cons {
                cons.insert(c.id.clone(), x);
            }
            consumers.push(Consumer {
                channel: key(c.channel),
                tag: c.id.tag.as_str().into(),
                no_ack: c.no_ack,
                exclusive: false,
                priority: c.priority,
                data: c.id,
            });
        }
        let mut unacked = Vec::with_capacity(s.unacked.len());
        for u in s.unacked {
            unacked.push(UnackedEntry {
                entry: entry(u.entry)?,
                channel: key(u.channel),
                consumer: u.consumer.map(|t| t.as_str().into()),
                at: u.at,
            });
        }
        let q = QueueState::from_snapshot(QueueSnapshot {
            args: s.cfg.queue_args(),
            ready: s.ready.into_iter().map(entry).collect::<Result<_, _>>()?,
            unacked,
            next_id: s.next_id,
            consumers,
            next_consumer: s.next_consumer,
            active: s.active.map(|(k, t)| (key(k), t.as_str().into())),
            had_consumer: s.had_consumer,
            now: s.now,
            delayed: s
                .delayed
                .into_iter()
                .map(|d| {
                    Ok(crate::queue::retry::Waiting {
                        due: d.due,
                        to_back: d.to_back,
                        entry: entry(d.entry)?,
                    })
                })
                .collect::<Result<_, SnapshotError>>()?,
        });
        Ok(QqState {
            q,
            cfg: s.cfg,
            consumers: cons,
            checked: s.checked.into_iter().collect(),
            channels: s.channels.into_iter().collect(),
            next_chan: s.next_chan,
            enqueuers: s.enqueuers.into_iter().collect(),
            refused: s
                .refused
                .into_iter()
                .map(|(k, v)| (k, v.into_iter().collect()))
                .collect(),
            blocked: s.blocked,
            last_used: s.last_used,
            now: s.now,
        })
    }
}
