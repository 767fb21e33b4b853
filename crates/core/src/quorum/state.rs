//! [`QqState`] and its `apply`: one command in, a response and effects out.

use super::*;
use crate::names::ChannelKey;
use crate::queue::{Consumer, Entry, QueueState};
use crate::store::decode_message_shared;
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};

/// How many refused sequence numbers a publisher's record keeps: a retry of a refused
/// publish (its answer lost with a leader) must be refused again, never taken for a
/// duplicate of a stored one and confirmed. A publisher has at most a queue inbox's
/// credit of publishes in flight, far fewer than this.
pub(super) const REFUSED_KEPT: usize = 4096;

/// A consumer's replicated settings and credit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Cons {
    /// Deliveries it may still get before it settles some (or, no-ack, gets credit).
    pub(super) credit: u32,
    /// Deliveries need no ack.
    pub(super) no_ack: bool,
}

/// The state of one quorum queue (see the module's header).
#[derive(Debug)]
pub struct QqState {
    /// The classic queue's rules; a consumer's data is its id.
    pub(super) q: QueueState<ConsumerId>,
    /// The settings.
    pub(super) cfg: QqConfig,
    /// Consumers by id.
    pub(super) consumers: BTreeMap<ConsumerId, Cons>,
    /// Who holds each delivery awaiting ack.
    pub(super) checked: BTreeMap<MsgId, ConsumerId>,
    /// The ChannelKey each channel has in `q`, numbered in order of first use.
    pub(super) channels: BTreeMap<ChanId, u64>,
    /// The next channel number.
    pub(super) next_chan: u64,
    /// The highest sequence number applied per publisher (deduplication).
    pub(super) enqueuers: BTreeMap<PublisherId, u64>,
    /// The latest refused sequence numbers per publisher (at most [`REFUSED_KEPT`]):
    /// a retried publish at or below the publisher's highest is a duplicate to skip,
    /// unless it is one of these, which is refused again.
    pub(super) refused: BTreeMap<PublisherId, VecDeque<u64>>,
    /// reject-publish: the queue went over its limit and refuses publishes until it is
    /// below 80% of it (rabbit_fifo's soft limit).
    pub(super) blocked: bool,
    /// When the queue was last used (x-expires counts from here).
    pub(super) last_used: u64,
    /// The clock: the highest `ts_ms` applied.
    pub(super) now: u64,
}

impl QqState {
    /// A new, empty quorum queue with these settings.
    pub fn new(cfg: QqConfig) -> QqState {
        QqState {
            q: QueueState::new(cfg.queue_args()),
            cfg,
            consumers: BTreeMap::new(),
            checked: BTreeMap::new(),
            channels: BTreeMap::new(),
            next_chan: 1,
            enqueuers: BTreeMap::new(),
            refused: BTreeMap::new(),
            blocked: false,
            last_used: 0,
            now: 0,
        }
    }

    /// The settings.
    pub fn config(&self) -> &QqConfig {
        &self.cfg
    }

    /// Messages ready for delivery.
    pub fn ready_count(&self) -> usize {
        self.q.ready_count()
    }

    /// Copies of up to `count` ready messages from position `offset`, with their
    /// delivery counts (`QueueState::peek`): the management API's browse.
    pub fn peek(&self, offset: usize, count: usize) -> Result<Vec<Entry>, String> {
        self.q.peek(offset, count)
    }

    /// Deliveries awaiting ack.
    pub fn unacked_count(&self) -> usize {
        self.q.unacked_count()
    }

    /// Consumers.
    pub fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    /// When the next ready message at the head expires (the leader's timer proposes a
    /// [`QqOp::Tick`] then).
    pub fn next_expiry(&self) -> Option<u64> {
        self.q.next_expiry()
    }

