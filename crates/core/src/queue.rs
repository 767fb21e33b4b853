//! The state of one queue: ready messages in order, deliveries awaiting ack, consumers in
//! round-robin order. The queue actor owns one of these and does what it decides.
//!
//! `C` is whatever the actor needs to reach a consumer (an address, a flow gate); this
//! module never looks inside it.

use crate::error::AmqpError;
use crate::message::{Message, Slot};
use crate::names::ChannelKey;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// A queue-local message number, increasing in publish order.
pub type MsgId = u64;

/// A message waiting in the queue.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Position in publish order.
    pub id: MsgId,
    /// The shared message, or where to read it back from the store.
    pub msg: Slot,
    /// Whether it was delivered before (so the next delivery carries `redelivered`).
    pub redelivered: bool,
}

/// A delivery not yet acked.
#[derive(Debug, Clone)]
struct Unacked {
    entry: Entry,
    channel: ChannelKey,
}

/// One consumer of this queue.
#[derive(Debug, Clone)]
pub struct Consumer<C> {
    /// The channel it was created on.
    pub channel: ChannelKey,
    /// Its tag, unique on that channel.
    pub tag: Arc<str>,
    /// Deliveries need no ack.
    pub no_ack: bool,
    /// Whether it holds the queue exclusively.
    pub exclusive: bool,
    /// The actor's handle for it.
    pub data: C,
}

/// What to deliver to whom.
#[derive(Debug)]
pub struct Delivery<'a, C> {
    /// The consumer.
    pub consumer: &'a Consumer<C>,
    /// The message.
    pub entry: Entry,
}

/// The queue record.
#[derive(Debug)]
pub struct QueueState<C> {
    /// Messages waiting for a consumer, in id order (requeued ones go back in place).
    ready: VecDeque<Entry>,
    /// Bytes held by `ready` (body and properties).
    ready_bytes: usize,
    /// Delivered messages awaiting ack, by id.
    unacked: HashMap<MsgId, Unacked>,
    /// Bytes held by `unacked`.
    unacked_bytes: usize,
    /// Next message id to assign.
    next_id: MsgId,
    /// Consumers, in the order they subscribed.
    consumers: Vec<Consumer<C>>,
    /// Index of the consumer the next round-robin turn starts at.
    next_consumer: usize,
    /// Whether a consumer ever subscribed (auto-delete applies only after that).
    had_consumer: bool,
}

impl<C> Default for QueueState<C> {
    fn default() -> Self {
        Self {
            ready: VecDeque::new(),
            ready_bytes: 0,
            unacked: HashMap::new(),
            unacked_bytes: 0,
            next_id: 1,
            consumers: Vec::new(),
            next_consumer: 0,
            had_consumer: false,
        }
    }
}

impl<C> QueueState<C> {
    /// An empty state that goes on numbering after this one, for a queue restarted after
    /// a failure: delivery tags that channels still hold for the old state can never
    /// match a new message.
    pub fn emptied(&self) -> Self {
        Self {
            next_id: self.next_id,
            ..Self::default()
        }
    }

    /// Appends a published message.
    pub fn publish(&mut self, msg: Arc<Message>) -> MsgId {
        self.push(Slot::Loaded(msg))
    }

    fn push(&mut self, msg: Slot) -> MsgId {
        let id = self.next_id;
        self.next_id += 1;
        self.ready_bytes += msg.size();
        self.ready.push_back(Entry {
            id,
            msg,
            redelivered: false,
        });
        id
    }

    /// Appends a message recovered from the store (in memory or paged); `delivered` marks
    /// it redelivered.
    pub fn publish_recovered(&mut self, msg: Slot, delivered: bool) -> MsgId {
        let id = self.push(msg);
        if let Some(e) = self.ready.back_mut() {
            e.redelivered = delivered;
        }
        id
    }

    /// The most recently published ready message (to page it out).
    pub fn last_ready_mut(&mut self) -> Option<&mut Entry> {
        self.ready.back_mut()
    }

    /// Messages ready for delivery.
    pub fn ready_count(&self) -> usize {
        self.ready.len()
    }

    /// Messages delivered and not yet acked.
    pub fn unacked_count(&self) -> usize {
        self.unacked.len()
    }

    /// Bytes of ready and unacked messages.
    pub fn bytes(&self) -> usize {
        self.ready_bytes + self.unacked_bytes
    }

    /// Number of consumers.
    pub fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    /// Whether a consumer ever subscribed.
    pub fn had_consumer(&self) -> bool {
        self.had_consumer
    }

    /// The consumers.
    pub fn consumers(&self) -> &[Consumer<C>] {
        &self.consumers
    }

    /// Adds a consumer, enforcing exclusivity as RabbitMQ does (403 ACCESS_REFUSED).
    pub fn add_consumer(&mut self, c: Consumer<C>, queue_name: &str) -> Result<(), AmqpError> {
        if self.consumers.iter().any(|x| x.exclusive) || (c.exclusive && !self.consumers.is_empty())
        {
            return Err(AmqpError::access_refused(format!(
                "queue '{queue_name}' in vhost '/' in exclusive use"
            )));
        }
        self.consumers.push(c);
        self.had_consumer = true;
        Ok(())
    }

