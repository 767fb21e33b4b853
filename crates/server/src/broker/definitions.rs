//! Durable definitions: what the vhost writes to the store when durable exchanges, queues
//! and bindings change, and the recovery that rebuilds them (and their persistent
//! messages) before the broker accepts connections.

use crate::broker::exchange;
use crate::broker::queue::{self, QueueEntry};
use crate::broker::runtime::Storage;
use crate::broker::vhost::{ExchangeSpec, QueueSpec, VHost};
use broker_core::routing::{Binding, Destination, ExchangeKind};
use broker_core::store::{decode_definitions, BindingDef, ExchangeDef, QueueDef, StoreError};
use broker_core::AmqpError;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;
use tracing::{error, info, warn};

fn internal(e: StoreError) -> AmqpError {
    error!("store write failed: {e}");
    AmqpError::internal(format!("store write failed: {e}"))
}

/// What recovery found, for the startup log.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Durable exchanges rebuilt.
    pub exchanges: usize,
    /// Durable queues rebuilt.
    pub queues: usize,
    /// Bindings rebuilt.
    pub bindings: usize,
    /// Persistent messages put back in their queues.
    pub messages: usize,
    /// Records that could not be read (each logged with what it was).
    pub damaged: usize,
}

impl VHost {
    pub(crate) fn storage(&self) -> Option<Storage> {
        self.node.store.clone()
    }

    /// Whether a binding destination survives restarts.
    pub(crate) fn is_durable(&self, dest: &Destination) -> bool {
        match dest {
            Destination::Queue(q) => self.queue(q).is_some_and(|q| q.store_id.is_some()),
            Destination::Exchange(e) => self.exchange(e).is_some_and(|e| e.durable),
        }
    }

    pub(crate) fn persist_exchange(
        &self,
        name: &str,
        spec: &ExchangeSpec,
    ) -> Result<(), AmqpError> {
        let Some(s) = self.storage() else {
            return Ok(());
        };
        let def = ExchangeDef {
            vhost: self.name.clone(),
            name: name.to_string(),
            kind: spec.kind.as_str().to_string(),
            auto_delete: spec.auto_delete,
            internal: spec.internal,
            arguments: spec.arguments.clone(),
        };
        s.definitions
            .stage_definition(&ExchangeDef::key(&self.name, name), &def.encode())
            .map_err(internal)
    }

    /// Stores a new durable queue; returns its store id.
    pub(crate) fn persist_queue(
        &self,
        name: &str,
        spec: &QueueSpec,
    ) -> Result<Option<u64>, AmqpError> {
        let Some(s) = self.storage() else {
            return Ok(None);
        };
        let id = s.definitions.next_id().map_err(internal)?;
        let def = QueueDef {
            vhost: self.name.clone(),
            name: name.to_string(),
            id,
            auto_delete: spec.auto_delete,
            arguments: spec.arguments.clone(),
        };
        s.definitions
            .stage_definition(&QueueDef::key(&self.name, name), &def.encode())
            .map_err(internal)?;
        Ok(Some(id))
    }

    pub(crate) fn persist_binding(
        &self,
        source: &str,
        b: &Binding,
        bind: bool,
    ) -> Result<(), AmqpError> {
        let Some(s) = self.storage() else {
            return Ok(());
        };
        let def = BindingDef {
            vhost: self.name.clone(),
            source: source.to_string(),
            destination: b.destination.clone(),
            routing_key: b.routing_key.to_string(),
            arguments: b.arguments.clone(),
        };
        if bind {
            s.definitions
                .stage_definition(&def.key(), &def.encode())
                .map_err(internal)
        } else {
            s.definitions
                .unstage_definition(&def.key())
                .map_err(internal)
        }
    }

    /// Removes the records of bindings that went with a deleted queue or exchange (each
    /// binding with the name of its source exchange; those of transient sources were
    /// never stored, and removing a record that is not there costs nothing).
    fn unpersist_bindings(&self, s: &Storage, gone: &[(Arc<str>, Binding)]) {
        for (source, b) in gone {
            let def = BindingDef {
                vhost: self.name.clone(),
                source: source.to_string(),
                destination: b.destination.clone(),
                routing_key: b.routing_key.to_string(),
                arguments: b.arguments.clone(),
            };
            if let Err(e) = s.definitions.unstage_definition(&def.key()) {
                error!("cannot delete binding record: {e}");
            }
        }
    }

