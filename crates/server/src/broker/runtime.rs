//! What every actor may reach: the worker arbiters to place new actors on, the memory
//! gauge, the settings, and the vhosts.

use crate::config::Config;
use crate::broker::flow::MemoryGauge;
use broker_store::store::Flusher;
use crate::broker::vhost::VHost;
use actix::prelude::*;
use broker_core::store::{DefinitionStore, MessageStore};
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Process-wide broker state. Nothing on the publish path locks it: vhosts are looked up
/// once per connection.
pub struct Runtime {
    /// Resolved settings.
    pub config: Config,
    /// Worker threads, each running a single-threaded actix arbiter.
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: AtomicUsize,
    next_connection: AtomicU64,
    /// Message bytes held in queues.
    pub memory: MemoryGauge,
    /// Virtual hosts by name.
    pub vhosts: DashMap<String, Arc<VHost>>,
    /// Open connections, for shutdown and listing.
    pub connections: DashMap<u64, Recipient<crate::amqp::connection::ForceClose>>,
    /// Durable storage, if any.
    pub store: Option<Storage>,
    /// Users, permissions, vhost records.
    pub registry: crate::broker::access::Registry,
    /// What the management API shows of each open connection.
    pub conn_info: DashMap<u64, Arc<ConnInfo>>,
    /// What the management API shows of each open channel, by (connection, channel).
    pub channel_info: DashMap<(u64, u16), Arc<ChannelStats>>,
    /// Bytes read from client sockets.
    pub bytes_in: AtomicU64,
    /// Bytes written to client sockets.
    pub bytes_out: AtomicU64,
    /// Where the AMQP listener is bound (for connection names).
    pub amqp_addr: std::sync::OnceLock<std::net::SocketAddr>,
}

/// Counters a channel keeps up to date for the management API.
#[derive(Debug, Default)]
pub struct ChannelStats {
    /// basic.qos prefetch count.
    pub prefetch: AtomicU64,
    /// Deliveries awaiting ack.
    pub unacked: AtomicU64,
    /// In confirm mode.
    pub confirm: std::sync::atomic::AtomicBool,
    /// In tx mode.
    pub transactional: std::sync::atomic::AtomicBool,
}

/// An open connection as operators see it.
#[derive(Debug)]
pub struct ConnInfo {
    /// Connection number.
    pub id: u64,
    /// RabbitMQ-style name: "PEER -> LOCAL".
    pub name: String,
    /// Client address.
    pub peer: std::net::SocketAddr,
    /// Authenticated user.
    pub user: String,
    /// Vhost.
    pub vhost: String,
    /// The client's properties.
    pub client: broker_wire::types::FieldTable,
    /// When it opened (ms since the epoch).
    pub connected_at: u64,
    /// Open channels.
    pub channels: std::sync::atomic::AtomicUsize,
    /// Negotiated frame_max.
    pub frame_max: u32,
    /// Negotiated heartbeat (s).
    pub heartbeat: u16,
}

/// The store behind its traits, and the group-commit flusher.
#[derive(Clone)]
pub struct Storage {
    /// Exchanges, queues, bindings.
    pub definitions: Arc<dyn DefinitionStore>,
    /// Persistent messages.
    pub messages: Arc<dyn MessageStore>,
    /// One fsync for many publishes.
    pub flusher: Flusher,
}

impl Runtime {
    /// Builds the runtime: users, permissions and vhosts come from the store (a fresh
    /// store gets "/" and guest).
    pub fn new(
        config: Config,
        arbiters: Vec<ArbiterHandle>,
        store: Option<Storage>,
    ) -> Result<Arc<Runtime>, String> {
        let memory = MemoryGauge::new(config.memory_high_watermark);
        let mut registry =
            crate::broker::access::Registry::load(store.as_ref().map(|s| s.definitions.clone()))?;
        registry.set_loopback_users(config.loopback_users.clone());
        let rt = Arc::new(Runtime {
            config,
            arbiters,
            next_arbiter: AtomicUsize::new(0),
            next_connection: AtomicU64::new(1),
            memory,
            vhosts: DashMap::new(),
            connections: DashMap::new(),
            store,
            registry,
            conn_info: DashMap::new(),
            channel_info: DashMap::new(),
            amqp_addr: std::sync::OnceLock::new(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        });
        for rec in rt.registry.vhosts() {
            let vhost = VHost::new(&rec.name, Arc::downgrade(&rt));
            rt.vhosts.insert(rec.name.clone(), vhost);
        }
        Ok(rt)
    }

    /// The next worker, round-robin, so connections and queues spread over all cores.
    pub fn next_arbiter(&self) -> ArbiterHandle {
        let i = self.next_arbiter.fetch_add(1, Ordering::Relaxed);
        match self.arbiters.get(i % self.arbiters.len().max(1)) {
            Some(a) => a.clone(),
            None => Arbiter::current(),
        }
    }

    /// A fresh connection number.
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    /// A vhost by name.
    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.get(name).map(|v| v.clone())
    }
}

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

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
