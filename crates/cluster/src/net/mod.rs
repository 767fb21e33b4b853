//! The transport between cluster nodes (docs/design/cluster.md §5): tokio TCP, with TLS
//! when configured, run on the cluster's own runtime. [`Transport`] owns it all:
//!
//! - `listener.rs` accepts peers on `--cluster-listen` and answers their requests;
//! - `link.rs` keeps one outgoing connection per peer for this node's own requests
//!   (replies come back on it by correlation id), reconnecting with backoff;
//! - `tls.rs` wraps every connection in mutual TLS when [`NetConfig::tls`] is set;
//! - `handshake.rs` authenticates both sides with the shared secret (HMAC-SHA256);
//! - `frame.rs` and `conn.rs` frame, batch and bound what goes over a connection;
//! - `router.rs` carries every Raft group's RPCs over the same links (multi-raft) and
//!   hands received ones to the group's `Raft` by group id.
//!
//! Beside Raft, app services (metadata forwarding, publishes and deliveries between nodes
//! in later steps) use [`Transport::call`] and [`Transport::send`].

mod conn;
mod frame;
mod handshake;
mod link;
mod listener;
mod router;
mod shared;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;

pub use conn::Lane;
pub use frame::{ReplyError, HEADER_LEN};
pub use handshake::PeerHello;
pub use router::{GroupConn, GroupRpc, RaftGroup, Router, RpcKind};
pub use tls::NodeTls;

use crate::{node_id, GroupId, NodeId};
use shared::Shared;

/// A boxed future, for the type-erased handlers (groups and services).
pub type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// An app service's id (carried where Raft frames carry the group id).
pub type ServiceId = u64;

/// The handler of one app service. A `call`'s answer goes back to the caller; a `send`'s
/// is dropped. One-way messages from one peer are handled one at a time in arrival order
/// (the connection's reader awaits each), so a slow handler slows that peer's sender
/// down instead of buffering; calls run concurrently.
pub trait Service: Send + Sync + 'static {
    /// Handles one request from node `from`.
    fn handle(&self, from: NodeId, payload: Bytes) -> BoxFut<Result<Bytes, String>>;
}

impl<F, Fut> Service for F
where
    F: Fn(NodeId, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, String>> + Send + 'static,
{
    fn handle(&self, from: NodeId, payload: Bytes) -> BoxFut<Result<Bytes, String>> {
        Box::pin(self(from, payload))
    }
}

/// Why a request to a peer failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NetError {
    /// The node is not among this transport's peers.
    #[error("unknown cluster peer {0:#x}")]
    UnknownPeer(NodeId),
    /// No authenticated connection to the peer, or it closed with the request in flight.
    #[error("cluster peer {peer} is unreachable: {why}")]
    Unreachable {
        /// The peer's name.
        peer: String,
        /// What happened.
        why: &'static str,
    },
    /// No answer within the request's time.
    #[error("no answer from cluster peer {peer} within {after:?}")]
    Timeout {
        /// The peer's name.
        peer: String,
        /// The request's time limit.
        after: Duration,
    },
    /// The payload is above the frame limit (`max_frame`).
    #[error("cluster frame of {size} bytes is above the limit of {max}")]
    TooLarge {
        /// The payload's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The peer could not serve the request (unknown group or service, handler error).
    #[error("cluster peer refused the request ({code:?}): {text}")]
    Remote {
        /// Why.
        code: ReplyError,
        /// The peer's text.
        text: String,
    },
    /// The transport was shut down.
    #[error("the cluster transport is shut down")]
    Stopped,
}

/// A peer as `--cluster-peers` lists it: `NAME@HOST:PORT` (the name may itself hold an
/// `@`, as `broker@host` does: the address is after the last one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    /// The peer's node name.
    pub name: String,
    /// Its cluster address, `HOST:PORT`.
    pub addr: String,
}

impl FromStr for PeerAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, addr) = s
            .rsplit_once('@')
            .ok_or_else(|| format!("cluster peer {s:?} is not NAME@HOST:PORT"))?;
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if name.is_empty() || !port_ok {
            return Err(format!("cluster peer {s:?} is not NAME@HOST:PORT"));
        }
        Ok(PeerAddr {
            name: name.to_string(),
            addr: addr.to_string(),
        })
    }
}

