//! A virtual host: its exchanges and queues, and routing through them. The operations
//! that change them (declare, delete, bind) are in `topology.rs`. Topology changes bump a
//! version number; channels cache routing decisions against it, so a publish looks
//! nothing up here while the topology is still.

use crate::broker::exchange::{ExchangeActor, ExchangeEntry};
use crate::broker::locks::TopologyLocks;
use crate::broker::node::Node;
use crate::broker::queue::{PolicyChanged, QueueActor, QueueEntry, QueueKind};
use broker_core::args::QueueArgs;
use broker_core::policy::Target;
use broker_core::routing::{Bindings, ExchangeKind, RouteInput, RouteSource};
use broker_core::AmqpError;
use broker_wire::protocol::basic::AMQPProperties;
use broker_wire::types::FieldTable;
use dashmap::DashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

/// The exchanges every vhost starts with.
const PREDECLARED: &[(&str, ExchangeKind)] = &[
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
    // dead letters of queues that name no dead-letter exchange of their own
    (
        broker_core::deadletter::DEAD_LETTER_EXCHANGE,
        ExchangeKind::Topic,
    ),
];

/// Whether `name` is one of the exchanges every vhost starts with (they have no record).
pub(crate) fn is_predeclared(name: &str) -> bool {
    PREDECLARED.iter().any(|(n, _)| *n == name)
}

/// Properties of an exchange.declare.
#[derive(Debug, Clone)]
pub struct ExchangeSpec {
    /// Type.
    pub kind: ExchangeKind,
    /// Durable flag.
    pub durable: bool,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// Internal flag.
    pub internal: bool,
    /// Arguments.
    pub arguments: FieldTable,
}

/// Properties of a queue.declare.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    /// Durable flag.
    pub durable: bool,
    /// Owning connection if exclusive.
    pub exclusive_owner: Option<u64>,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// Arguments.
    pub arguments: FieldTable,
    /// The worker of the declaring connection: the queue actor is placed there (as
    /// RabbitMQ's client-local queue locator), so a queue declared by its consumer
    /// delivers without a thread hop. `None` (management API, recovery): round-robin.
    pub worker: Option<actix::ArbiterHandle>,
}

impl QueueSpec {
    /// The declare as its queue type checks it.
    pub fn declare<'a>(
        &'a self,
        name: &'a str,
        vhost: &'a str,
    ) -> broker_core::declare::QueueDeclare<'a> {
        broker_core::declare::QueueDeclare {
            name,
            vhost,
            durable: self.durable,
            exclusive: self.exclusive_owner.is_some(),
            auto_delete: self.auto_delete,
            arguments: &self.arguments,
        }
    }
}

/// One virtual host.
pub struct VHost {
    /// Its name.
    pub name: String,
    /// Exchanges by name.
    pub(crate) exchanges: DashMap<Arc<str>, Arc<ExchangeEntry>>,
    /// Queues by name.
    pub(crate) queues: DashMap<Arc<str>, Arc<QueueEntry>>,
    /// Serializes declares, deletes and binds per name (`topology.rs`).
    pub(crate) locks: TopologyLocks,
    version: AtomicU64,
    /// The node's services (workers, store, users, settings).
    pub(crate) node: Arc<Node>,
    pub(crate) me: Weak<VHost>,
    /// Open client connections (for max-connections).
    pub connections: AtomicUsize,
    /// The worker a durable queue being declared should start on (its declaring
    /// connection's), for the materializer that starts it (`materialize.rs`).
    pub(crate) placement: DashMap<Arc<str>, actix::ArbiterHandle>,
}

impl VHost {
    /// A vhost with the default and amq.* exchanges.
    pub fn new(name: &str, node: Arc<Node>) -> Arc<VHost> {
        let v = Arc::new_cyclic(|me| VHost {
            name: name.to_string(),
            exchanges: DashMap::new(),
            queues: DashMap::new(),
            locks: TopologyLocks::default(),
            version: AtomicU64::new(1),
            node,
            me: me.clone(),
            connections: AtomicUsize::new(0),
            placement: DashMap::new(),
        });
        for (n, kind) in PREDECLARED {
            v.create_exchange(
                n,
                ExchangeSpec {
                    kind: *kind,
                    durable: true,
                    auto_delete: false,
                    internal: false,
                    arguments: FieldTable::default(),
                },
            );
        }
        v
    }

