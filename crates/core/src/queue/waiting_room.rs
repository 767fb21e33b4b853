//! A queue state in *waiting-room* mode: the hidden queue of an `x-delayed-message`
//! exchange (`QueueArgs::waiting_room`). Every message it takes waits in the
//! [`super::retry::Delayed`] set (the one delayed retry uses: by due time, persisted
//! messages past 8 MiB held as store references) until arrival + its `x-delay`; then,
//! instead of becoming ready, it goes to an outbox the actor empties with
//! [`QueueState::take_forwards`] and routes through the exchange. No consumer ever
//! sees the queue; TTLs and limits do not apply in it (a message's `expiration` counts
//! in the queue it is routed to, from then, as with the plugin).
//!
//! A stored message's due time survives a restart without reading its record: the
//! publish path writes the delay into the index entry's TTL field, next to the arrival
//! time, and [`QueueState::publish_recovered`] adds them up.

use super::retry::Waiting;
use super::{Entry, MsgId, QueueState};
use crate::exchange::delayed::delay_of;
use crate::message::{Message, Meta, Slot};
use std::sync::Arc;

impl<C> QueueState<C> {
    /// Whether this state is a delayed exchange's waiting room.
    pub fn is_waiting_room(&self) -> bool {
        self.args.waiting_room
    }

    /// Takes a message into the waiting room: due at its arrival plus its `x-delay`.
    pub(super) fn hold(&mut self, msg: Arc<Message>) -> MsgId {
        let meta = msg.meta();
        let delay = delay_of(msg.properties.headers().as_ref()).unwrap_or(0);
        let arrival = if meta.arrival_ms == 0 {
            self.now
        } else {
            meta.arrival_ms
        };
        self.hold_slot(Slot::Loaded(msg), meta, arrival.saturating_add(delay))
    }

    /// Takes back a message the store kept: due at the arrival plus the delay its index
    /// entry carries as a TTL.
    pub(super) fn hold_recovered(&mut self, msg: Slot, meta: Meta) -> MsgId {
        let due = meta.arrival_ms.saturating_add(meta.ttl_ms.unwrap_or(0));
        self.hold_slot(msg, meta, due)
    }

    fn hold_slot(&mut self, msg: Slot, meta: Meta, due: u64) -> MsgId {
        let id = self.next_id;
        self.next_id += 1;
        self.delayed.insert(Waiting {
            due,
            to_back: false,
            entry: Entry {
                id,
                msg,
                redelivered: false,
                priority: meta.priority,
                returns: 0,
                body_len: meta.body_len,
                expires_at: None,
            },
        });
        id
    }

    /// Moves the messages due now to the forwarding outbox.
    pub(super) fn release_due(&mut self) {
        let due = self.delayed.take_due(self.now);
        self.forwards.extend(due.into_iter().map(|w| w.entry));
    }

    /// Takes the messages whose wait is over, earliest first, for the actor to route.
    pub fn take_forwards(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.forwards)
    }

    /// When the next waiting message is due (ms since the epoch).
    pub fn next_due(&self) -> Option<u64> {
        self.delayed.next_due()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::QueueArgs;
    use amq_protocol::protocol::basic::AMQPProperties;
    use amq_protocol::types::{AMQPValue, FieldTable};

    fn room() -> QueueState<()> {
        QueueState::new(QueueArgs {
            waiting_room: true,
            ..QueueArgs::default()
        })
    }

    fn delayed(body: &str, delay: i64, arrival: u64) -> Arc<Message> {
        let mut h = FieldTable::default();
        h.insert("x-delay".into(), AMQPValue::LongLongInt(delay));
        let props = AMQPProperties::default()
            .with_headers(h)
            .with_expiration("1".into());
        Arc::new(Message {
            exchange: "d".into(),
            routing_key: "k".into(),
            properties: props.into(),
            raw_properties: bytes::Bytes::from_static(&[0, 0]),
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
            persist_id: None,
            arrival_ms: arrival,
        })
    }

    fn bodies(v: &[Entry]) -> Vec<String> {
        v.iter()
            .map(|e| match &e.msg {
                Slot::Loaded(m) => String::from_utf8_lossy(&m.body).into_owned(),
                Slot::Paged { .. } => "paged".into(),
            })
            .collect()
    }

    #[test]
    fn messages_leave_by_due_time_not_arrival_and_never_become_ready() {
        let mut s = room();
        s.tick(1000);
        s.publish(delayed("late", 500, 1000));
        s.publish(delayed("early", 100, 1000));
        s.publish(delayed("middle", 200, 1050));
        assert_eq!(s.ready_count(), 0);
        assert_eq!(s.delayed_count(), 3);
        assert_eq!(s.next_expiry(), Some(1100));
        s.tick(1099);
        s.expire();
        assert!(s.take_forwards().is_empty());
        s.tick(1250);
        s.expire();
        assert_eq!(bodies(&s.take_forwards()), ["early", "middle"]);
        // a message's own TTL does not apply while it waits
        assert!(s.take_dead().is_empty());
        s.tick(5000);
        s.expire();
        assert_eq!(bodies(&s.take_forwards()), ["late"]);
        assert_eq!(s.delayed_count(), 0);
        assert_eq!(s.ready_count(), 0);
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn a_recovered_message_is_due_at_arrival_plus_the_stored_delay() {
        let mut s = room();
        s.tick(10_000);
        let m = delayed("x", 300, 9_000);
        let meta = Meta {
            ttl_ms: Some(300),
            ..m.meta()
        };
        s.publish_recovered(
            Slot::Paged {
                persist_id: 4,
                size: 10,
            },
            meta,
            true,
        );
        assert_eq!(s.next_due(), Some(9_300));
        s.expire();
        let out = s.take_forwards();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].msg.persist_id(), Some(4));
    }
}
