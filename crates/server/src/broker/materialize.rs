//! The server's observer of the metadata group (docs/design/cluster.md §2): what an
//! applied entry changed in the definitions keyspace becomes the vhosts' topology
//! (durable exchanges, queues and bindings, with their actors). It is the one code path
//! for every applied change, whoever proposed it: the proposer on this node (which
//! finds the result when its proposal returns) and, once the group has several members,
//! the other nodes.
//!
//! It runs on the group's apply task (the cluster runtime, not an actix arbiter): it
//! never takes the topology's name locks (a proposer holds them while it waits for this
//! very apply) and never waits for an actor. Binding changes are messages (`do_send`)
//! that each exchange takes in order, so a proposer that sends to the same exchange next
//! finds them done. It never fails: a record it cannot use is logged and skipped.
//!
//! Records of users, vhosts, permissions, limits and policies go to `access_apply.rs`.
//!
//! At start, topology changes wait (bounded) while the recovery rebuilds the durable
//! topology from the store, and are applied after it ([`recovered`]): a change applied
//! between the recovery's read of the store and its creating what it read would
//! otherwise be undone (a queue deleted meanwhile created again, from the stale read).
//! Applying a change twice is harmless (an entity that exists is not created again, a
//! removal only removes the entity of that record), so those that the recovery's read
//! already held are simply applied again. Access records apply at once: the recovery
//! needs the vhosts they create.

use crate::broker::exchange;
use crate::broker::runtime::{Deferred, Runtime, Storage};
use crate::broker::vhost::{ExchangeSpec, QueueSpec, VHost};
use broker_cluster::meta::{Change, Materialize};
use broker_core::routing::{Binding, Destination, ExchangeKind};
use broker_core::store::{decode_definitions, BindingDef, Definitions, ExchangeDef, QueueDef};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, Weak};
use tracing::{error, info, warn};

/// Materializes applied metadata into the runtime's vhosts.
pub struct Materializer {
    rt: Weak<Runtime>,
}

impl Materializer {
    /// An observer for `rt` (weak: the group may outlive the runtime at shutdown).
    pub fn new(rt: Weak<Runtime>) -> Materializer {
        Materializer { rt }
    }
}

/// Most topology changes held back during the recovery; past this the recovery is
/// followed by a full reload instead (the changes are in the store already).
const MAX_DEFERRED: usize = 10_000;

/// The materializer's lock (poison is ignored: every section leaves the registries
/// usable). Held by every apply and reload, so they never interleave.
pub(crate) fn lock(rt: &Runtime) -> MutexGuard<'_, Option<Deferred>> {
    rt.materializing.lock().unwrap_or_else(|p| p.into_inner())
}

/// Holds topology changes back from now until [`recovered`] (at start, before the
/// metadata group starts replaying its log).
pub fn defer(rt: &Runtime) {
    *lock(rt) = Some(Deferred::default());
}

/// The recovery is done: the changes held back are applied, in order, or everything is
/// reloaded from the store if they were too many or a snapshot replaced the keyspace.
pub fn recovered(rt: &Runtime) {
    let mut gate = lock(rt);
    let Some(d) = gate.take() else {
        return;
    };
    if d.reload {
        reload(rt);
    } else {
        for c in &d.changes {
            topology_changed(rt, c);
        }
    }
}

fn topology_changed(rt: &Runtime, c: &Change) {
    if let Some(old) = &c.old {
        for_record(&c.key, old, |d| removed(rt, d));
    }
    if let Some(new) = &c.new {
        for_record(&c.key, new, |d| added(rt, d));
    }
}

impl Materialize for Materializer {
    fn applied(&self, _index: u64, changes: &[Change]) {
        let Some(rt) = self.rt.upgrade() else {
            return;
        };
        let mut gate = lock(&rt);
        for c in changes {
            if crate::broker::access_apply::is_access_key(&c.key) {
                crate::broker::access_apply::applied(&rt, c);
                continue;
            }
            if !matches!(c.key.first(), Some(b'e' | b'q' | b'b')) {
                continue;
            }
            match gate.as_mut() {
                Some(d) if d.reload => {}
                Some(d) if d.changes.len() >= MAX_DEFERRED => {
                    d.changes = Vec::new();
                    d.reload = true;
                }
                Some(d) => d.changes.push(c.clone()),
                None => topology_changed(&rt, c),
            }
        }
    }

