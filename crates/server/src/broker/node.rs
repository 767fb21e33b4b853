//! The node: what every vhost, queue and exchange shares and that knows no vhost —
//! settings, the worker threads, the memory gauge, the store, users and permissions, and
//! the clock. The runtime (`runtime.rs`) adds the vhosts and open connections on top, so
//! nothing below a vhost ever reaches up to the runtime.

use crate::broker::access::Registry;
use crate::broker::disk::DiskMonitor;
use crate::broker::flow::{Consumers, MemoryGauge};
use crate::broker::login_throttle::LoginThrottle;
use crate::broker::memory::MemoryMonitor;
use crate::config::Config;
use actix::prelude::*;
use broker_core::store::{DefinitionStore, MessageStore};
use broker_store::spill::SpillDir;
use broker_store::store::Flusher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Process-wide services under the vhosts.
pub struct Node {
    /// Resolved settings.
    pub config: Config,
    /// Worker threads, each running a single-threaded actix arbiter.
    arbiters: Vec<ArbiterHandle>,
    /// Round-robin position in `arbiters`.
    next_arbiter: AtomicUsize,
    /// Message bytes held in queues (reported, not alarmed on).
    pub message_bytes: MemoryGauge,
    /// The node's consumers: their number shares out delivery credit.
    pub consumers: Arc<Consumers>,
    /// Ready messages in all queues: pacing looks at the total as well as at each queue
    /// (a fanout to many queues builds a large total from small backlogs).
    pub ready_total: crossbeam_utils::CachePadded<AtomicUsize>,
    /// What the process uses against the memory high watermark.
    pub memory: Arc<MemoryMonitor>,
    /// Durable storage, if any.
    pub store: Option<Storage>,
    /// Users, permissions, vhost records.
    pub registry: Registry,
    /// Policies and operator policies of every vhost.
    pub policies: crate::broker::policies::Policies,
    /// The schema registry (`/api/schemas`) of every vhost.
    pub schemas: crate::broker::schemas::Schemas,
    /// Free space on the data dir's filesystem against `--disk-free-limit`.
    pub disk: Arc<DiskMonitor>,
    /// Where queues' ready messages past their in-memory window wait (with a store).
    pub spills: Option<Arc<SpillDir>>,
    /// Failed logins per address, and the addresses cooled down for them.
    pub login_throttle: LoginThrottle,
    /// The thread that routes delayed exchanges' due messages (`broker/delayed.rs`).
    pub delayed_worker: crate::broker::worker::OrderedWorker,
}

impl Node {
    /// The node's services: users, permissions and vhost records come from the store (a
    /// fresh store gets "/" and guest).
    pub fn new(
        config: Config,
        arbiters: Vec<ArbiterHandle>,
        store: Option<Storage>,
    ) -> Result<Node, String> {
        let memory = MemoryMonitor::new(config.memory_high_watermark);
        memory.watch();
        let definitions = store.as_ref().map(|s| s.definitions.clone());
        let cluster = store.as_ref().map(|s| s.cluster.clone());
        let mut registry = Registry::load(definitions.clone(), cluster.clone())?;
        registry.set_loopback_users(config.loopback_users.clone());
        let schemas = crate::broker::schemas::Schemas::load(definitions.clone(), cluster.clone())?;
        let policies = crate::broker::policies::Policies::load(definitions, cluster)?;
        let disk = DiskMonitor::new(config.disk_free_limit);
        let spills = match &store {
            Some(_) => {
                disk.watch(&config.data_dir);
                Some(SpillDir::open(&config.data_dir.join("spill"))?)
            }
            None => None,
        };
        Ok(Node {
            login_throttle: LoginThrottle::new(config.login_throttle),
            delayed_worker: Default::default(),
            disk,
            spills,
            config,
            arbiters,
            next_arbiter: AtomicUsize::new(0),
            memory,
            message_bytes: MemoryGauge::new(),
            ready_total: Default::default(),
            consumers: Default::default(),
            store,
            registry,
            policies,
            schemas,
        })
    }

    /// The resource alarm that holds publishers, if one is raised: its reason as
    /// `connection.blocked` gives it (RabbitMQ's texts).
    pub fn alarm(&self) -> Option<&'static str> {
        if self.memory.alarm() {
            Some("low on memory")
        } else if self.disk.alarm() {
            Some("low on disk")
        } else {
            None
        }
    }

    /// The next worker, round-robin, so connections and queues spread over all cores.
    pub fn next_arbiter(&self) -> ArbiterHandle {
        let i = self.next_arbiter.fetch_add(1, Ordering::Relaxed);
        match self.arbiters.get(i % self.arbiters.len().max(1)) {
            Some(a) => a.clone(),
            None => Arbiter::current(),
        }
    }
}

/// The store behind its traits, and the group-commit flusher.
#[derive(Clone)]
pub struct Storage {
    /// Exchanges, queues, bindings.
    pub definitions: Arc<dyn DefinitionStore>,
    /// Persistent messages.
    pub messages: Arc<dyn MessageStore>,
    /// Durable queues' deduplication caches (`broker/dedup.rs`).
    pub dedup: Arc<dyn broker_core::dedup::DedupStore>,
    /// One fsync for many publishes.
    pub flusher: Flusher,
    /// The streams' logs (committed by the flusher with the segments).
    pub streams: Arc<broker_store::stream::Streams>,
    /// The node in the cluster: the runtime of its Raft groups and their log (committed
    /// by the flusher too).
    pub cluster: Arc<crate::broker::cluster::ClusterNode>,
}

/// This node's name (`--node-name`), set once at start; `broker@localhost` until then
/// (and in tests that start no node).
pub fn node_name() -> &'static str {
    NODE_NAME.get().map_or("broker@localhost", String::as_str)
}

/// Sets the node's name (at start; later calls change nothing).
pub fn set_node_name(name: &str) {
    let _ = NODE_NAME.set(name.to_owned());
}

static NODE_NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The wall clock in milliseconds since the epoch: TTLs and timeouts count in it, and it
/// is what the store keeps as a message's arrival time (so expiry survives a restart).
/// Read from a clock a background thread refreshes every millisecond: queues and channels
/// ask for the time on every operation, and a system call each time showed in profiles.
pub fn now_ms() -> u64 {
    static CLOCK: std::sync::OnceLock<Arc<AtomicU64>> = std::sync::OnceLock::new();
    let clock = CLOCK.get_or_init(|| {
        let c = Arc::new(AtomicU64::new(wall_ms()));
        let tick = c.clone();
        let _ = std::thread::Builder::new()
            .name("coarse-clock".into())
            .spawn(move || loop {
                tick.store(wall_ms(), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(1));
            });
        c
    });
    clock.load(Ordering::Relaxed).max(1)
}

/// The wall clock in microseconds since the epoch, read now (a system call): for timers
/// that must fire on time to the millisecond (a delayed exchange's due messages).
pub fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
