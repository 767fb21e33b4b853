//! The runtime: the node's services (`node.rs`, reachable through `Deref`) plus the
//! vhosts and what operators see of open connections and channels. The top of the
//! broker floor: connections, the HTTP API and startup hold it; vhosts, queues and
//! exchanges never do.

use crate::broker::node::Node;
pub use crate::broker::node::{now_ms, Storage};
use crate::broker::vhost::VHost;
use crate::config::Config;
use actix::prelude::*;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Process-wide broker state. Nothing on the publish path locks it: vhosts are looked up
/// once per connection.
pub struct Runtime {
    /// Settings, workers, memory gauge, store, users (what vhosts share).
    pub node: Arc<Node>,
    next_connection: AtomicU64,
    /// Virtual hosts by name.
    pub vhosts: DashMap<String, Arc<VHost>>,
    /// Open connections, for shutdown and listing.
    pub connections: DashMap<u64, Recipient<crate::broker::messages::ForceClose>>,
    /// What the management API shows of each open connection.
    pub conn_info: DashMap<u64, Arc<ConnInfo>>,
    /// What the management API shows of each open channel, by (connection, channel).
    pub channel_info: DashMap<(u64, u16), Arc<ChannelStats>>,
    /// Bytes read from client sockets.
    pub bytes_in: AtomicU64,
    /// Bytes written to client sockets.
    pub bytes_out: AtomicU64,
    /// Open connections, for fault-injection tests (`POST /api/fault-injection`).
    #[cfg(feature = "fault-injection")]
    pub fault_targets: DashMap<u64, Recipient<crate::broker::fault::Fault>>,
    /// Where the AMQP listener is bound (for connection names).
    pub amqp_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// When the broker started (the node's `uptime` in `/api/nodes`).
    pub started: std::time::Instant,
    /// The metadata materializer's lock, with the topology changes it holds back while
    /// the recovery runs (`broker/materialize.rs`).
    pub materializing: std::sync::Mutex<Option<Deferred>>,
    /// Dynamic shovels (`broker/shovel/`).
    pub shovels: Arc<crate::broker::shovel::Shovels>,
}

/// Topology changes the materializer holds back while the recovery runs (see
/// `broker/materialize.rs`).
#[derive(Default)]
pub struct Deferred {
    /// The changes, in the order they were applied.
    pub changes: Vec<broker_cluster::meta::Change>,
    /// Too many to hold, or the keyspace was replaced: reload everything instead.
    pub reload: bool,
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
    /// Whether the client came over TLS (RabbitMQ's `ssl` field).
    pub tls: bool,
}

impl std::ops::Deref for Runtime {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl Runtime {
    /// Builds the runtime: users, permissions and vhosts come from the store (a fresh
    /// store gets "/" and guest).
    pub fn new(
        config: Config,
        arbiters: Vec<ArbiterHandle>,
        store: Option<Storage>,
    ) -> Result<Arc<Runtime>, String> {
        let node = Arc::new(Node::new(config, arbiters, store)?);
        let shovels = crate::broker::shovel::Shovels::load(
            node.store.as_ref().map(|s| s.definitions.clone()),
            node.store.as_ref().map(|s| s.cluster.clone()),
        )?;
        let rt = Arc::new(Runtime {
            node: node.clone(),
            next_connection: AtomicU64::new(1),
            vhosts: DashMap::new(),
            connections: DashMap::new(),
            conn_info: DashMap::new(),
            channel_info: DashMap::new(),
            amqp_addr: std::sync::OnceLock::new(),
            started: std::time::Instant::now(),
            materializing: std::sync::Mutex::new(None),
            shovels,
            #[cfg(feature = "fault-injection")]
            fault_targets: DashMap::new(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        });
        for rec in node.registry.vhosts() {
            let vhost = VHost::new(&rec.name, node.clone());
            rt.vhosts.insert(rec.name.clone(), vhost);
        }
        Ok(rt)
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
