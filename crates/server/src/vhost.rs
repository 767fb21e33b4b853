//! A virtual host: its exchanges and queues, and the operations that change them
//! (declare, delete, bind). Topology changes bump a version number; channels cache routing
//! decisions against it, so a publish looks nothing up here while the topology is still.

use crate::exchange::{self, ExchangeActor, ExchangeEntry};
use crate::queue::{self, QueueActor, QueueEntry};
use crate::runtime::Runtime;
use broker_core::args::QueueArgs;
use broker_core::headers::XMatch;
use broker_core::routing::{Binding, Destination, ExchangeKind};
use broker_core::AmqpError;
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

/// One virtual host.
pub struct VHost {
    /// Its name.
    pub name: String,
    exchanges: DashMap<Arc<str>, Arc<ExchangeEntry>>,
    queues: DashMap<Arc<str>, Arc<QueueEntry>>,
    version: AtomicU64,
    pub(crate) runtime: Weak<Runtime>,
    me: Weak<VHost>,
    /// Open client connections (for max-connections).
    pub connections: AtomicUsize,
}

fn inequivalent(
    what: &str,
    arg: &str,
    name: &str,
    got: impl std::fmt::Display,
    cur: impl std::fmt::Display,
    vhost: &str,
) -> AmqpError {
    AmqpError::precondition_failed(format!(
        "inequivalent arg '{arg}' for {what} '{name}' in vhost '{vhost}': received '{got}' but current is '{cur}'"
    ))
}