    /// Applies one command of the log. `_index` is its log index (kept for the paging
    /// of bodies into the log, a later step).
    pub fn apply(&mut self, _index: u64, cmd: &QqCmd) -> (QqResp, Vec<Effect>) {
        // replicas never read a clock; time never runs backwards across leaders
        self.now = self.now.max(cmd.ts_ms);
        self.q.tick(self.now);
        if self.last_used == 0 {
            // x-expires counts from the group's first command (the first leader's)
            self.last_used = self.now;
        }
        let mut fx = Vec::new();
        let resp = match &cmd.op {
            QqOp::Batch(ops) => QqResp::Batch(
                ops.iter()
                    .map(|op| match op {
                        QqOp::Batch(_) => QqResp::Ok,
                        op => self.apply_op(op, &mut fx),
                    })
                    .collect(),
            ),
            op => self.apply_op(op, &mut fx),
        };
        (resp, fx)
    }

    /// One command (of an entry, or of a batch): its answer; its effects go to `fx`.
    fn apply_op(&mut self, op: &QqOp, fx: &mut Vec<Effect>) -> QqResp {
        let resp = match op {
            QqOp::Enqueue { batch } => self.enqueue(batch, fx),
            QqOp::Checkout { consumer, spec } => self.checkout(consumer, spec),
            QqOp::Credit { consumer, credit } => {
                if let Some(c) = self.consumers.get_mut(consumer) {
                    c.credit = c.credit.saturating_add(*credit);
                }
                QqResp::Ok
            }
            QqOp::Settle { channel, ids } => {
                let ids = self.take_checked(*channel, ids);
                self.q.ack(&ids);
                QqResp::Ok
            }
            QqOp::Return { channel, ids } => {
                let ids = self.take_checked(*channel, ids);
                self.q.return_to_back(&ids);
                QqResp::Ok
            }
            QqOp::GiveBack { channel, ids } => {
                let ids = self.take_checked(*channel, ids);
                self.q.give_back(&ids);
                QqResp::Ok
            }
            QqOp::Discard { channel, ids } => {
                let ids = self.take_checked(*channel, ids);
                self.q.discard(&ids);
                QqResp::Ok
            }
            QqOp::Down(d) => {
                self.down(*d, fx);
                QqResp::Ok
            }
            QqOp::Tick => {
                self.q.expire();
                self.check_expires(fx);
                QqResp::Ok
            }
            QqOp::Purge => QqResp::Purged(self.q.purge().count as u64),
            QqOp::UpdateConfig(cfg) => self.configure(cfg.into()),
            QqOp::Configure(cfg) => self.configure(cfg.clone()),
            QqOp::LeaderChanged => {
                self.leader_changed(fx);
                QqResp::Ok
            }
            QqOp::Batch(_) => QqResp::Ok,
        };
        self.deliver(fx);
        if matches!(op, QqOp::Enqueue { .. }) {
            // a TTL of 0 still lets a waiting consumer have the message, then it dies
            self.q.expire_due();
        }
        self.evaluate_limit();
        for (entry, reason) in self.q.take_dead() {
            if let Some(message) = entry.msg.loaded() {
                fx.push(Effect::DeadLetter {
                    message: message.clone(),
                    reason,
                });
            }
        }
        resp
    }

    /// New settings (a policy changed, or the queue started).
    fn configure(&mut self, cfg: QqConfig) -> QqResp {
        self.q.set_args(cfg.queue_args());
        self.cfg = cfg;
        QqResp::Ok
    }

    /// Returned messages waiting out their retry back-off.
    pub fn delayed_count(&self) -> usize {
        self.q.delayed_count()
    }

    /// The ChannelKey of `chan` in the inner state, numbered on first use.
    fn key(&mut self, chan: ChanId) -> ChannelKey {
        let n = match self.channels.get(&chan) {
            Some(n) => *n,
            None => {
                let n = self.next_chan;
                self.next_chan += 1;
                self.channels.insert(chan, n);
                n
            }
        };
        ChannelKey {
            connection: n,
            channel: 0,
        }
    }