/// What a transport is created with; `NetConfig::new` fills the limits' defaults.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// This node's name (`--node-name`).
    pub name: String,
    /// Where to accept peers (`--cluster-listen`); port 0 picks a free one.
    pub listen: String,
    /// The shared secret (the contents of `--cluster-secret-file`).
    pub secret: Vec<u8>,
    /// TLS for every link, dialed and accepted (`--cluster-tls-*`); `None`: plain TCP.
    /// A node with TLS and one without cannot talk: each refuses the other's handshake.
    pub tls: Option<NodeTls>,
    /// The largest frame payload sent or accepted; a peer announcing more is cut off.
    pub max_frame: usize,
    /// Bytes of bulk frames queued per peer before senders wait (at least `max_frame`).
    pub bulk_bytes: usize,
    /// The time limit of [`Transport::call`].
    pub call_timeout: Duration,
    /// The time limit of a connect plus the TLS (if any) and secret handshakes.
    pub handshake_timeout: Duration,
    /// The first and the longest wait between two dials of a peer that is down.
    pub backoff: (Duration, Duration),
    /// How long a connection may be silent before it is closed as dead (its peer frozen
    /// or cut off): the link is then down, as if the peer had closed it.
    pub link_timeout: Duration,
    /// How often a connection with nothing else to send sends a heartbeat frame (kept
    /// below half the link timeout).
    pub heartbeat: Duration,
}

impl NetConfig {
    /// A configuration with the default limits: 16 MiB frames, 64 MiB of bulk per peer,
    /// 10 s calls, 5 s handshakes, redial after 50 ms doubling up to 2 s, links dead
    /// after [`DEFAULT_LINK_TIMEOUT`] of silence with a heartbeat every fifth of it.
    pub fn new(
        name: impl Into<String>,
        listen: impl Into<String>,
        secret: impl Into<Vec<u8>>,
    ) -> NetConfig {
        NetConfig {
            name: name.into(),
            listen: listen.into(),
            secret: secret.into(),
            tls: None,
            max_frame: 16 << 20,
            bulk_bytes: 64 << 20,
            call_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            backoff: (Duration::from_millis(50), Duration::from_secs(2)),
            link_timeout: DEFAULT_LINK_TIMEOUT,
            heartbeat: DEFAULT_LINK_TIMEOUT / 5,
        }
    }
}

/// The default link timeout. RabbitMQ's `net_ticktime` is 60 s; this is far shorter so
/// that a frozen or cut-off node is shown down, and its consumers' messages come back,
/// within seconds. It is still well above what a loaded machine delays a heartbeat by:
/// the writer sends one after a second of quiet, the reader counts only time spent
/// waiting for bytes, and Raft's own elections (1-3 s) already assume the runtime
/// answers within a second.
pub const DEFAULT_LINK_TIMEOUT: Duration = Duration::from_secs(5);

/// A transport whose listener is bound (so its address is known) but that dials no one
/// yet: tests bind every node on port 0 first, then start each with the others' addresses.
pub struct Bound {
    cfg: NetConfig,
    listener: TcpListener,
}

impl Bound {
    /// The node's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The address peers dial.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Starts accepting and dialing `peers` (an entry with this node's own name is
    /// skipped, so every node can be given the same list). Call on the cluster runtime.
    pub fn start(self, peers: Vec<PeerAddr>) -> Transport {
        let local = self.listener.local_addr().ok();
        let shared = Shared::new(self.cfg, peers, local);
        shared.start(self.listener);
        Transport { shared }
    }
}

/// The handle on this node's cluster transport; clones share it.
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
}

impl Transport {
    /// Binds `cfg.listen` (nothing is dialed until [`Bound::start`]).
    pub async fn bind(cfg: NetConfig) -> std::io::Result<Bound> {
        let listener = TcpListener::bind(&cfg.listen).await?;
        Ok(Bound { cfg, listener })
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// This node's Raft id.
    pub fn node_id(&self) -> NodeId {
        self.shared.id
    }

    /// The address peers dial (the bound one, with the picked port).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared.local
    }

    /// The largest frame payload this transport sends (`NetConfig::max_frame`): app
    /// services that carry batches split them below it.
    pub fn max_frame(&self) -> usize {
        self.shared.cfg.max_frame
    }

    /// The configured peers: name and Raft id.
    pub fn peers(&self) -> Vec<(String, NodeId)> {
        self.shared
            .all_links()
            .iter()
            .map(|l| (l.name.clone(), l.id))
            .collect()
    }

    /// Adds `peer` (a node that joined the cluster after this transport started) and
    /// starts dialing it; nothing if it has a link already or is this node. The peer set
    /// told in handshakes stays the configured one. Returns whether it was added.
    pub fn add_peer(&self, peer: PeerAddr) -> bool {
        self.shared.add_link(peer)
    }

    /// The name of node `id`: a configured or added peer's, or the one it gave when it
    /// opened a connection to this node; `None` if it never said.
    pub fn name_of(&self, id: NodeId) -> Option<String> {
        if id == self.shared.id {
            return Some(self.shared.name.clone());
        }
        self.shared.name_of(id)
    }

    /// Whether this node's connection to `peer` is open and authenticated.
    pub fn is_up(&self, peer: NodeId) -> bool {
        self.shared.find_link(peer).is_some_and(|l| l.is_up())
    }

