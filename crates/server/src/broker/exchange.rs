//! The exchange actor: owns one exchange's bindings and publishes an immutable snapshot of
//! them after every change. Channels route from the snapshot; no publish ever passes
//! through this actor.

use crate::broker::supervise::{self, Kind, Supervisable};
use actix::prelude::*;
use arc_swap::ArcSwap;
use broker_core::routing::{Binding, Bindings, Destination, ExchangeKind};
use broker_core::AmqpError;
use broker_wire::types::FieldTable;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What the vhost knows of an exchange: its declared properties, the address of its actor
/// and the snapshot of its bindings that channels route with.
pub struct ExchangeEntry {
    /// Name within the vhost.
    pub name: Arc<str>,
    /// Type.
    pub kind: ExchangeKind,
    /// Survives restarts.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Clients may not publish to it directly.
    pub internal: bool,
    /// Declared arguments.
    pub arguments: FieldTable,
    /// The alternate exchange its policy names (a declared `alternate-exchange`
    /// argument wins over it).
    pub policy_ae: arc_swap::ArcSwapOption<String>,
    /// The bindings as last published by the actor.
    pub bindings: Arc<ArcSwap<Bindings>>,
    /// The owning actor.
    pub addr: Addr<ExchangeActor>,
    /// Set by the actor when the exchange is going away (deleted, or auto-deleted by
    /// its last unbind): a declare of the name then makes a new exchange instead of
    /// answering for the dying one, and the vhost forgets it under the name's lock.
    pub dying: Arc<AtomicBool>,
    /// `x-message-deduplication`: duplicates are not routed (checked in
    /// `publish::client_route`); `None` for most exchanges.
    pub dedup: Option<Arc<crate::broker::dedup::Deduper>>,
    /// An `x-delayed-message` exchange's waiting room (`broker/delayed.rs`): where a
    /// message with `x-delay` > 0 waits; `None` for other types.
    pub room: Option<Arc<crate::broker::queue::QueueEntry>>,
    /// The JSON Schema its publishes are checked with (`x-schema` or a policy's
    /// `schema`), replaced when a policy or the registry changes; `None` for most
    /// exchanges. Channels cache it with their routes.
    pub schema: arc_swap::ArcSwapOption<crate::broker::schemas::Attached>,
    /// Messages that failed its schema (`message_stats.schema_invalid`).
    pub schema_invalid: Arc<std::sync::atomic::AtomicU64>,
}

/// The actor owning one exchange's bindings.
pub struct ExchangeActor {
    name: Arc<str>,
    auto_delete: bool,
    bindings: Bindings,
    snapshot: Arc<ArcSwap<Bindings>>,
    /// Its vhost's name (for messages).
    vhost: Arc<str>,
    /// Shared with the entry (see [`ExchangeEntry::dying`]); no binding is added after.
    dying: Arc<AtomicBool>,
}

impl ExchangeActor {
    /// Starts the actor for a new exchange on a worker, under a supervisor.
    pub fn spawn(
        arbiter: &ArbiterHandle,
        name: Arc<str>,
        kind: ExchangeKind,
        arguments: &FieldTable,
        auto_delete: bool,
        vhost: Arc<str>,
    ) -> (Addr<ExchangeActor>, Arc<ArcSwap<Bindings>>, Arc<AtomicBool>) {
        // the type's index reads the declare arguments once (a consistent-hash
        // exchange's hash-header); every later snapshot is a clone of it
        let empty = Bindings::with_arguments(kind, arguments);
        let snapshot = Arc::new(ArcSwap::from_pointee(empty.clone()));
        let snap = snapshot.clone();
        let dying = Arc::new(AtomicBool::new(false));
        let dying2 = dying.clone();
        let addr = supervise::start_in_arbiter(arbiter, move |_| ExchangeActor {
            name,
            auto_delete,
            bindings: empty,
            snapshot: snap,
            vhost,
            dying: dying2,
        });
        (addr, snapshot, dying)
    }

    fn publish(&mut self) {
        self.snapshot.store(Arc::new(self.bindings.clone()));
    }