    fn reset(&self) {
        let Some(rt) = self.rt.upgrade() else {
            return;
        };
        let mut gate = lock(&rt);
        match rt.node.store.as_ref().map(|s| s.definitions.definitions()) {
            Some(Ok(records)) => crate::broker::access_apply::reload(&rt, &records),
            Some(Err(e)) => error!("cannot reload users and vhosts after a snapshot: {e}"),
            None => {}
        }
        match gate.as_mut() {
            Some(d) => {
                d.changes = Vec::new();
                d.reload = true;
            }
            None => reload(&rt),
        }
    }
}

/// Decodes one topology record and hands it to `f` (a damaged one is logged).
fn for_record(key: &[u8], value: &[u8], f: impl FnOnce(Definitions)) {
    let (defs, errors) = decode_definitions(vec![(key.to_vec(), value.to_vec())]);
    for e in &errors {
        error!("damaged definition record not materialized: {e}");
    }
    if errors.is_empty() {
        f(defs);
    }
}

fn vhost_of(rt: &Runtime, name: &str) -> Option<Arc<VHost>> {
    let v = rt.vhost(name);
    if v.is_none() {
        warn!(
            vhost = name,
            "definition of an unknown vhost not materialized"
        );
    }
    v
}

/// A record appeared: the entity is created (its actor started) unless it exists.
fn added(rt: &Runtime, d: Definitions) {
    for x in d.exchanges {
        if let Some(v) = vhost_of(rt, &x.vhost) {
            v.exchange_applied(&x);
        }
    }
    for q in d.queues {
        if let Some(v) = vhost_of(rt, &q.vhost) {
            v.queue_applied(&q);
        }
    }
    for b in d.bindings {
        if let Some(v) = rt.vhost(&b.vhost) {
            if let Some(x) = v.exchange(&b.source) {
                x.addr.do_send(exchange::Bind(binding_of(&b)));
            }
        }
    }
}

/// A record went: the entity goes with every binding to it.
fn removed(rt: &Runtime, d: Definitions) {
    for b in d.bindings {
        if let Some(v) = rt.vhost(&b.vhost) {
            if let Some(x) = v.exchange(&b.source) {
                x.addr.do_send(exchange::Unbind(binding_of(&b)));
            }
        }
    }
    for q in d.queues {
        if let Some(v) = rt.vhost(&q.vhost) {
            v.queue_unapplied(&q.name, q.id);
        }
        remove_queue_messages(rt.node.store.as_ref(), &q.name, q.id);
    }
    for x in d.exchanges {
        if let Some(v) = rt.vhost(&x.vhost) {
            v.exchange_unapplied(&x.name);
        }
        if let Some(id) = x.room_id {
            // a delayed exchange's waiting messages
            remove_queue_messages(rt.node.store.as_ref(), &x.name, id);
        }
    }
}

fn binding_of(b: &BindingDef) -> Binding {
    Binding {
        destination: b.destination.clone(),
        routing_key: b.routing_key.as_str().into(),
        arguments: b.arguments.clone(),
    }
}

/// After a snapshot replaced the keyspace: durable entities without a record go, those
/// with a record and no entity come (bindings are added; stale bindings of surviving
/// exchanges stay until step 4 of the cluster work diffs them).
fn reload(rt: &Runtime) {
    let Some(s) = rt.node.store.as_ref() else {
        return;
    };
    let records = match s.definitions.definitions() {
        Ok(r) => r,
        Err(e) => return error!("cannot reload definitions after a snapshot: {e}"),
    };
    let (defs, errors) = decode_definitions(records);
    for e in &errors {
        error!("damaged definition record not materialized: {e}");
    }
    for v in rt.vhosts.iter().map(|v| v.value().clone()) {
        for q in v.queues() {
            let kept = defs
                .queues
                .iter()
                .any(|d| d.vhost == v.name && *d.name == *q.name && Some(d.id) == q.store_id);
            if let (Some(id), false) = (q.store_id, kept) {
                v.queue_unapplied(&q.name, id);
            }
        }
        for x in v.exchanges() {
            let kept = defs
                .exchanges
                .iter()
                .any(|d| d.vhost == v.name && *d.name == *x.name);
            if x.durable && !kept && !crate::broker::vhost::is_predeclared(&x.name) {
                v.exchange_unapplied(&x.name);
            }
        }
    }
    added(rt, defs);
}