    /// The topology version; changes whenever a route could change.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub(crate) fn bump(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// An exchange by name.
    pub fn exchange(&self, name: &str) -> Option<Arc<ExchangeEntry>> {
        self.exchanges.get(name).map(|e| e.clone())
    }

    /// A queue by name.
    pub fn queue(&self, name: &str) -> Option<Arc<QueueEntry>> {
        self.queues.get(name).map(|e| e.clone())
    }

    /// All queues (for listings).
    pub fn queues(&self) -> Vec<Arc<QueueEntry>> {
        self.queues.iter().map(|e| e.value().clone()).collect()
    }

    /// All exchanges (for listings).
    pub fn exchanges(&self) -> Vec<Arc<ExchangeEntry>> {
        self.exchanges.iter().map(|e| e.value().clone()).collect()
    }

    pub(crate) fn create_exchange(&self, name: &str, spec: ExchangeSpec) -> Arc<ExchangeEntry> {
        self.create_exchange_with(name, spec, None)
    }

    /// [`VHost::create_exchange`] of an exchange record: a durable delayed exchange's
    /// waiting room keeps its messages under store id `room_id`.
    pub(crate) fn create_exchange_with(
        &self,
        name: &str,
        spec: ExchangeSpec,
        room_id: Option<u64>,
    ) -> Arc<ExchangeEntry> {
        let room = (spec.kind == ExchangeKind::Delayed).then(|| {
            // a transient exchange's room keeps nothing in the store
            let id = room_id.filter(|_| spec.durable && self.node.store.is_some());
            self.create_room(name, id)
        });
        let name: Arc<str> = name.into();
        let arbiter = self.node.next_arbiter();
        let (addr, bindings, dying) = ExchangeActor::spawn(
            &arbiter,
            name.clone(),
            spec.kind,
            &spec.arguments,
            spec.auto_delete,
            self.name.as_str().into(),
        );
        let policy_ae = self.policy_ae(&name);
        let schema_invalid = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let schema = self.schema_of(&name, &spec.arguments, &schema_invalid);
        let entry = Arc::new(ExchangeEntry {
            policy_ae: arc_swap::ArcSwapOption::from(policy_ae),
            schema: arc_swap::ArcSwapOption::from(schema),
            schema_invalid,
            name: name.clone(),
            kind: spec.kind,
            durable: spec.durable,
            auto_delete: spec.auto_delete,
            internal: spec.internal,
            dedup: crate::broker::dedup::Deduper::from_arguments(
                &spec.arguments,
                "exchange",
                &name,
                &self.name,
                None,
            ),
            arguments: spec.arguments,
            bindings,
            addr,
            dying,
            room,
        });
        self.exchanges.insert(name, entry.clone());
        self.bump();
        entry
    }

    /// Creates the queue entry and its actor (declare and recovery).
    pub(crate) fn create_queue(
        &self,
        name: &str,
        spec: QueueSpec,
        store_id: Option<u64>,
    ) -> Result<Arc<QueueEntry>, AmqpError> {
        self.create_queue_with(name, spec, store_id, &[])
    }

