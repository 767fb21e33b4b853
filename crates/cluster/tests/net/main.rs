//! The cluster transport over real loopback TCP: transports in one process on free ports,
//! each node with its own `Raft`s over in-memory storage (`store.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod liveness;
mod raft;
mod services;
mod store;
mod tls;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use broker_cluster::net::{Bound, NetConfig, PeerAddr, RaftGroup, Transport};
use broker_cluster::{GroupId, NodeId};
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};

use store::{MemLog, MemSm, Tc};

/// How long any awaited event may take before the test fails.
pub const LIMIT: Duration = Duration::from_secs(20);

/// Test limits: fast redials so a restarted node is found at once.
pub fn config(name: &str, listen: &str, secret: &[u8]) -> NetConfig {
    let mut c = NetConfig::new(name, listen, secret.to_vec());
    c.backoff = (Duration::from_millis(20), Duration::from_millis(200));
    c
}

/// Binds one transport per config on its (free) port, then starts each with every
/// node as peer.
pub async fn start_all(cfgs: Vec<NetConfig>) -> Vec<Transport> {
    let mut bound: Vec<Bound> = Vec::new();
    for c in cfgs {
        bound.push(Transport::bind(c).await.unwrap());
    }
    let peers = peer_list(&bound);
    bound.into_iter().map(|b| b.start(peers.clone())).collect()
}

/// The `NAME@HOST:PORT` list of bound transports (names from their configs).
pub fn peer_list(bound: &[Bound]) -> Vec<PeerAddr> {
    bound
        .iter()
        .map(|b| PeerAddr {
            name: b.name().to_string(),
            addr: b.local_addr().unwrap().to_string(),
        })
        .collect()
}

/// Waits until every transport's link to every other one is up.
pub async fn all_up(nets: &[Transport]) {
    for a in nets {
        for b in nets {
            if a.node_id() != b.node_id() {
                tokio::time::timeout(LIMIT, a.wait_up(b.node_id()))
                    .await
                    .unwrap()
                    .unwrap();
            }
        }
    }
}

/// One group's Raft on one node, with the stores that outlive it.
#[derive(Clone)]
pub struct Member {
    pub raft: Raft<Tc>,
    pub log: MemLog,
    pub sm: MemSm,
}

/// Heartbeats every 50 ms, elections after 1-2 s of silence: far enough apart that a
/// busy test machine does not depose a leader in the middle of a test's writes.
fn raft_config() -> Arc<Config> {
    let c = Config {
        heartbeat_interval: 50,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        // Snapshot every 5 entries and keep no log behind it, so a node that was away
        // catches up by `install_snapshot` over the wire.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(5),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Default::default()
    };
    Arc::new(c.validate().unwrap())
}

/// Starts `group`'s Raft on `net` over the given stores and serves its RPCs.
pub async fn join_group(net: &Transport, group: GroupId, log: MemLog, sm: MemSm) -> Member {
    let raft = Raft::new(
        net.node_id(),
        raft_config(),
        net.router::<Tc>(group),
        log.clone(),
        sm.clone(),
    )
    .await
    .unwrap();
    net.add_group(group, Arc::new(RaftGroup(raft.clone())));
    Member { raft, log, sm }
}

/// The membership of every node in `nets`.
pub fn members(nets: &[Transport]) -> BTreeMap<NodeId, BasicNode> {
    nets.iter()
        .map(|n| {
            (
                n.node_id(),
                BasicNode::new(n.local_addr().unwrap().to_string()),
            )
        })
        .collect()
}