    /// A durable queue was deleted: its definition first (so a crash in the middle leaves
    /// only orphan messages, removed at the next start), then the bindings that went
    /// with it, then messages. Durable once the caller's `sync_definitions` returns.
    pub(crate) fn unpersist_queue(&self, name: &str, id: u64, gone: &[(Arc<str>, Binding)]) {
        let Some(s) = self.unpersist("queue", name, &QueueDef::key(&self.name, name), gone) else {
            return;
        };
        let (messages, name) = (s.messages.clone(), name.to_string());
        let remove = move || match messages.remove_queue(id) {
            Ok(n) if n > 0 => info!(
                queue = %name,
                removed = n,
                "removed stored messages of deleted queue"
            ),
            Ok(_) => {}
            Err(e) => error!(queue = %name, "cannot remove stored messages: {e}"),
        };
        // a deleted queue's backlog can be millions of index entries: removed off the
        // worker thread (a crash before the end leaves orphans, which the next start
        // sweeps, since the queue's record is gone first)
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }

    /// Unstages the record (`key`) of a deleted queue or exchange (`what` `name`) and the
    /// bindings that went with it; returns the storage, for what else the caller removes.
    fn unpersist(
        &self,
        what: &'static str,
        name: &str,
        key: &[u8],
        gone: &[(Arc<str>, Binding)],
    ) -> Option<Storage> {
        let s = self.storage()?;
        if let Err(e) = s.definitions.unstage_definition(key) {
            error!(what, name, "cannot delete the definition record: {e}");
        }
        self.unpersist_bindings(&s, gone);
        Some(s)
    }

    /// A durable exchange was deleted: its record and the bindings that went with it.
    pub(crate) fn unpersist_exchange(&self, name: &str, gone: &[(Arc<str>, Binding)]) {
        self.unpersist("exchange", name, &ExchangeDef::key(&self.name, name), gone);
    }

    /// Rebuilds durable exchanges, queues, bindings and persistent messages from the
    /// store. Runs before the listener accepts connections.
    pub async fn recover(&self) -> Result<Recovered, String> {
        let mut r = Recovered::default();
        let Some(s) = self.storage() else {
            return Ok(r);
        };
        let records = s
            .definitions
            .definitions()
            .map_err(|e| format!("cannot read definitions: {e}"))?;
        let (defs, errors) = decode_definitions(records);
        for e in &errors {
            error!("damaged definition record skipped: {e}");
        }
        r.damaged += errors.len();
        self.recover_exchanges(&defs.exchanges, &mut r);
        self.recover_queues(&s, &defs.queues, &mut r).await?;
        self.recover_bindings(&defs.bindings, &mut r).await;
        remove_orphans(&s, &defs.queues);
        Ok(r)
    }

    /// Durable exchanges of this vhost (the predeclared ones exist already).
    fn recover_exchanges(&self, exchanges: &[ExchangeDef], r: &mut Recovered) {
        for x in exchanges.iter().filter(|x| x.vhost == self.name) {
            let Some(kind) = ExchangeKind::parse(&x.kind) else {
                error!(exchange = %x.name, kind = %x.kind, "unknown exchange type in store; skipped");
                r.damaged += 1;
                continue;
            };
            if self.exchange(&x.name).is_none() {
                self.create_exchange(
                    &x.name,
                    ExchangeSpec {
                        kind,
                        durable: true,
                        auto_delete: x.auto_delete,
                        internal: x.internal,
                        arguments: x.arguments.clone(),
                    },
                );
                r.exchanges += 1;
            }
        }
    }