    /// auto-delete: an exchange that loses its last binding goes away. The actor only
    /// marks it; the vhost operation that removed the binding sees the mark and forgets
    /// the exchange under its lock (so a bind cannot slip in between).
    fn maybe_auto_delete(&mut self, had: usize) {
        if self.auto_delete && had > 0 && self.bindings.is_empty() {
            self.dying.store(true, Ordering::Release);
        }
    }

    fn is_dying(&self) -> bool {
        self.dying.load(Ordering::Acquire)
    }

    fn vhost_name(&self) -> String {
        self.vhost.to_string()
    }
}

impl Actor for ExchangeActor {
    type Context = Context<Self>;
}

impl Supervised for ExchangeActor {
    /// After a panic: back to the last committed bindings (the snapshot published after
    /// the last bind or unbind that finished; durable ones are also in the store), so a
    /// change the panic interrupted is neither half-applied nor routed.
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.bindings = (**self.snapshot.load()).clone();
        tracing::warn!(exchange = %self.name, vhost = %self.vhost, bindings = self.bindings.len(), "exchange restarted from its committed bindings");
    }
}

impl Supervisable for ExchangeActor {
    const KIND: Kind = Kind::Exchange;
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::broker::fault::Fault> for ExchangeActor {
    type Result = ();
    fn handle(&mut self, f: crate::broker::fault::Fault, ctx: &mut Context<Self>) {
        crate::broker::fault::inject(f.at, ctx);
    }
}

/// Adds a binding. Replies whether it was new; 404 if the exchange is going away.
#[derive(Message)]
#[rtype(result = "Result<bool, AmqpError>")]
pub struct Bind(pub Binding);

/// Removes a binding. Replies whether it existed.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Unbind(pub Binding);

/// Removes every binding to a deleted queue or exchange; replies with those removed.
#[derive(Message)]
#[rtype(result = "Vec<Binding>")]
pub struct RemoveDestination(pub Destination);

/// Asks to delete the exchange (checking if-unused).
#[derive(Message)]
#[rtype(result = "Result<(), AmqpError>")]
pub struct Delete {
    /// Refuse if the exchange has bindings.
    pub if_unused: bool,
}

/// Lists the bindings (for inspection and tests).
#[derive(Message)]
#[rtype(result = "Vec<Binding>")]
pub struct ListBindings;

impl Handler<Bind> for ExchangeActor {
    type Result = Result<bool, AmqpError>;
    fn handle(&mut self, msg: Bind, _: &mut Context<Self>) -> Self::Result {
        if self.is_dying() {
            return Err(AmqpError::not_found(format!(
                "no exchange '{}' in vhost '{}'",
                self.name,
                self.vhost_name()
            )));
        }
        let added = self.bindings.add(msg.0);
        if added {
            self.publish();
        }
        Ok(added)
    }
}

impl Handler<Unbind> for ExchangeActor {
    type Result = bool;
    fn handle(&mut self, msg: Unbind, _: &mut Context<Self>) -> bool {
        let had = self.bindings.len();
        let removed = self.bindings.remove(&msg.0);
        if removed {
            self.publish();
            self.maybe_auto_delete(had);
        }
        removed
    }
}

impl Handler<RemoveDestination> for ExchangeActor {
    type Result = Vec<Binding>;
    fn handle(&mut self, msg: RemoveDestination, _: &mut Context<Self>) -> Vec<Binding> {
        let had = self.bindings.len();
        let gone = self.bindings.remove_destination(&msg.0);
        if !gone.is_empty() {
            self.publish();
            self.maybe_auto_delete(had);
        }
        gone
    }
}

impl Handler<Delete> for ExchangeActor {
    type Result = Result<(), AmqpError>;
    fn handle(&mut self, msg: Delete, _: &mut Context<Self>) -> Self::Result {
        if msg.if_unused && !self.bindings.is_empty() {
            return Err(AmqpError::precondition_failed(format!(
                "exchange '{}' in vhost '{}' in use",
                self.name,
                self.vhost_name()
            )));
        }
        self.dying.store(true, Ordering::Release);
        Ok(())
    }
}

impl Handler<ListBindings> for ExchangeActor {
    type Result = Vec<Binding>;
    fn handle(&mut self, _: ListBindings, _: &mut Context<Self>) -> Vec<Binding> {
        self.bindings.all().cloned().collect()
    }
}
