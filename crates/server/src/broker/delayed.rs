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
//! - **Out**: due messages are routed by the exchange's `x-delayed-type` rules
//!   ([`QueueHost::forward`]), stored for durable target queues, and only then removed
//!   from the room's store: a crash in between delivers twice, never loses.
//! - **Durable**: a durable delayed exchange's record carries the room's store id
//!   (`ExchangeDef::room_id`), so its stored messages come back at start with their due
//!   times (arrival + delay, both in the index entry). In a cluster every node runs its
//!   own room: a delayed message waits on the node that took the publish.

use crate::broker::publish::Routed;
use crate::broker::queue::{QueueActor, QueueEntry, QueueHost, QueueKind, ROOM_PREFIX};
use crate::broker::vhost::VHost;
use broker_core::args::QueueArgs;
use broker_core::exchange::delayed::{delay_of, delivered_headers};
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
        x: &crate::broker::exchange::ExchangeEntry,
        headers: Option<&FieldTable>,
    ) -> Option<Arc<QueueEntry>> {
        let room = x.room.as_ref()?;
        delay_of(headers)?;
        Some(room.clone())
    }

    /// Routes a message whose delay is over through delayed exchange `exchange`, as
    /// published now: its `x-delay` negated (as the plugin does), stored for the durable
    /// queues it reaches. A message no binding takes is dropped, as by the plugin (no
    /// publisher is left to return it to).
    pub(crate) fn route_delayed(&self, exchange: &str, msg: &Message, delay_ms: u64) {
        let Some(x) = self.exchange(exchange) else {
            tracing::debug!(%exchange, "delayed exchange gone: its due message is dropped");
            return;
        };
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
        self.route(&x, &copy.routing_key, Some(&copy.properties), &mut queues);
        if queues.is_empty() {
            return;
        }
        let routed = Routed::new(
            queues.into(),
            copy.properties.headers().as_ref(),
            copy.body.len(),
        );
        if let Err(e) = routed.store(self.node.store.as_ref(), &mut copy) {
            tracing::error!(%exchange, "cannot store a delayed message for its queues: {e}");
        }
        routed.deliver(&Arc::new(copy), |_| {});
    }
}

impl crate::broker::exchange::ExchangeEntry {
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