impl VHost {
    /// A vhost with the default and amq.* exchanges.
    pub fn new(name: &str, runtime: Weak<Runtime>) -> Arc<VHost> {
        let v = Arc::new_cyclic(|me| VHost {
            name: name.to_string(),
            exchanges: DashMap::new(),
            queues: DashMap::new(),
            version: AtomicU64::new(1),
            runtime,
            me: me.clone(),
            connections: AtomicUsize::new(0),
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

    fn bump(&self) {
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
        let name: Arc<str> = name.into();
        let arbiter = match self.runtime.upgrade() {
            Some(rt) => rt.next_arbiter(),
            None => actix::Arbiter::current(),
        };
        let (addr, bindings) = ExchangeActor::spawn(
            &arbiter,
            name.clone(),
            spec.kind,
            spec.auto_delete,
            self.me.clone(),
        );
        let entry = Arc::new(ExchangeEntry {
            name: name.clone(),
            kind: spec.kind,
            durable: spec.durable,
            auto_delete: spec.auto_delete,
            internal: spec.internal,
            arguments: spec.arguments,
            bindings,
            addr,
        });
        self.exchanges.insert(name, entry.clone());
        self.bump();
        entry
    }

    /// exchange.declare (non-passive): creates it, or checks an existing one is equivalent.
    pub fn declare_exchange(&self, name: &str, spec: ExchangeSpec) -> Result<(), AmqpError> {
        if let Some(x) = self.exchange(name) {
            if x.kind != spec.kind {
                return Err(inequivalent(
                    "exchange",
                    "type",
                    name,
                    spec.kind.as_str(),
                    x.kind.as_str(),
                    &self.name,
                ));
            }
            if x.durable != spec.durable {
                return Err(inequivalent(
                    "exchange",
                    "durable",
                    name,
                    spec.durable,
                    x.durable,
                    &self.name,
                ));
            }
            if x.auto_delete != spec.auto_delete {
                return Err(inequivalent(
                    "exchange",
                    "auto_delete",
                    name,
                    spec.auto_delete,
                    x.auto_delete,
                    &self.name,
                ));
            }
            if x.internal != spec.internal {
                return Err(inequivalent(
                    "exchange",
                    "internal",
                    name,
                    spec.internal,
                    x.internal,
                    &self.name,
                ));
            }
            broker_core::args::check_equivalent(
                "exchange",
                name,
                &self.name,
                &spec.arguments,
                &x.arguments,
                broker_core::args::EXCHANGE_EQUIVALENCE_KEYS,
            )?;
            return Ok(());
        }
        // entry() makes racing declares of the same name create one exchange
        if self.exchanges.contains_key(name) {
            return Ok(());
        }
        broker_core::args::check_exchange_args(&spec.arguments, name, &self.name)?;
        if spec.durable {
            self.persist_exchange(name, &spec)?;
        }
        self.create_exchange(name, spec);
        Ok(())
    }

    /// queue.declare (non-passive): creates it or checks equivalence. Returns the entry.
    pub fn declare_queue(
        &self,
        name: &str,
        spec: QueueSpec,
        conn: u64,
    ) -> Result<Arc<QueueEntry>, AmqpError> {
        if let Some(q) = self.queue(name) {
            q.check_access(conn)?;
            if spec.exclusive_owner.is_some() != q.exclusive_owner.is_some() {
                return Err(QueueEntry::locked(name, &self.name));
            }
            if q.durable != spec.durable {
                return Err(inequivalent(
                    "queue",
                    "durable",
                    name,
                    spec.durable,
                    q.durable,
                    &self.name,
                ));
            }
            if q.auto_delete != spec.auto_delete {
                return Err(inequivalent(
                    "queue",
                    "auto_delete",
                    name,
                    spec.auto_delete,
                    q.auto_delete,
                    &self.name,
                ));
            }
            // as RabbitMQ: only the arguments it knows are compared, before any check
            broker_core::args::check_equivalent(
                "queue",
                name,
                &self.name,
                &spec.arguments,
                &q.arguments,
                broker_core::args::QUEUE_EQUIVALENCE_KEYS,
            )?;
            return Ok(q);
        }
        QueueArgs::parse(&spec.arguments, name, &self.name)?;
        if let Some(max) = self
            .runtime
            .upgrade()
            .and_then(|rt| rt.registry.vhost(&self.name))
            .and_then(|r| r.limits.max_queues)
        {
            if self.queues.len() as u64 >= max {
                return Err(AmqpError::precondition_failed(format!(
                    "cannot declare queue '{name}': queue limit in vhost '{}' ({max}) is reached",
                    self.name
                )));
            }
        }
        let store_id = if spec.durable && spec.exclusive_owner.is_none() {
            self.persist_queue(name, &spec)?
        } else {
            None
        };
        let entry = self.create_queue(name, spec, store_id)?;
        Ok(entry)
    }

    /// Creates the queue entry and its actor (declare and recovery).
    pub(crate) fn create_queue(
        &self,
        name: &str,
        spec: QueueSpec,
        store_id: Option<u64>,
    ) -> Result<Arc<QueueEntry>, AmqpError> {
        let rt = self
            .runtime
            .upgrade()
            .ok_or_else(|| AmqpError::internal("broker stopping"))?;
        let arbiter = match &spec.worker {
            Some(w) => w.clone(),
            None => rt.next_arbiter(),
        };
        let qname: Arc<str> = name.into();
        let args = QueueArgs::parse(&spec.arguments, name, &self.name).unwrap_or_else(|e| {
            tracing::warn!(
                queue = name,
                "stored queue arguments no longer valid, ignored: {}",
                e.reply_text()
            );
            QueueArgs::default()
        });
        let vhost = self.me.clone();
        let rtw = Arc::downgrade(&rt);
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
                        rtw,
                    ),
                    args,
                    inbox: Default::default(),
                    paced: AtomicBool::new(false),
                    deleted: AtomicBool::new(false),
                    store_id,
                    vhost_name: self.name.as_str().into(),
                    ready: Default::default(),
                    counters: Default::default(),
                })
            })
            .clone();
        self.bump();
        Ok(entry)
    }

    /// Removes a queue from the vhost and every binding to it.
    pub async fn forget_queue(&self, name: &str) {
        let Some((_, q)) = self.queues.remove(name) else {
            return;
        };
        q.deleted.store(true, Ordering::Release);
        self.bump();
        let dest = Destination::Queue(q.name.clone());
        for x in self.exchanges() {
            let _ = x.addr.send(exchange::RemoveDestination(dest.clone())).await;
        }
        if let Some(id) = q.store_id {
            self.unpersist_queue(name, id, &dest);
        }
        self.bump();
    }

    /// Removes an exchange and every exchange-to-exchange binding to it.
    pub async fn forget_exchange(&self, name: &str) {
        if self.exchanges.remove(name).is_none() {
            return;
        }
        self.bump();
        let dest = Destination::Exchange(name.into());
        for x in self.exchanges() {
            let _ = x.addr.send(exchange::RemoveDestination(dest.clone())).await;
        }
        self.unpersist_exchange(name, &dest);
        self.bump();
    }

    /// queue.delete. Deleting a queue that does not exist succeeds with 0, as in RabbitMQ.
    pub async fn delete_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
        conn: u64,
    ) -> Result<u32, AmqpError> {
        let Some(q) = self.queue(name) else {
            return Ok(0);
        };
        q.check_access(conn)?;
        let n = q
            .addr
            .send(queue::DeleteQueue {
                if_unused,
                if_empty,
            })
            .await
            .map_err(|_| AmqpError::internal("queue unavailable"))??;
        self.forget_queue(name).await;
        Ok(n)
    }

    /// exchange.delete: the default and amq.* exchanges are refused with 403.
    pub async fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), AmqpError> {
        if name.is_empty() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "deletion of system exchange '{name}' in vhost '{}' not allowed",
                self.name
            )));
        }
        // deleting an exchange that does not exist succeeds, as in RabbitMQ
        let Some(x) = self.exchange(name) else {
            return Ok(());
        };
        x.addr
            .send(exchange::Delete { if_unused })
            .await
            .map_err(|_| AmqpError::internal("exchange unavailable"))??;
        self.forget_exchange(name).await;
        Ok(())
    }

    /// queue.bind and exchange.bind (bind = true) or their unbinds.
    pub async fn bind(
        &self,
        source: &str,
        dest: Destination,
        routing_key: &str,
        arguments: FieldTable,
        bind: bool,
    ) -> Result<(), AmqpError> {
        if source.is_empty() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        if let Destination::Exchange(d) = &dest {
            if d.is_empty() {
                return Err(AmqpError::access_refused(
                    "operation not permitted on the default exchange",
                ));
            }
            if self.exchange(d).is_none() {
                return Err(AmqpError::not_found(format!(
                    "no exchange '{d}' in vhost '{}'",
                    self.name
                )));
            }
        }
        let Some(x) = self.exchange(source) else {
            return Err(AmqpError::not_found(format!(
                "no exchange '{source}' in vhost '{}'",
                self.name
            )));
        };
        if bind && x.kind == ExchangeKind::Headers {
            if let Err(v) = XMatch::from_arguments(&arguments) {
                return Err(AmqpError::precondition_failed(format!(
                    "Invalid x-match field value <<\"{v}\">>; expected all, any, all-with-x, or any-with-x"
                )));
            }
        }
        let durable = x.durable && self.is_durable(&dest);
        let b = Binding {
            destination: dest,
            routing_key: routing_key.into(),
            arguments,
        };
        if durable {
            self.persist_binding(source, &b, bind)?;
        }
        let res = if bind {
            x.addr.send(exchange::Bind(b)).await
        } else {
            x.addr.send(exchange::Unbind(b)).await
        };
        res.map_err(|_| AmqpError::internal("exchange unavailable"))?;
        self.bump();
        Ok(())
    }

    /// Resolves where a message goes: follows exchange-to-exchange bindings (each exchange
    /// once) and resolves queue names. Returns whether the result depends only on the
    /// routing key (and so may be cached).
    pub fn route(
        &self,
        x: &ExchangeEntry,
        routing_key: &str,
        headers: Option<&FieldTable>,
        out: &mut Vec<Arc<QueueEntry>>,
    ) -> bool {
        let mut cacheable = true;
        let mut visited: Vec<Arc<str>> = vec![x.name.clone()];
        let mut dests = Vec::new();
        let snap = x.bindings.load();
        cacheable &= !snap.routes_by_headers();
        snap.route(routing_key, headers, &mut dests);
        if dests.is_empty() {
            // unroutable here: the alternate exchange gets it
            if let Some(ae) = alternate_exchange(&x.arguments) {
                dests.push(Destination::Exchange(ae.into()));
            }
        }
        let mut i = 0;
        while i < dests.len() {
            match &dests[i] {
                Destination::Queue(q) => {
                    if let Some(entry) = self.queue(q) {
                        if !out.iter().any(|e| Arc::ptr_eq(e, &entry)) {
                            out.push(entry);
                        }
                    }
                }
                Destination::Exchange(e) => {
                    if !visited.contains(e) {
                        visited.push(e.clone());
                        if let Some(next) = self.exchange(e) {
                            let snap = next.bindings.load();
                            cacheable &= !snap.routes_by_headers();
                            let before = dests.len();
                            snap.route(routing_key, headers, &mut dests);
                            if dests.len() == before {
                                if let Some(ae) = alternate_exchange(&next.arguments) {
                                    dests.push(Destination::Exchange(ae.into()));
                                }
                            }
                        }
                    }
                }
            }
            i += 1;
        }
        cacheable
    }

    /// Routes by exchange name, the default exchange ("") included; `None` if there is no
    /// such exchange. Queues found are added to `out` once each.
    pub fn route_by_name(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
        out: &mut Vec<Arc<QueueEntry>>,
    ) -> Option<bool> {
        if exchange.is_empty() {
            if let Some(q) = self.queue(routing_key) {
                if !out.iter().any(|e| Arc::ptr_eq(e, &q)) {
                    out.push(q);
                }
            }
            return Some(true);
        }
        let x = self.exchange(exchange)?;
        Some(self.route(&x, routing_key, headers, out))
    }

    /// Exclusive queues of a closed connection go away.
    pub async fn connection_closed(&self, conn: u64) {
        let mine: Vec<Arc<str>> = self
            .queues
            .iter()
            .filter(|q| q.exclusive_owner == Some(conn))
            .map(|q| q.name.clone())
            .collect();
        for name in mine {
            if let Some(q) = self.queue(&name) {
                let _ = q
                    .addr
                    .send(queue::DeleteQueue {
                        if_unused: false,
                        if_empty: false,
                    })
                    .await;
            }
            self.forget_queue(&name).await;
        }
    }
}

/// The default exchange and the amq.* exchanges may not be declared, deleted or bound to
/// by clients (403 ACCESS_REFUSED).
pub fn check_not_reserved_exchange(name: &str) -> Result<(), AmqpError> {
    if name.is_empty() {
        return Err(AmqpError::access_refused(
            "operation not permitted on the default exchange",
        ));
    }
    if name.starts_with("amq.") {
        return Err(AmqpError::access_refused(format!(
            "exchange name '{name}' contains reserved prefix 'amq.*'"
        )));
    }
    Ok(())
}

/// Reads a string-valued argument (long or short string).
pub fn string_arg(args: &FieldTable, key: &str) -> Option<String> {
    args.inner().get(key).and_then(broker_core::args::str_value)
}

/// The `alternate-exchange` argument of an exchange, if it names one.
fn alternate_exchange(args: &FieldTable) -> Option<String> {
    string_arg(args, "alternate-exchange").filter(|s| !s.is_empty())
}