impl VHost {
    /// A durable exchange's record was applied: create it unless it exists.
    fn exchange_applied(&self, x: &ExchangeDef) {
        if self.exchange(&x.name).is_some() {
            return;
        }
        let Some(kind) = ExchangeKind::parse(&x.kind) else {
            return error!(exchange = %x.name, kind = %x.kind, "unknown exchange type; not materialized");
        };
        self.create_exchange_with(
            &x.name,
            ExchangeSpec {
                kind,
                durable: true,
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: x.arguments.clone(),
            },
            x.room_id,
        );
    }

    /// A durable queue's record was applied: create it (on the worker its declaring
    /// connection asked for, if this node proposed it) unless it exists.
    fn queue_applied(&self, q: &QueueDef) {
        let worker = self.placement.remove(q.name.as_str()).map(|(_, w)| w);
        if let Some(cur) = self.queue(&q.name) {
            if cur.store_id != Some(q.id) {
                warn!(queue = %q.name, "a queue of the name exists; the applied one is not materialized");
            }
            return;
        }
        if let Some(home) = crate::broker::queue::remote_home(&self.node, q) {
            // declared on another node, which runs it: this node only lists it
            self.create_remote_queue(q, home);
            return;
        }
        let spec = QueueSpec {
            durable: true,
            exclusive_owner: None,
            auto_delete: q.auto_delete,
            arguments: q.arguments.clone(),
            worker,
        };
        // the record stays: the next start (or a retry of the declare) tries again
        if let Err(e) = self.create_queue_with(&q.name, spec, Some(q.id), &q.members) {
            error!(queue = %q.name, "cannot start the applied queue: {}", e.reply_text());
        }
    }

    /// A durable queue's record went: forget the queue (if it is still the one of that
    /// store id) and every binding to it.
    pub(crate) fn queue_unapplied(&self, name: &str, id: u64) {
        let gone = self.queues.remove_if(name, |_, v| v.store_id == Some(id));
        if let Some((_, q)) = gone {
            q.deleted.store(true, Ordering::Release);
            if q.quorum && q.is_local() {
                // a member here: stopped with its log, whichever node deleted the queue
                q.addr.do_send(crate::broker::queue::QuorumDeleted);
            }
            self.bump();
            self.remove_destination_now(&Destination::Queue(q.name.clone()));
        }
    }

    /// A durable exchange's record went: forget it and every binding to it.
    pub(crate) fn exchange_unapplied(&self, name: &str) {
        let gone = self.exchanges.remove_if(name, |_, v| v.durable);
        if let Some((_, x)) = gone {
            x.dying.store(true, Ordering::Release);
            x.close_room();
            self.bump();
            self.remove_destination_now(&Destination::Exchange(x.name.clone()));
        }
    }

    /// Tells every exchange to drop its bindings to `dest`, without waiting (the
    /// proposer waits for them with `remove_destination`, which also forgets the
    /// auto-delete exchanges this leaves without bindings).
    fn remove_destination_now(&self, dest: &Destination) {
        for x in self.exchanges() {
            x.addr.do_send(exchange::RemoveDestination(dest.clone()));
        }
        self.bump();
    }
}

/// Removes the stored messages of deleted durable queue `id` (its record is gone
/// first, so a crash before the end leaves orphans, which the next start sweeps). A
/// deleted queue's backlog can be millions of index entries: removed off the calling
/// thread (the metadata group's apply task).
fn remove_queue_messages(s: Option<&Storage>, name: &str, id: u64) {
    let Some(s) = s else {
        return;
    };
    let (messages, name) = (s.messages.clone(), name.to_string());
    let dedup = s.dedup.clone();
    let remove = move || {
        match messages.remove_queue(id) {
            Ok(n) if n > 0 => info!(
                queue = %name,
                removed = n,
                "removed stored messages of deleted queue"
            ),
            Ok(_) => {}
            Err(e) => error!(queue = %name, "cannot remove stored messages: {e}"),
        }
        // and its deduplication cache
        if let Err(e) = dedup.dedup_drop(id) {
            error!(queue = %name, "cannot remove the deduplication cache: {e}");
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(remove)),
        Err(_) => remove(),
    }
}
