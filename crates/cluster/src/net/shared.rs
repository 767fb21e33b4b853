//! What every task of one transport shares: identity, limits, the group and service
//! registries, the links by peer id, and the stop signal with the long-lived tasks.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::handshake::LogLimiter;
use super::link::{self, Link};
use super::{listener, GroupRpc, NetConfig, NetError, PeerAddr, Service, ServiceId};
use crate::{node_id, GroupId, NodeId};

pub(crate) struct Shared {
    pub name: String,
    pub id: NodeId,
    pub cfg: NetConfig,
    pub local: Option<SocketAddr>,
    /// The configured peers' names, sorted: told to every peer in the handshake.
    pub peer_names: Vec<String>,
    /// One link per peer: the configured ones from start, and members added later
    /// ([`Shared::add_link`], a node that joined the cluster).
    links: RwLock<HashMap<NodeId, Arc<Link>>>,
    /// The names nodes gave in handshakes they opened to this node (a node that joined
    /// later is known by id in the membership; its name comes from here).
    heard: Mutex<HashMap<NodeId, String>>,
    pub groups: RwLock<HashMap<GroupId, Arc<dyn GroupRpc>>>,
    pub services: RwLock<HashMap<ServiceId, Arc<dyn Service>>>,
    /// One log line per peer per minute for failed handshakes and dials.
    pub log_limit: LogLimiter,
    /// Handshakes that failed after the TCP connection opened (either side).
    pub refused: AtomicU64,
    stop: watch::Sender<bool>,
    tasks: Mutex<JoinSet<()>>,
}

impl Shared {
    pub fn new(mut cfg: NetConfig, peers: Vec<PeerAddr>, local: Option<SocketAddr>) -> Arc<Shared> {
        // A bulk frame must fit the bound, or its sender would wait forever.
        cfg.bulk_bytes = cfg
            .bulk_bytes
            .max(cfg.max_frame + super::HEADER_LEN)
            .min(u32::MAX as usize);
        // A peer must hear from this node at least twice per timeout.
        cfg.link_timeout = cfg.link_timeout.max(std::time::Duration::from_millis(100));
        cfg.heartbeat = cfg
            .heartbeat
            .max(std::time::Duration::from_millis(10))
            .min(cfg.link_timeout / 2);
        let id = node_id(&cfg.name);
        let peers: Vec<PeerAddr> = peers.into_iter().filter(|p| p.name != cfg.name).collect();
        let mut peer_names: Vec<String> = peers.iter().map(|p| p.name.clone()).collect();
        peer_names.sort();
        peer_names.dedup();
        let links: HashMap<NodeId, Arc<Link>> = peers
            .into_iter()
            .map(|p| {
                (
                    node_id(&p.name),
                    Arc::new(Link::new(p.name, p.addr, cfg.bulk_bytes)),
                )
            })
            .collect();
        Arc::new(Shared {
            name: cfg.name.clone(),
            id,
            cfg,
            local,
            peer_names,
            links: RwLock::new(links),
            heard: Mutex::new(HashMap::new()),
            groups: RwLock::new(HashMap::new()),
            services: RwLock::new(HashMap::new()),
            log_limit: LogLimiter::default(),
            refused: AtomicU64::new(0),
            stop: watch::channel(false).0,
            tasks: Mutex::new(JoinSet::new()),
        })
    }

    /// Spawns the listener and one dial loop per peer.
    pub fn start(self: &Arc<Self>, listener: TcpListener) {
        self.spawn(listener::run(self.clone(), listener));
        for l in self.all_links() {
            self.spawn(link::run(self.clone(), l));
        }
    }

    /// Every link, configured or added.
    pub fn all_links(&self) -> Vec<Arc<Link>> {
        let links = self.links.read().unwrap_or_else(|p| p.into_inner());
        links.values().cloned().collect()
    }

    /// The link to `peer`, if there is one.
    pub fn find_link(&self, peer: NodeId) -> Option<Arc<Link>> {
        let links = self.links.read().unwrap_or_else(|p| p.into_inner());
        links.get(&peer).cloned()
    }

    /// Adds a link to `peer` and starts dialing it, unless there is one already (or it
    /// is this node). Returns whether a link was added.
    pub fn add_link(self: &Arc<Self>, peer: PeerAddr) -> bool {
        let id = node_id(&peer.name);
        if id == self.id || self.is_stopped() {
            return false;
        }
        let link = {
            let mut links = self.links.write().unwrap_or_else(|p| p.into_inner());
            if links.contains_key(&id) {
                return false;
            }
            let link = Arc::new(Link::new(peer.name, peer.addr, self.cfg.bulk_bytes));
            links.insert(id, link.clone());
            link
        };
        self.spawn(link::run(self.clone(), link));
        true
    }

    /// Records the name a node gave when it opened a connection to this node.
    pub fn heard(&self, name: &str) {
        let mut heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        heard.insert(node_id(name), name.to_string());
    }

    /// The name of node `id` as it gave it in a handshake, or as configured.
    pub fn name_of(&self, id: NodeId) -> Option<String> {
        if let Some(l) = self.find_link(id) {
            return Some(l.name.clone());
        }
        let heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        heard.get(&id).cloned()
    }

    /// Spawns a task that ends at shutdown and that shutdown waits for.
    pub fn spawn(self: &Arc<Self>, fut: impl Future<Output = ()> + Send + 'static) {
        let me = self.clone();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            tokio::select! {
                _ = me.stopped() => {}
                _ = fut => {}
            }
        });
    }

    /// Spawns the handling of one received request: short-lived, not tracked, cut off
    /// at shutdown.
    pub fn spawn_request(self: &Arc<Self>, fut: impl Future<Output = ()> + Send + 'static) {
        let me = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = me.stopped() => {}
                _ = fut => {}
            }
        });
    }

    /// Resolves once shutdown has begun.
    pub async fn stopped(&self) {
        let mut rx = self.stop.subscribe();
        // Err only when the sender is gone, which `self` prevents.
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn is_stopped(&self) -> bool {
        *self.stop.borrow()
    }

    pub fn link(&self, peer: NodeId) -> Result<Arc<Link>, NetError> {
        if self.is_stopped() {
            return Err(NetError::Stopped);
        }
        self.find_link(peer).ok_or(NetError::UnknownPeer(peer))
    }

    pub fn group(&self, group: GroupId) -> Option<Arc<dyn GroupRpc>> {
        self.groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&group)
            .cloned()
    }

    pub fn service(&self, id: ServiceId) -> Option<Arc<dyn Service>> {
        self.services
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        while tasks.join_next().await.is_some() {}
        for l in self.all_links() {
            l.closed();
        }
    }
}
