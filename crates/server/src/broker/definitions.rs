//! Durable definitions: what the vhost writes to the store when durable exchanges, queues
//! and bindings change, and the recovery that rebuilds them (and their persistent
//! messages) before the broker accepts connections.

use crate::broker::exchange;
use crate::broker::meta;
use crate::broker::queue::{self, QueueEntry};
use crate::broker::runtime::Storage;
use crate::broker::vhost::{ExchangeSpec, QueueSpec, VHost};
use broker_cluster::meta::{Guard, MetaCmd, Op};
use broker_core::routing::{Binding, Destination, ExchangeKind};
use broker_core::store::{
    decode_definitions, BindingDef, Definitions, ExchangeDef, QueueDef, StoreError,
};
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

    /// The record of `key`, or 541 when the store cannot be read.
    fn record(s: &Storage, key: &[u8]) -> Result<Option<Vec<u8>>, AmqpError> {
        s.definitions.definition(key).map_err(internal)
    }

    /// Proposes a new durable exchange's record (guarded: no record of the name).
    /// `Ok(false)`: a record appeared meanwhile, decide again.
    pub(crate) async fn propose_exchange(
        &self,
        s: &Storage,
        name: &str,
        spec: &ExchangeSpec,
    ) -> Result<bool, AmqpError> {
        // a delayed exchange's waiting room keeps its messages under an id of its own
        let room_id = match spec.kind {
            ExchangeKind::Delayed => Some(self.next_queue_id(s).await?),
            _ => None,
        };
        let def = ExchangeDef {
            vhost: self.name.clone(),
            name: name.to_string(),
            kind: spec.kind.as_str().to_string(),
            auto_delete: spec.auto_delete,
            internal: spec.internal,
            arguments: spec.arguments.clone(),
            room_id,
        };
        let key = ExchangeDef::key(&self.name, name);
        let cmd = MetaCmd::Txn {
            guards: vec![Guard::Absent(key.clone())],
            ops: vec![Op::Put(key, def.encode())],
        };
        meta::propose(s, cmd).await
    }

    /// Proposes a new durable queue's record with a fresh store id; once applied, the
    /// materializer has created the queue (on the declaring connection's worker).
    /// `Ok(None)`: a record of the name appeared meanwhile, decide again.
    pub(crate) async fn propose_queue(
        &self,
        s: &Storage,
        name: &str,
        spec: &QueueSpec,
    ) -> Result<Option<Arc<QueueEntry>>, AmqpError> {
        let id = self.next_queue_id(s).await?;
        let members = if broker_core::queue_type::of_arguments(&spec.arguments).name() == "quorum" {
            let size = self
                .queue_args(name, &spec.arguments)
                .quorum_initial_group_size;
            let locator = self.leader_locator(name, &spec.arguments);
            crate::broker::placement::quorum_members(s, id, size, locator)
        } else {
            Vec::new()
        };
        let def = QueueDef {
            vhost: self.name.clone(),
            name: name.to_string(),
            id,
            auto_delete: spec.auto_delete,
            arguments: spec.arguments.clone(),
            // the declaring node runs it; the others list it (queue/remote.rs)
            home: Some(crate::broker::node::node_name().to_string()),
            members,
        };
        let key = QueueDef::key(&self.name, name);
        let cmd = MetaCmd::Txn {
            guards: vec![Guard::Absent(key.clone())],
            ops: vec![Op::Put(key, def.encode())],
        };
        if let Some(w) = &spec.worker {
            self.placement.insert(name.into(), w.clone());
        }
        let applied = meta::propose(s, cmd).await;
        self.placement.remove(name);
        if !applied? {
            return Ok(None);
        }
        match self.queue(name) {
            Some(q) if q.store_id == Some(id) => Ok(Some(q)),
            _ => Err(AmqpError::internal(format!(
                "cannot start queue '{name}' in vhost '{}'",
                self.name
            ))),
        }
    }

    /// Proposes a durable binding's record (`bind`) or its removal, guarded by the
    /// records of both ends as this node sees them. Nothing to propose (already bound,
    /// or not bound) counts as done. `Ok(false)`: decide again.
    pub(crate) async fn propose_binding(
        &self,
        s: &Storage,
        source: &str,
        b: &Binding,
        bind: bool,
    ) -> Result<bool, AmqpError> {
        let def = BindingDef {
            vhost: self.name.clone(),
            source: source.to_string(),
            destination: b.destination.clone(),
            routing_key: b.routing_key.to_string(),
            arguments: b.arguments.clone(),
        };
        let key = def.key();
        let mut current = Self::record(s, &key)?;
        if current.is_none() && !bind && self.catch_up().await {
            // a binding made through another node a moment ago may not be applied
            // here yet: an unbind that found nothing looks again once it is
            current = Self::record(s, &key)?;
        }
        let (guards, ops) = match (bind, current) {
            (true, Some(_)) | (false, None) => return Ok(true),
            (true, None) => {
                let mut guards = vec![Guard::Absent(key.clone())];
                let ends = [
                    ExchangeDef::key(&self.name, source),
                    dest_key(&self.name, &b.destination),
                ];
                for end in ends {
                    // the predeclared exchanges have no record
                    if let Some(rec) = Self::record(s, &end)? {
                        guards.push(Guard::Equals(end, rec));
                    }
                }
                (guards, vec![Op::Put(key, def.encode())])
            }
            (false, Some(rec)) => (vec![Guard::Equals(key.clone(), rec)], vec![Op::Delete(key)]),
        };
        meta::propose(s, MetaCmd::Txn { guards, ops }).await
    }

    /// The keys of the binding records of this vhost whose destination is `dest`.
    fn binding_keys_to(&self, s: &Storage, dest: &Destination) -> Result<Vec<Vec<u8>>, AmqpError> {
        let records = s
            .definitions
            .definitions_with_prefix(&BindingDef::vhost_prefix(&self.name))
            .map_err(internal)?;
        Ok(records
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| BindingDef::key_has_destination(k, dest))
            .collect())
    }

    /// Proposes the removal of a durable queue's record (still of store id `id`) with
    /// the records of every binding to it; the materializer forgets the queue and
    /// removes its stored messages. `Ok(false)`: there is no such record (nothing to
    /// propose: the caller forgets a queue the store no longer has).
    pub(crate) async fn unpersist_queue(
        &self,
        s: &Storage,
        name: &str,
        id: u64,
    ) -> Result<bool, AmqpError> {
        let key = QueueDef::key(&self.name, name);
        for _ in 0..meta::MAX_RETRIES {
            let Some(rec) = Self::record(s, &key)? else {
                return Ok(false);
            };
            let (defs, _) = decode_definitions(vec![(key.clone(), rec.clone())]);
            if !defs.queues.iter().any(|q| q.id == id) {
                return Ok(false);
            }
            let mut ops = vec![Op::Delete(key.clone())];
            let dest = Destination::Queue(name.into());
            ops.extend(self.binding_keys_to(s, &dest)?.into_iter().map(Op::Delete));
            let cmd = MetaCmd::Txn {
                guards: vec![Guard::Equals(key.clone(), rec)],
                ops,
            };
            if meta::propose(s, cmd).await? {
                return Ok(true);
            }
        }
        Err(meta::too_many_conflicts("queue delete"))
    }

    /// Proposes the removal of a durable exchange's record with its own bindings and
    /// those to it; the materializer forgets it. `Ok(false)`: it has no record.
    pub(crate) async fn unpersist_exchange(
        &self,
        s: &Storage,
        name: &str,
    ) -> Result<bool, AmqpError> {
        let key = ExchangeDef::key(&self.name, name);
        for _ in 0..meta::MAX_RETRIES {
            let Some(rec) = Self::record(s, &key)? else {
                return Ok(false);
            };
            let mut ops = vec![
                Op::Delete(key.clone()),
                Op::DeletePrefix(BindingDef::source_prefix(&self.name, name)),
            ];
            let dest = Destination::Exchange(name.into());
            ops.extend(self.binding_keys_to(s, &dest)?.into_iter().map(Op::Delete));
            let cmd = MetaCmd::Txn {
                guards: vec![Guard::Equals(key.clone(), rec)],
                ops,
            };
            if meta::propose(s, cmd).await? {
                return Ok(true);
            }
        }
        Err(meta::too_many_conflicts("exchange delete"))
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
        let rooms = self.recover_exchanges(&defs.exchanges, &mut r);
        self.recover_queues(&s, &defs.queues, &mut r).await?;
        self.recover_bindings(&defs.bindings, &mut r).await;
        // last: a delayed message due while the broker was down is routed at once, and
        // needs its exchange's bindings and queues
        for (room, id) in rooms {
            let (n, lost) = self.recover_messages(&s, &room, id).await;
            r.messages += n;
            r.damaged += lost;
        }
        remove_orphans(&s, &defs);
        Ok(r)
    }

    /// Durable exchanges of this vhost (the predeclared ones exist already). Returns
    /// the waiting rooms of delayed exchanges, with their store ids, to load.
    fn recover_exchanges(
        &self,
        exchanges: &[ExchangeDef],
        r: &mut Recovered,
    ) -> Vec<(Arc<QueueEntry>, u64)> {
        let mut rooms = Vec::new();
        for x in exchanges.iter().filter(|x| x.vhost == self.name) {
            let Some(kind) = ExchangeKind::parse(&x.kind) else {
                error!(exchange = %x.name, kind = %x.kind, "unknown exchange type in store; skipped");
                r.damaged += 1;
                continue;
            };
            if self.exchange(&x.name).is_none() {
                let e = self.create_exchange_with(
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
                if let (Some(room), Some(id)) = (&e.room, x.room_id) {
                    rooms.push((room.clone(), id));
                }
                r.exchanges += 1;
            }
        }
        rooms
    }

    /// Durable queues of this vhost, each with its stored messages.
    async fn recover_queues(
        &self,
        s: &Storage,
        queues: &[QueueDef],
        r: &mut Recovered,
    ) -> Result<(), String> {
        for q in queues.iter().filter(|q| q.vhost == self.name) {
            if let Some(home) = queue::remote_home(&self.node, q) {
                // another node's queue: listed here, run there
                self.create_remote_queue(q, home);
                r.queues += 1;
                continue;
            }
            let entry = self
                .create_queue_with(
                    &q.name,
                    QueueSpec {
                        durable: true,
                        exclusive_owner: None,
                        auto_delete: q.auto_delete,
                        arguments: q.arguments.clone(),
                        worker: None,
                    },
                    Some(q.id),
                    &q.members,
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

/// Removes the messages of queues (and delayed exchanges' waiting rooms) whose deletion
/// was interrupted by a crash: ids of no record in any vhost (the store holds every
/// vhost's messages; one vhost's recovery must not take another's for orphans, so
/// `defs` are every vhost's).
fn remove_orphans(s: &Storage, defs: &Definitions) {
    let rooms = defs.exchanges.iter().filter_map(|x| x.room_id);
    let live_ids: HashSet<u64> = defs.queues.iter().map(|q| q.id).chain(rooms).collect();
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

/// The record key of a binding's destination.
fn dest_key(vhost: &str, dest: &Destination) -> Vec<u8> {
    match dest {
        Destination::Queue(q) => QueueDef::key(vhost, q),
        Destination::Exchange(e) => ExchangeDef::key(vhost, e),
    }
}