    /// Which connection to `peer` is up: `Some(n)` while the link's n-th connection is
    /// open and authenticated, `None` while it is down. Whoever acts on the loss of a
    /// peer keeps what it saw and compares: any other value later means the link went
    /// down since, even if it came back in between (a connection that dropped took its
    /// requests, replies and one-way messages with it).
    pub fn link_session(&self, peer: NodeId) -> Option<u64> {
        self.shared.find_link(peer).and_then(|l| l.session())
    }

    /// How long a silent connection is kept (`NetConfig::link_timeout`).
    pub fn link_timeout(&self) -> Duration {
        self.shared.cfg.link_timeout
    }

    /// Waits until the connection to `peer` is open and authenticated.
    pub async fn wait_up(&self, peer: NodeId) -> Result<(), NetError> {
        self.shared.link(peer)?.wait_up().await
    }

    /// What `peer` said in its last successful handshake (its name and configured peers).
    pub fn peer_hello(&self, peer: NodeId) -> Option<PeerHello> {
        self.shared.find_link(peer).and_then(|l| l.hello())
    }

    /// How many handshakes failed after the TCP connection opened, on either side (a
    /// peer with another secret, another version, or the wrong name at an address).
    pub fn refused_handshakes(&self) -> u64 {
        self.shared
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Serves Raft RPCs for `group` with `rpc` (replacing any earlier one).
    pub fn add_group(&self, group: GroupId, rpc: Arc<dyn GroupRpc>) {
        self.shared
            .groups
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group, rpc);
    }

    /// Stops serving `group`: its RPCs are answered "unknown group" (`Unreachable` to the
    /// sender's Raft).
    pub fn remove_group(&self, group: GroupId) {
        self.shared
            .groups
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&group);
    }

    /// The network factory for one group's `Raft`.
    pub fn router<C>(&self, group: GroupId) -> Router<C> {
        Router::new(self.clone(), group)
    }

    /// Serves app service `id` with `svc` (replacing any earlier one).
    pub fn add_service(&self, id: ServiceId, svc: Arc<dyn Service>) {
        self.shared
            .services
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, svc);
    }

    /// Stops serving app service `id`.
    pub fn remove_service(&self, id: ServiceId) {
        self.shared
            .services
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Calls `service` on `peer` and returns its answer, within `call_timeout`. Fails at
    /// once when the peer's link is down (the caller decides whether to retry elsewhere).
    pub async fn call(
        &self,
        peer: NodeId,
        service: ServiceId,
        payload: Bytes,
    ) -> Result<Bytes, NetError> {
        self.call_timeout(peer, service, payload, self.shared.cfg.call_timeout)
            .await
    }

    /// [`Transport::call`] with its own time limit.
    pub async fn call_timeout(
        &self,
        peer: NodeId,
        service: ServiceId,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, NetError> {
        self.request(
            peer,
            frame::Kind::Call,
            service,
            payload,
            Lane::Bulk,
            timeout,
        )
        .await
    }

    /// Sends a one-way message to `service` on `peer`, on the bulk lane: waits while the
    /// peer's bulk lane is full (backpressure), fails when the link is down.
    pub async fn send(
        &self,
        peer: NodeId,
        service: ServiceId,
        payload: Bytes,
    ) -> Result<(), NetError> {
        self.shared
            .link(peer)?
            .one_way(&self.shared, service, payload)
            .await
    }

    /// Bytes now queued on `peer`'s bulk lane (at most `bulk_bytes`).
    pub fn bulk_queued(&self, peer: NodeId) -> usize {
        self.shared
            .find_link(peer)
            .map_or(0, |l| l.bulk_queued(&self.shared))
    }

    pub(crate) async fn request(
        &self,
        peer: NodeId,
        kind: frame::Kind,
        group: GroupId,
        payload: Bytes,
        lane: Lane,
        timeout: Duration,
    ) -> Result<Bytes, NetError> {
        self.shared
            .link(peer)?
            .request(&self.shared, kind, group, payload, lane, timeout)
            .await
    }

    /// Closes the listener and every connection and waits for their tasks to end; every
    /// request in flight fails. Groups keep their `Raft`s (the owner shuts those down).
    pub async fn shutdown(&self) {
        self.shared.shutdown().await;
    }
}

/// The Raft id of the node named `name` (re-exported for callers of this module).
pub fn peer_id(name: &str) -> NodeId {
    node_id(name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails by panicking
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_parse_after_the_last_at() {
        let p: PeerAddr = "broker@a@10.0.0.1:25672".parse().unwrap();
        assert_eq!(
            p,
            PeerAddr {
                name: "broker@a".into(),
                addr: "10.0.0.1:25672".into()
            }
        );
        assert!("broker@a".parse::<PeerAddr>().is_err());
        assert!("@h:1".parse::<PeerAddr>().is_err());
        assert!("n@h:x".parse::<PeerAddr>().is_err());
    }
}
