//! The broker's half of the `x-delayed-message` exchange (broker-core's
//! `exchange::delayed` routes; this holds). Each delayed exchange has a *waiting room*:
//! a classic queue actor in waiting-room mode (`QueueArgs::waiting_room`), kept on the
//! exchange's entry, never in the vhost's queue table, so no client can declare, bind,
//! consume from, purge or list it, and no policy applies to it.
//!
//! - **In**: the publish path (`publish::client_route`, and dead-lettering) routes a
//!   message with `x-delay` > 0 to the room instead of the bindings; the room is then
//!   its only queue, so the usual path stores it (persistent message, durable exchange)
//!   and confirms it after the fsync, and a fast publisher is slowed by the room's
//!   inbox credit as by any queue's. A delayed publish is never returned as unroutable
//!   (the plugin cannot tell its routes before the delay is over either).
//! - **Wait**: the room's state keeps messages by due time; one timer for the earliest.
//! - **Out**: due messages, earliest first, are read back (those held as store
//!   references), routed by the exchange's `x-delayed-type` rules, stored for durable
//!   target queues, and only then removed from the room's store: a crash in between
//!   delivers twice, never loses. A durable room hands them to the node's
//!   delayed-message thread (`broker/worker.rs`) for this, so that the store work (three
//!   or four index operations per durable message) never delays the room's next timer
//!   or the actors sharing its thread; a transient room forwards on its own actor.
//! - **Durable**: a durable delayed exchange's record carries the room's store id
//!   (`ExchangeDef::room_id`), so its stored messages come back at start with their due
//!   times (arrival + delay, both in the index entry). In a cluster every node runs its
//!   own room: a delayed message waits on the node that took the publish.

use crate::broker::exchange::ExchangeEntry;
use crate::broker::publish::Routed;
use crate::broker::queue::{
    load_entry, QueueActor, QueueEntry, QueueHost, QueueKind, StoredAt, ROOM_PREFIX,
};
use crate::broker::vhost::VHost;
use broker_core::args::QueueArgs;
use broker_core::exchange::delayed::{delay_of, delivered_headers};
use broker_core::queue::Entry;
use broker_core::Message;
use broker_wire::types::FieldTable;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

impl VHost {
    /// Starts the waiting room of delayed exchange `exchange` (`store_id`: its messages'
    /// prefix in the message store, for a durable exchange on a broker with a data dir).
    pub(crate) fn create_room(&self, exchange: &str, store_id: Option<u64>) -> Arc<QueueEntry> {
        let name: Arc<str> = format!("{ROOM_PREFIX}{exchange}").into();
        let args = QueueArgs {
            waiting_room: true,
            ..QueueArgs::default()
        };
        let arbiter = self.node.next_arbiter();
        let host: Weak<dyn QueueHost> = self.me.clone();
        let node = self.node.clone();
        Arc::new_cyclic(|me| QueueEntry {
            name: name.clone(),
            durable: store_id.is_some(),
            auto_delete: false,
            exclusive_owner: None,
            arguments: FieldTable::default(),
            addr: QueueActor::spawn(
                &arbiter,
                name.clone(),
                args.clone(),
                me.clone(),
                host,
                node,
                QueueKind::Classic,
            ),
            may_refuse: AtomicBool::new(false),
            args: arc_swap::ArcSwap::from_pointee(args),
            inbox: Default::default(),
            paced: AtomicBool::new(false),
            crowded: AtomicBool::new(false),
            deleted: AtomicBool::new(false),
            store_id,
            vhost_name: self.name.as_str().into(),
            ready: Default::default(),
            waiting: Default::default(),
            counters: Default::default(),
            stream: None,
            quorum: false,
            home: None,
            remote: None,
            quorum_members: Vec::new(),
            dedup: None,
        })
    }

    /// The waiting room a message with these headers goes to when published to `x`:
    /// `Some` for a delayed exchange and an `x-delay` > 0.
    pub(crate) fn room_for(
        x: &ExchangeEntry,
        headers: Option<&FieldTable>,
    ) -> Option<Arc<QueueEntry>> {
        let room = x.room.as_ref()?;
        delay_of(headers)?;
        Some(room.clone())
    }

    /// Forwards the due messages of waiting room `room`: a durable room's on the
    /// delayed-message thread ([`crate::broker::worker::OrderedWorker`]), in order, batch
    /// after batch, since each costs store operations (read back, stored for durable
    /// targets, removed from the room); a transient room's (messages in memory, nothing
    /// to remove) at once, on the room's actor, sparing them a thread hop.
    pub(crate) fn forward_due_from(
        &self,
        room: &Arc<QueueEntry>,
        due: Vec<Entry>,
        store: StoredAt,
    ) {
        let room = Arc::downgrade(room);
        if store.is_none() {
            return self.forward_batch(&room, due, &store);
        }
        let vhost = self.me.clone();
        self.node.delayed_worker.run(move || {
            if let Some(v) = vhost.upgrade() {
                v.forward_batch(&room, due, &store);
            }
        });
    }

