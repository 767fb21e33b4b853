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
    /// One link per configured peer, fixed at start.
    pub links: HashMap<NodeId, Arc<Link>>,
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
        let id = node_id(&cfg.name);
        let peers: Vec<PeerAddr> = peers.into_iter().filter(|p| p.name != cfg.name).collect();
        let mut peer_names: Vec<String> = peers.iter().map(|p| p.name.clone()).collect();
        peer_names.sort();
        peer_names.dedup();
        let links = peers
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
            links,
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
        for l in self.links.values() {
            self.spawn(link::run(self.clone(), l.clone()));
        }
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

    pub fn link(&self, peer: NodeId) -> Result<&Arc<Link>, NetError> {
        if self.is_stopped() {
            return Err(NetError::Stopped);
        }
        self.links.get(&peer).ok_or(NetError::UnknownPeer(peer))
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
        for l in self.links.values() {
            l.closed();
        }
    }
}