    /// Durable queues of this vhost, each with its stored messages.
    async fn recover_queues(
        &self,
        s: &Storage,
        queues: &[QueueDef],
        r: &mut Recovered,
    ) -> Result<(), String> {
        for q in queues.iter().filter(|q| q.vhost == self.name) {
            let entry = self
                .create_queue(
                    &q.name,
                    QueueSpec {
                        durable: true,
                        exclusive_owner: None,
                        auto_delete: q.auto_delete,
                        arguments: q.arguments.clone(),
                        worker: None,
                    },
                    Some(q.id),
                )
                .map_err(|e| e.to_string())?;
            r.queues += 1;
            let (n, lost) = self.recover_messages(s, &entry, q.id).await;
            r.messages += n;
            r.damaged += lost;
        }
        Ok(())
    }

    /// Bindings between durable exchanges and queues of this vhost.
    async fn recover_bindings(&self, bindings: &[BindingDef], r: &mut Recovered) {
        for b in bindings.iter().filter(|b| b.vhost == self.name) {
            let Some(x) = self.exchange(&b.source) else {
                warn!(source = %b.source, "binding from a missing exchange dropped");
                continue;
            };
            let exists = match &b.destination {
                Destination::Queue(q) => self.queue(q).is_some(),
                Destination::Exchange(e) => self.exchange(e).is_some(),
            };
            if !exists {
                warn!(destination = ?b.destination, "binding to a missing destination dropped");
                continue;
            }
            let binding = Binding {
                destination: b.destination.clone(),
                routing_key: b.routing_key.as_str().into(),
                arguments: b.arguments.clone(),
            };
            let _ = x.addr.send(exchange::Bind(binding)).await;
            r.bindings += 1;
        }
    }

    /// Loads a queue's stored messages into its actor. Returns how many came back and
    /// how many were lost to damaged records.
    async fn recover_messages(
        &self,
        s: &Storage,
        entry: &Arc<QueueEntry>,
        id: u64,
    ) -> (usize, usize) {
        let (batch, damaged) = queue::load_stored(&*s.messages, id, &entry.name, &self.name);
        let n = batch.len();
        let _ = entry.recover(batch).await;
        (n, damaged)
    }
}

/// Recovers every vhost and logs what was found and how long it took.
pub async fn recover_all(rt: &crate::broker::runtime::Runtime) -> Result<(), String> {
    let start = Instant::now();
    let vhosts: Vec<Arc<VHost>> = rt.vhosts.iter().map(|v| v.value().clone()).collect();
    let mut total = Recovered::default();
    for v in vhosts {
        let r = v.recover().await?;
        total.exchanges += r.exchanges;
        total.queues += r.queues;
        total.bindings += r.bindings;
        total.messages += r.messages;
        total.damaged += r.damaged;
    }
    // the files of streams whose queue is gone (a crash between the two deletions)
    if let Some(store) = rt.node.store.as_ref() {
        let live: HashSet<u64> = rt
            .vhosts
            .iter()
            .flat_map(|v| {
                v.value()
                    .queues
                    .iter()
                    .filter_map(|q| q.value().stream.as_ref().map(|l| l.id))
                    .collect::<Vec<_>>()
            })
            .collect();
        store.streams.remove_others(&live);
    }
    info!(
        exchanges = total.exchanges,
        queues = total.queues,
        bindings = total.bindings,
        messages = total.messages,
        damaged = total.damaged,
        elapsed_ms = start.elapsed().as_millis() as u64,
        "recovered durable state"
    );
    if total.damaged > 0 {
        error!(
            damaged = total.damaged,
            "some stored records were damaged and skipped (see above)"
        );
    }
    Ok(())
}

/// Removes the messages of queues whose deletion was interrupted by a crash: queues of
/// no vhost (the store holds every vhost's messages; one vhost's recovery must not take
/// another's for orphans, so `queues` is every vhost's).
fn remove_orphans(s: &Storage, queues: &[QueueDef]) {
    let live_ids: HashSet<u64> = queues.iter().map(|q| q.id).collect();
    if let Ok(ids) = s.messages.queue_ids() {
        for id in ids.into_iter().filter(|id| !live_ids.contains(id)) {
            match s.messages.remove_queue(id) {
                Ok(n) => info!(
                    queue_id = id,
                    removed = n,
                    "removed messages of a deleted queue"
                ),
                Err(e) => error!(queue_id = id, "cannot remove orphan messages: {e}"),
            }
        }
    }
}