    fn enqueue(&mut self, batch: &[Publish], fx: &mut Vec<Effect>) -> QqResp {
        let mut rejected: BTreeMap<PublisherId, Vec<u64>> = BTreeMap::new();
        for p in batch {
            let last = self.enqueuers.entry(p.publisher).or_insert(0);
            if p.seq != 0 && p.seq <= *last {
                // a retry of a publish already applied: refused again if it was refused
                if self
                    .refused
                    .get(&p.publisher)
                    .is_some_and(|r| r.contains(&p.seq))
                {
                    rejected.entry(p.publisher).or_default().push(p.seq);
                }
                continue;
            }
            *last = (*last).max(p.seq);
            let decoded = decode_message_shared(&Bytes::copy_from_slice(&p.message), 0);
            let msg = match decoded {
                Ok(m) if !self.blocked => m,
                _ => {
                    rejected.entry(p.publisher).or_default().push(p.seq);
                    if p.seq != 0 {
                        let kept = self.refused.entry(p.publisher).or_default();
                        if kept.len() == REFUSED_KEPT {
                            kept.pop_front();
                        }
                        kept.push_back(p.seq);
                    }
                    continue;
                }
            };
            let msg = Arc::new(Message {
                persist_id: None,
                arrival_ms: self.now,
                ..msg
            });
            self.q.publish(msg);
            self.evaluate_limit();
        }
        for (publisher, seqs) in &rejected {
            fx.push(Effect::Rejected {
                publisher: *publisher,
                seqs: seqs.clone(),
            });
        }
        if rejected.is_empty() {
            QqResp::Ok
        } else {
            QqResp::Rejected(rejected.into_iter().collect())
        }
    }

    /// reject-publish: over the limit the queue blocks publishes; below 80% of it, it
    /// takes them again (rabbit_fifo's `evaluate_limit`).
    fn evaluate_limit(&mut self) {
        if !self.cfg.reject_publish {
            self.blocked = false;
            return;
        }
        let (len, bytes) = (
            self.q.ready_count() as u64,
            self.q.ready_body_bytes() as u64,
        );
        let over = self.cfg.max_length.is_some_and(|m| len > m)
            || self.cfg.max_length_bytes.is_some_and(|m| bytes > m);
        let soft = |m: u64| m.saturating_mul(8) / 10;
        let below = self.cfg.max_length.is_none_or(|m| len < soft(m))
            && self.cfg.max_length_bytes.is_none_or(|m| bytes < soft(m));
        if over {
            self.blocked = true;
        } else if below {
            self.blocked = false;
        }
    }

    fn checkout(&mut self, id: &ConsumerId, spec: &Checkout) -> QqResp {
        self.last_used = self.now;
        let key = self.key(id.chan);
        match spec {
            Checkout::Consume {
                prefetch,
                no_ack,
                priority,
                exclusive: _,
            } => {
                if self.consumers.contains_key(id) {
                    return QqResp::Ok;
                }
                let c = Consumer {
                    channel: key,
                    tag: id.tag.as_str().into(),
                    no_ack: *no_ack,
                    // RabbitMQ 3.10's quorum queues ignore the exclusive flag
                    exclusive: false,
                    priority: *priority,
                    data: id.clone(),
                };
                if self.q.add_consumer(c, "", "").is_ok() {
                    let credit = if *prefetch == 0 {
                        UNLIMITED_PREFETCH
                    } else {
                        *prefetch
                    };
                    let no_ack = *no_ack;
                    self.consumers.insert(id.clone(), Cons { credit, no_ack });
                }
                QqResp::Ok
            }
            Checkout::Cancel => {
                self.q.remove_consumer(key, &id.tag);
                self.consumers.remove(id);
                QqResp::Ok
            }
            Checkout::Get { no_ack } => {
                let got = self.q.get(key, *no_ack).map(|e| {
                    if !*no_ack {
                        self.checked.insert(e.id, id.clone());
                    }
                    got(&e, self.q.ready_count() as u64)
                });
                QqResp::Got(got)
            }
        }
    }