    /// [`VHost::create_queue`] of a queue record: a quorum queue's `members` (node
    /// names) are its Raft group's, and this node runs one of them.
    pub(crate) fn create_queue_with(
        &self,
        name: &str,
        spec: QueueSpec,
        store_id: Option<u64>,
        members: &[String],
    ) -> Result<Arc<QueueEntry>, AmqpError> {
        let arbiter = match &spec.worker {
            Some(w) => w.clone(),
            None => self.node.next_arbiter(),
        };
        let qname: Arc<str> = name.into();
        let policies_seen = self.node.policies.generation();
        let args = self.queue_args(name, &spec.arguments);
        let vhost: Weak<dyn crate::broker::queue::QueueHost> = self.me.clone();
        let node = self.node.clone();
        let stream = self.open_stream(name, &spec, store_id, &args)?;
        let stream_actor = stream.clone();
        let quorum = self.quorum_shell(name, &spec, store_id, members)?;
        let is_quorum = quorum.is_some();
        // a durable queue's cache is written through to the store, and loaded from it
        let persist = match (spec.durable, store_id, self.node.store.as_ref()) {
            (true, Some(id), Some(s)) => Some((s.dedup.clone(), id)),
            _ => None,
        };
        let dedup = crate::broker::dedup::Deduper::from_arguments(
            &spec.arguments,
            "queue",
            name,
            &self.name,
            persist,
        );
        let entry = self
            .queues
            .entry(qname.clone())
            .or_insert_with(|| {
                Arc::new_cyclic(|me| QueueEntry {
                    name: qname.clone(),
                    durable: spec.durable,
                    auto_delete: spec.auto_delete,
                    exclusive_owner: spec.exclusive_owner,
                    arguments: spec.arguments.clone(),
                    addr: QueueActor::spawn(
                        &arbiter,
                        qname.clone(),
                        args.clone(),
                        me.clone(),
                        vhost,
                        node,
                        match (stream_actor, quorum) {
                            (Some(log), _) => QueueKind::Stream(log),
                            (None, Some(shell)) => QueueKind::Quorum(Box::new(shell)),
                            (None, None) => QueueKind::Classic,
                        },
                    ),
                    may_refuse: AtomicBool::new(crate::broker::queue::may_refuse(&args)),
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
                    stream,
                    quorum: is_quorum,
                    home: None,
                    remote: None,
                    quorum_members: members.iter().map(|m| m.as_str().into()).collect(),
                    dedup,
                })
            })
            .clone();
        if let Some(log) = entry.stream.as_ref() {
            // the flusher wakes the readers after each commit
            // (weakly: the log must not keep its actor alive after a delete)
            let addr = entry.addr.downgrade();
            log.on_commit(move || {
                if let Some(a) = addr.upgrade() {
                    a.do_send(crate::broker::queue::StreamCommitted);
                }
            });
        }
        if self.node.policies.generation() != policies_seen {
            // a policy changed while this queue was being made: the change may have
            // looked at the queues before this one was among them
            let now = self.queue_args(name, &entry.arguments);
            if **entry.args.load() != now {
                entry.set_args(now);
                entry.addr.do_send(PolicyChanged);
            }
        }
        self.bump();
        Ok(entry)
    }

    /// The entry of a durable queue that lives on node `home` (queue/remote.rs): no
    /// actor, no messages, its declared properties and the arguments policies give it
    /// (for listings).
    pub(crate) fn create_remote_queue(
        &self,
        def: &broker_core::store::QueueDef,
        home: Arc<str>,
    ) -> Arc<QueueEntry> {
        let name: Arc<str> = def.name.as_str().into();
        let args = self.queue_args(&def.name, &def.arguments);
        // an address whose mailbox is closed at once: what is sent to it fails
        let (tx, _closed) = actix::dev::channel::channel::<QueueActor>(0);
        let cluster = self.node.store.as_ref().map(|s| s.cluster.clone());
        let members: Vec<Arc<str>> = def.members.iter().map(|m| m.as_str().into()).collect();
        let entry = Arc::new_cyclic(|me| QueueEntry {
            name: name.clone(),
            durable: true,
            auto_delete: def.auto_delete,
            exclusive_owner: None,
            arguments: def.arguments.clone(),
            may_refuse: AtomicBool::new(crate::broker::queue::may_refuse(&args)),
            args: arc_swap::ArcSwap::from_pointee(args),
            addr: actix::Addr::new(tx),
            inbox: Default::default(),
            paced: AtomicBool::new(false),
            crowded: AtomicBool::new(false),
            deleted: AtomicBool::new(false),
            store_id: Some(def.id),
            vhost_name: self.name.as_str().into(),
            ready: Default::default(),
            waiting: Default::default(),
            counters: Default::default(),
            stream: None,
            quorum: broker_core::queue_type::of_arguments(&def.arguments).name() == "quorum",
            remote: cluster
                .map(|c| crate::broker::queue::Outbox::new(c, home.clone(), &members, me.clone())),
            home: Some(home),
            quorum_members: members.clone(),
            dedup: None,
        });
        let entry = self.queues.entry(name).or_insert(entry).clone();
        self.bump();
        entry
    }