    /// Removes a consumer; returns it if it existed.
    pub fn remove_consumer(&mut self, channel: ChannelKey, tag: &str) -> Option<Consumer<C>> {
        let pos = self
            .consumers
            .iter()
            .position(|c| c.channel == channel && &*c.tag == tag)?;
        if pos < self.next_consumer {
            self.next_consumer -= 1;
        }
        Some(self.consumers.remove(pos))
    }

    /// Takes the next ready message for the next consumer in round-robin order that
    /// `can_take` accepts. `can_take` is asked at most once per consumer and, when it says
    /// yes, has reserved room for the delivery.
    pub fn next_delivery(
        &mut self,
        mut can_take: impl FnMut(&Consumer<C>) -> bool,
    ) -> Option<Delivery<'_, C>> {
        if self.ready.is_empty() || self.consumers.is_empty() {
            return None;
        }
        let n = self.consumers.len();
        let start = self.next_consumer % n;
        for i in 0..n {
            let idx = (start + i) % n;
            if can_take(&self.consumers[idx]) {
                self.next_consumer = (idx + 1) % n;
                let entry = self.ready.pop_front()?;
                self.ready_bytes -= entry.msg.size();
                let consumer = &self.consumers[idx];
                if !consumer.no_ack {
                    self.unacked_bytes += entry.msg.size();
                    self.unacked.insert(
                        entry.id,
                        Unacked {
                            entry: entry.clone(),
                            channel: consumer.channel,
                        },
                    );
                }
                return Some(Delivery { consumer, entry });
            }
        }
        None
    }

    /// basic.get: takes the head message; if `no_ack` is false it waits for an ack from
    /// `channel`.
    pub fn get(&mut self, channel: ChannelKey, no_ack: bool) -> Option<Entry> {
        let entry = self.ready.pop_front()?;
        self.ready_bytes -= entry.msg.size();
        if !no_ack {
            self.unacked_bytes += entry.msg.size();
            self.unacked.insert(
                entry.id,
                Unacked {
                    entry: entry.clone(),
                    channel,
                },
            );
        }
        Some(entry)
    }

    /// Acks deliveries; unknown ids are ignored (the channel has already checked its tags).
    /// Returns the acked messages (so the store can forget them).
    pub fn ack(&mut self, ids: &[MsgId]) -> Vec<Entry> {
        let mut out = Vec::new();
        for id in ids {
            if let Some(u) = self.unacked.remove(id) {
                self.unacked_bytes -= u.entry.msg.size();
                out.push(u.entry);
            }
        }
        out
    }

    /// Removes deliveries for good (reject or nack without requeue); returns the messages
    /// so the caller can dead-letter them.
    pub fn discard(&mut self, ids: &[MsgId]) -> Vec<Entry> {
        let mut out = Vec::new();
        for id in ids {
            if let Some(u) = self.unacked.remove(id) {
                self.unacked_bytes -= u.entry.msg.size();
                out.push(u.entry);
            }
        }
        out
    }

    /// Puts deliveries back in their original place. `delivered` marks them redelivered
    /// (false only for deliveries that never reached the client).
    pub fn requeue(&mut self, ids: &[MsgId], delivered: bool) -> usize {
        let mut back: Vec<Entry> = Vec::new();
        for id in ids {
            if let Some(u) = self.unacked.remove(id) {
                self.unacked_bytes -= u.entry.msg.size();
                let mut e = u.entry;
                e.redelivered |= delivered;
                back.push(e);
            }
        }
        self.put_back(back)
    }

    fn put_back(&mut self, mut back: Vec<Entry>) -> usize {
        let n = back.len();
        back.sort_by_key(|e| e.id);
        for e in back.into_iter().rev() {
            self.ready_bytes += e.msg.size();
            match self.ready.front() {
                Some(f) if f.id < e.id => {
                    let pos = self.ready.partition_point(|x| x.id < e.id);
                    self.ready.insert(pos, e);
                }
                _ => self.ready.push_front(e),
            }
        }
        n
    }

    /// Puts back deliveries that never reached a client, unchanged (their consumer was
    /// cancelled while they were on the way).
    /// Ack-mode deliveries are put back only if still unacked (a channel close may
    /// already have requeued them); no-ack ones always.
    pub fn restore(&mut self, entries: Vec<Entry>, no_ack: bool) -> usize {
        let mut back = Vec::new();
        for e in entries {
            if no_ack {
                back.push(e);
            } else if let Some(u) = self.unacked.remove(&e.id) {
                self.unacked_bytes -= u.entry.msg.size();
                back.push(e);
            }
        }
        self.put_back(back)
    }

    /// The channel is gone: drops its consumers and requeues everything it had unacked.
    /// Returns the number of consumers removed.
    pub fn channel_closed(&mut self, channel: ChannelKey) -> usize {
        let before = self.consumers.len();
        self.consumers.retain(|c| c.channel != channel);
        if self.next_consumer >= self.consumers.len() {
            self.next_consumer = 0;
        }
        let ids: Vec<MsgId> = self
            .unacked
            .iter()
            .filter(|(_, u)| u.channel == channel)
            .map(|(id, _)| *id)
            .collect();
        self.requeue(&ids, true);
        before - self.consumers.len()
    }

    /// Drops every ready message; returns them.
    pub fn purge(&mut self) -> Vec<Entry> {
        self.ready_bytes = 0;
        self.ready.drain(..).collect()
    }

    /// Checks queue.delete's if-unused and if-empty conditions.
    pub fn check_delete(
        &self,
        if_unused: bool,
        if_empty: bool,
        name: &str,
    ) -> Result<(), AmqpError> {
        if if_unused && !self.consumers.is_empty() {
            return Err(AmqpError::precondition_failed(format!(
                "queue '{name}' in vhost '/' in use"
            )));
        }
        if if_empty && !self.ready.is_empty() {
            return Err(AmqpError::precondition_failed(format!(
                "queue '{name}' in vhost '/' not empty"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(body: &'static str) -> Arc<Message> {
        Arc::new(Message {
            exchange: "".into(),
            routing_key: "q".into(),
            properties: Default::default(),
            raw_properties: Bytes::from_static(&[0, 0]),
            body: Bytes::from_static(body.as_bytes()),
            persist_id: None,
        })
    }

    const CH: ChannelKey = ChannelKey {
        connection: 1,
        channel: 1,
    };

    fn consumer(tag: &str, no_ack: bool) -> Consumer<()> {
        Consumer {
            channel: CH,
            tag: tag.into(),
            no_ack,
            exclusive: false,
            data: (),
        }
    }

    #[test]
    fn an_emptied_state_never_reuses_ids() {
        let mut q: QueueState<()> = QueueState::default();
        let a = q.publish(msg("a"));
        let mut fresh = q.emptied();
        assert_eq!(fresh.ready_count(), 0);
        assert!(fresh.publish(msg("b")) > a);
    }

    #[test]
    fn round_robin() {
        let mut q = QueueState::default();
        q.add_consumer(consumer("a", true), "q").unwrap();
        q.add_consumer(consumer("b", true), "q").unwrap();
        for b in ["1", "2", "3", "4"] {
            q.publish(msg(b));
        }
        let mut got = vec![];
        while let Some(d) = q.next_delivery(|_| true) {
            got.push(format!(
                "{}{}",
                d.consumer.tag,
                std::str::from_utf8(&d.entry.msg.loaded().unwrap().body).unwrap()
            ));
        }
        assert_eq!(got, vec!["a1", "b2", "a3", "b4"]);
    }

    #[test]
    fn requeue_restores_order_and_marks_redelivered() {
        let mut q: QueueState<()> = QueueState::default();
        for b in ["1", "2", "3"] {
            q.publish(msg(b));
        }
        let a = q.get(CH, false).unwrap();
        let b = q.get(CH, false).unwrap();
        assert_eq!(q.requeue(&[b.id, a.id], true), 2);
        let order: Vec<(MsgId, bool)> = q.ready.iter().map(|e| (e.id, e.redelivered)).collect();
        assert_eq!(order, vec![(1, true), (2, true), (3, false)]);
    }

    #[test]
    fn channel_close_requeues_its_unacked() {
        let mut q = QueueState::default();
        q.add_consumer(consumer("a", false), "q").unwrap();
        q.publish(msg("x"));
        let id = q.next_delivery(|_| true).unwrap().entry.id;
        assert_eq!(q.unacked_count(), 1);
        assert_eq!(q.channel_closed(CH), 1);
        assert_eq!(q.unacked_count(), 0);
        assert_eq!(q.ready_count(), 1);
        assert_eq!(q.ready[0].id, id);
        assert!(q.ready[0].redelivered);
    }

    #[test]
    fn exclusive_consumer_blocks_others() {
        let mut q = QueueState::default();
        let mut c = consumer("a", false);
        c.exclusive = true;
        q.add_consumer(c, "q").unwrap();
        assert_eq!(
            q.add_consumer(consumer("b", false), "q").unwrap_err().code,
            crate::ReplyCode::AccessRefused
        );
    }

    #[test]
    fn refused_consumer_is_skipped() {
        let mut q = QueueState::default();
        q.add_consumer(consumer("a", false), "q").unwrap();
        q.add_consumer(consumer("b", false), "q").unwrap();
        q.publish(msg("1"));
        let d = q.next_delivery(|c| &*c.tag == "b").unwrap();
        assert_eq!(&*d.consumer.tag, "b");
        assert!(q.next_delivery(|_| true).is_none());
    }
}