    /// The ids among `ids` that are checked out on `chan` (others are ignored: a late
    /// settle after a leader change returned them), taken off the books with the
    /// credit they held given back.
    fn take_checked(&mut self, chan: ChanId, ids: &[MsgId]) -> Vec<MsgId> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if self.checked.get(id).is_some_and(|c| c.chan == chan) {
                if let Some(c) = self.checked.remove(id) {
                    if let Some(cons) = self.consumers.get_mut(&c) {
                        cons.credit = cons.credit.saturating_add(1);
                    }
                }
                out.push(*id);
            }
        }
        out
    }

    /// Hands ready messages to consumers with credit, by the queue's rules.
    fn deliver(&mut self, fx: &mut Vec<Effect>) {
        let credits = &mut self.consumers;
        while let Some(d) = self.q.next_delivery(|c, _size| {
            credits.get_mut(&c.data).is_some_and(|cons| {
                let ok = cons.credit > 0;
                if ok {
                    cons.credit -= 1;
                }
                ok
            })
        }) {
            let consumer = d.consumer.data.clone();
            let no_ack = d.consumer.no_ack;
            let e = d.entry;
            let Some(message) = e.msg.loaded().cloned() else {
                continue;
            };
            if !no_ack {
                self.checked.insert(e.id, consumer.clone());
            }
            fx.push(Effect::Deliver {
                consumer,
                msg_id: e.id,
                message,
                redelivered: e.redelivered,
                delivery_count: e.returns,
            });
        }
    }

    fn down(&mut self, d: Down, fx: &mut Vec<Effect>) {
        let gone: Vec<ChanId> = self
            .channels
            .keys()
            .copied()
            .filter(|c| match d {
                Down::Channel(x) => *c == x,
                Down::Node(n) => c.node == n,
            })
            .collect();
        for chan in gone {
            if matches!(d, Down::Node(_)) {
                // its consumers are told, in id order (the map is ordered)
                let lost: Vec<ConsumerId> = self
                    .consumers
                    .keys()
                    .filter(|c| c.chan == chan)
                    .cloned()
                    .collect();
                fx.extend(lost.into_iter().map(|consumer| Effect::ConsumerCancelled {
                    consumer,
                    reason: CancelReason::NodeDown,
                }));
            }
            let key = self.key(chan);
            self.q.channel_closed(key);
            self.consumers.retain(|c, _| c.chan != chan);
            self.checked.retain(|_, c| c.chan != chan);
            self.channels.remove(&chan);
            self.last_used = self.now;
        }
        // a node that comes back numbers its connections anew: forget its publishers
        let kept = |p: &PublisherId| match d {
            Down::Channel(x) => *p != x,
            Down::Node(n) => p.node != n,
        };
        self.enqueuers.retain(|p, _| kept(p));
        self.refused.retain(|p, _| kept(p));
    }

    fn leader_changed(&mut self, fx: &mut Vec<Effect>) {
        let ids = self.q.unacked_ids();
        self.q.requeue_uncounted(&ids);
        self.checked.clear();
        let ids: Vec<ConsumerId> = self.consumers.keys().cloned().collect();
        for id in ids {
            let key = self.key(id.chan);
            self.q.remove_consumer(key, &id.tag);
            fx.push(Effect::ConsumerCancelled {
                consumer: id,
                reason: CancelReason::LeaderChanged,
            });
        }
        self.consumers.clear();
        self.last_used = self.now;
    }

    /// x-expires: unused (no consumer, no basic.get) for that long, the queue goes.
    fn check_expires(&mut self, fx: &mut Vec<Effect>) {
        if let Some(ttl) = self.cfg.expires {
            if self.consumers.is_empty() && self.now.saturating_sub(self.last_used) >= ttl {
                fx.push(Effect::Expired);
            }
        }
    }
}

/// basic.get's answer for an entry.
fn got(e: &Entry, remaining: u64) -> Got {
    let (message, arrival_ms) = match e.msg.loaded() {
        Some(m) => (crate::store::encode_message(m), m.arrival_ms),
        None => (Vec::new(), 0),
    };
    Got {
        msg_id: e.id,
        message,
        arrival_ms,
        redelivered: e.redelivered,
        delivery_count: e.returns,
        remaining,
    }
}