    /// The shell of a quorum queue (`None` for other types): its group is the queue's
    /// store id + 1 on the node's cluster runtime. Quorum queues need the data dir.
    fn quorum_shell(
        &self,
        name: &str,
        spec: &QueueSpec,
        store_id: Option<u64>,
        members: &[String],
    ) -> Result<Option<crate::broker::queue::QuorumShell>, AmqpError> {
        if broker_core::queue_type::of_arguments(&spec.arguments).name() != "quorum" {
            return Ok(None);
        }
        let (Some(id), Some(store)) = (store_id, self.node.store.as_ref()) else {
            return Err(AmqpError::precondition_failed(format!(
                "cannot declare quorum queue '{name}' in vhost '{}': quorum queues need a data dir (--data-dir)",
                self.name
            )));
        };
        Ok(Some(crate::broker::queue::QuorumShell::new(
            store.cluster.clone(),
            broker_cluster::quorum::quorum_group_id(id),
            members.to_vec(),
        )))
    }

    /// The log of a new stream queue (`None` for other types): opened from the data
    /// dir by the queue's store id, with the retention its arguments set.
    fn open_stream(
        &self,
        name: &str,
        spec: &QueueSpec,
        store_id: Option<u64>,
        args: &QueueArgs,
    ) -> Result<Option<Arc<broker_store::stream::StreamLog>>, AmqpError> {
        if broker_core::queue_type::of_arguments(&spec.arguments).name() != "stream" {
            return Ok(None);
        }
        let (Some(id), Some(store)) = (store_id, self.node.store.as_ref()) else {
            return Err(AmqpError::precondition_failed(format!(
                "invalid property 'non-durable' for queue '{name}' in vhost '{}'",
                self.name
            )));
        };
        store
            .streams
            .open(id, crate::broker::queue::retention(args))
            .map(Some)
            .map_err(|e| AmqpError::internal(format!("cannot open stream '{name}': {e}")))
    }

    /// The arguments a queue acts on: its declared ones combined with the policies that
    /// apply (broker-core's `policy::queue_args`). Declared arguments were checked at
    /// declare; stored ones that no longer pass are ignored, with a warning.
    pub(crate) fn queue_args(&self, name: &str, declared: &FieldTable) -> QueueArgs {
        let with_policy = self.node.policies.any_in(&self.name).then(|| {
            let r = self.node.policies.resolve(&self.name, name, Target::Queue);
            broker_core::policy::queue_args(declared, &r.effective, name, &self.name)
        });
        match with_policy {
            Some(Ok(args)) => return args,
            Some(Err(e)) => tracing::warn!(queue = name, "policy not applied: {}", e.reply_text()),
            None => {}
        }
        QueueArgs::parse(declared, name, &self.name).unwrap_or_else(|e| {
            tracing::warn!(
                queue = name,
                "stored queue arguments no longer valid, ignored: {}",
                e.reply_text()
            );
            QueueArgs::default()
        })
    }

    /// The alternate exchange a policy gives exchange `name`.
    fn policy_ae(&self, name: &str) -> Option<Arc<String>> {
        if !self.node.policies.any_in(&self.name) {
            return None;
        }
        let r = self
            .node
            .policies
            .resolve(&self.name, name, Target::Exchange);
        broker_core::policy::alternate_exchange(None, &r.effective).map(Arc::new)
    }

    /// The schema exchange `name` checks publishes with: its `x-schema` arguments, else
    /// its policy's keys, resolved in the registry (`None`: no schema named).
    fn schema_of(
        &self,
        name: &str,
        declared: &FieldTable,
        counter: &Arc<std::sync::atomic::AtomicU64>,
    ) -> Option<Arc<crate::broker::schemas::Attached>> {
        let effective = match self.node.policies.any_in(&self.name) {
            true => {
                let r = self
                    .node
                    .policies
                    .resolve(&self.name, name, Target::Exchange);
                r.effective
            }
            false => Default::default(),
        };
        let settings = broker_core::schema::SchemaSettings::resolve(declared, &effective);
        self.node.schemas.attach(&self.name, settings, counter)
    }