    /// Routes messages whose delay is over through the room's exchange, as published
    /// now, stores them for the durable queues they reach, delivers them, and only then
    /// removes them from the room's store (a crash in between delivers twice, never
    /// loses). Nothing is routed if the exchange was deleted meanwhile (its stored
    /// messages went with it), even if one of the same name was declared since.
    fn forward_batch(&self, room: &Weak<QueueEntry>, due: Vec<Entry>, store: &StoredAt) {
        let Some(room) = room.upgrade() else { return };
        if room.deleted.load(Ordering::Acquire) {
            return;
        }
        let name = room.name.strip_prefix(ROOM_PREFIX).unwrap_or(&room.name);
        let x = self
            .exchange(name)
            .filter(|x| x.room.as_ref().is_some_and(|r| Arc::ptr_eq(r, &room)));
        let Some(x) = x else {
            tracing::debug!(exchange = %name, "delayed exchange gone: its due messages are dropped");
            return;
        };
        // every copy is stored before any is delivered: the target queues' inboxes then
        // take them in a burst, with one wake-up each rather than one per message
        let mut routed = Vec::with_capacity(due.len());
        for entry in &due {
            match load_entry(store, entry) {
                Ok(msg) => routed.extend(self.route_due(&x, &msg)),
                Err(e) => tracing::error!(
                    exchange = %name,
                    "a delayed message could not be read back and is lost: {e}"
                ),
            }
        }
        for (to, copy) in &routed {
            to.deliver(copy, |_| {});
        }
        if let Some((s, qid)) = store {
            for pid in due.iter().filter_map(|e| e.msg.persist_id()) {
                if let Err(e) = s.remove(*qid, pid) {
                    tracing::error!(exchange = %name, "cannot remove a forwarded delayed message: {e}");
                }
            }
        }
    }

    /// Routes one message whose delay is over through delayed exchange `x`, as
    /// published now: its `x-delay` negated (as the plugin does), stored for the durable
    /// queues it reaches. `None` if no binding takes it: it is dropped, as by the plugin
    /// (no publisher is left to return it to).
    fn route_due(&self, x: &ExchangeEntry, msg: &Message) -> Option<(Routed, Arc<Message>)> {
        let delay_ms = delay_of(msg.properties.headers().as_ref()).unwrap_or(0);
        let headers = delivered_headers(
            msg.properties
                .headers()
                .as_ref()
                .unwrap_or(&FieldTable::default()),
            delay_ms,
        );
        let props = (*msg.properties).clone().with_headers(headers);
        let mut copy = Message {
            exchange: msg.exchange.clone(),
            routing_key: msg.routing_key.clone(),
            raw_properties: broker_wire::encode::properties(&props),
            properties: props.into(),
            body: msg.body.clone(),
            persist_id: None,
            // TTLs in the queues it reaches count from now
            arrival_ms: crate::broker::node::now_ms(),
        };
        let mut queues = Vec::new();
        self.route(x, &copy.routing_key, Some(&copy.properties), &mut queues);
        if queues.is_empty() {
            return None;
        }
        let routed = Routed::new(
            queues.into(),
            copy.properties.headers().as_ref(),
            copy.body.len(),
        );
        if let Err(e) = routed.store(self.node.store.as_ref(), &mut copy) {
            tracing::error!(exchange = %x.name, "cannot store a delayed message for its queues: {e}");
        }
        Some((routed, Arc::new(copy)))
    }
}

impl ExchangeEntry {
    /// The exchange is gone: its waiting room stops and drops what waits (the stored
    /// messages of a durable one are removed by the caller, with its record).
    pub(crate) fn close_room(&self) {
        if let Some(room) = &self.room {
            room.deleted.store(true, Ordering::Release);
            room.addr.do_send(crate::broker::queue::DeleteQueue {
                if_unused: false,
                if_empty: false,
            });
        }
    }

    /// A delayed exchange's messages waiting, and when the next is due (ms since the
    /// epoch), as its room last reported; `None` for other exchanges.
    pub fn delayed_stats(&self) -> Option<(usize, Option<u64>)> {
        let room = self.room.as_ref()?;
        let n = room.waiting.0.load(Ordering::Relaxed);
        let due = room.waiting.1.load(Ordering::Relaxed);
        Some((n, (due > 0).then_some(due)))
    }
}