    /// Applies the current policies to every queue and exchange of the vhost at once
    /// (RabbitMQ's `policy_changed`): a queue whose arguments change takes them through
    /// a message ([`PolicyChanged`]); routes are computed afresh (alternate exchanges) and
    /// schemas are looked up again (also after a change of the schema registry).
    /// Answers once every changed queue has taken its new arguments, so a client that
    /// set a policy finds it in force.
    pub async fn apply_policies(&self) {
        let mut waits = Vec::new();
        for q in self.queues() {
            let args = self.queue_args(&q.name, &q.arguments);
            if **q.args.load() != args {
                q.set_args(args);
                waits.push(q.addr.send(PolicyChanged));
            }
        }
        for x in self.exchanges() {
            x.policy_ae.store(self.policy_ae(&x.name));
            x.schema
                .store(self.schema_of(&x.name, &x.arguments, &x.schema_invalid));
        }
        self.bump();
        for w in waits {
            // a queue that stopped meanwhile has nothing left to apply it to
            let _ = w.await;
        }
    }

    /// Resolves where a message goes: follows exchange-to-exchange bindings (each exchange
    /// once) and resolves queue names. Returns whether the result depends only on the
    /// routing key (and so may be cached). `properties` are the message's (its headers,
    /// and the properties a consistent-hash exchange may hash on).
    pub fn route(
        &self,
        x: &ExchangeEntry,
        routing_key: &str,
        properties: Option<&AMQPProperties>,
        out: &mut Vec<Arc<QueueEntry>>,
    ) -> bool {
        let mut seen = None;
        broker_core::routing::resolve(
            x,
            &RouteInput::with_properties(routing_key, properties),
            |e| self.exchange(e),
            |q| {
                if let Some(entry) = self.queue(q).filter(|e| e.takes_publishes()) {
                    push_once(out, &mut seen, entry);
                }
            },
        )
    }

    /// Routes by exchange name, the default exchange ("") included; `None` if there is no
    /// such exchange. Queues found are added to `out` once each.
    pub fn route_by_name(
        &self,
        exchange: &str,
        routing_key: &str,
        properties: Option<&AMQPProperties>,
        out: &mut Vec<Arc<QueueEntry>>,
    ) -> Option<bool> {
        if exchange.is_empty() {
            if let Some(q) = self.queue(routing_key).filter(|e| e.takes_publishes()) {
                if !out.iter().any(|e| Arc::ptr_eq(e, &q)) {
                    out.push(q);
                }
            }
            return Some(true);
        }
        let x = self.exchange(exchange)?;
        Some(self.route(&x, routing_key, properties, out))
    }
}

/// Adds a queue to a route once. A short route is checked by a scan; past 32 queues (a
/// fanout to thousands) by a set of the entries' addresses, so a route stays linear.
fn push_once(
    out: &mut Vec<Arc<QueueEntry>>,
    seen: &mut Option<std::collections::HashSet<usize>>,
    entry: Arc<QueueEntry>,
) {
    let key = |e: &Arc<QueueEntry>| Arc::as_ptr(e) as usize;
    if out.len() < 32 {
        if !out.iter().any(|e| Arc::ptr_eq(e, &entry)) {
            out.push(entry);
        }
        return;
    }
    let set = seen.get_or_insert_with(|| out.iter().map(key).collect());
    if set.insert(key(&entry)) {
        out.push(entry);
    }
}

/// The default exchange and the amq.* exchanges may not be declared, deleted or bound to
/// by clients (403 ACCESS_REFUSED).
pub fn check_not_reserved_exchange(name: &str) -> Result<(), AmqpError> {
    broker_core::declare::check_not_reserved_exchange(name)
}

/// Reads a string-valued argument (long or short string).
pub fn string_arg(args: &FieldTable, key: &str) -> Option<String> {
    args.inner().get(key).and_then(broker_core::args::str_value)
}

/// The `alternate-exchange` argument of an exchange, if it names one.
pub(crate) fn alternate_exchange(args: &FieldTable) -> Option<String> {
    broker_core::routing::alternate_exchange(args)
}

/// What routing reads of an exchange: its binding snapshot and alternate exchange.
impl RouteSource for ExchangeEntry {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn with_bindings<R>(&self, f: impl FnOnce(&Bindings) -> R) -> R {
        f(&self.bindings.load())
    }

    fn alternate(&self) -> Option<String> {
        alternate_exchange(&self.arguments)
            .or_else(|| self.policy_ae.load_full().map(|s| (*s).clone()))
    }
}
