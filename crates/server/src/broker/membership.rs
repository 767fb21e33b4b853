//! This node in a cluster of several (`--cluster-peers`; docs/design/cluster.md §7): the
//! transport and the metadata group started through `broker-cluster`'s
//! [`ClusterMembership`] instead of a group of one, the wait at start until the node is
//! a member that has applied the group's log, the status `/api/nodes` and
//! `broker-cli cluster status` show, and the clean stop.
//!
//! The node serves nothing before it is a member and caught up: its definitions are the
//! group's, and a node that answered from an older copy would let clients declare
//! against a state the cluster already left.

use crate::broker::runtime::Storage;
use crate::config::ClusterSettings;
use broker_cluster::membership::{Bootstrap, ClusterMembership, ClusterStatus, MembershipConfig};
use broker_cluster::meta::{MetaCmd, MetaHandle, MetaSm};
use broker_cluster::net::{NetConfig, Transport};
use broker_cluster::quorum::QuorumNode;
use tracing::{info, warn};

/// What a frame between nodes may hold beyond the largest message: the entry's and the
/// RPC's own fields (ids, properties, routing key, exchange).
const FRAME_HEADROOM: usize = 1 << 20;

/// Starts the transport on `--cluster-listen` and the metadata group with the peers,
/// over `sm`; returns the forwarding handle once this node is a member (it formed the
/// group, joined it, or had Raft state on disk) and has applied every entry the group
/// had committed when it got there.
///
/// `max_message` is `max_message_size`: a quorum queue entry holding one message of that
/// size must fit one frame between nodes, so frames are allowed [`FRAME_HEADROOM`] more
/// (and a peer's bulk lane at least four of them).
pub(crate) async fn start(
    s: &Storage,
    settings: &ClusterSettings,
    sm: MetaSm,
    rt: std::sync::Weak<crate::broker::runtime::Runtime>,
    max_message: u64,
) -> Result<MetaHandle, String> {
    let (name, listen) = (s.cluster.name.clone(), settings.listen.clone());
    let (secret, peers) = (settings.secret.0.clone(), settings.peers.clone());
    let (link_timeout, tls) = (settings.link_timeout, settings.tls.clone());
    let log = s.cluster.log.clone();
    let cluster = s.cluster.clone();
    let membership = s
        .cluster
        .run(async move {
            let mut cfg = NetConfig::new(name, listen.clone(), secret);
            cfg.link_timeout = link_timeout;
            let mode = if tls.is_some() { "TLS" } else { "plain TCP" };
            cfg.tls = tls;
            cfg.heartbeat = link_timeout / 5;
            let need = usize::try_from(max_message)
                .unwrap_or(usize::MAX)
                .saturating_add(FRAME_HEADROOM);
            cfg.max_frame = cfg.max_frame.max(need);
            cfg.bulk_bytes = cfg.bulk_bytes.max(cfg.max_frame.saturating_mul(4));
            let bound = Transport::bind(cfg)
                .await
                .map_err(|e| format!("cannot listen for cluster peers on {listen}: {e}"))?;
            if let Ok(addr) = bound.local_addr() {
                info!("cluster listening on {addr} ({mode})");
            }
            let m =
                ClusterMembership::start(bound, MembershipConfig::new(peers)?, &log, sm).await?;
            // queues used from other nodes are served from the start (broker/remote.rs)
            crate::broker::remote::register(m.transport(), rt);
            // quorum queues with several members: forwarding, deliveries and cancels
            // between nodes, before any queue starts (recovery runs after this)
            let net = m.transport().clone();
            crate::broker::qq_inbound::register(&net, &cluster);
            cluster.set_quorum(QuorumNode::new(net));
            Ok::<_, String>(m)
        })
        .await
        .ok_or("the cluster runtime is gone")??;
    s.cluster.set_transport(membership.transport().clone());
    let meta = membership.meta();
    let boot = membership.bootstrap();
    *lock(s) = Some(membership);
    wait_member(boot).await?;
    caught_up(&meta).await;
    Ok(meta)
}

/// Until the bootstrap says the node is a member, logging each reason it waits.
async fn wait_member(mut boot: tokio::sync::watch::Receiver<Bootstrap>) -> Result<(), String> {
    loop {
        let now = boot.borrow_and_update().clone();
        match now {
            Bootstrap::Member => return Ok(()),
            Bootstrap::Waiting(why) => info!("waiting for peers: {why}"),
            Bootstrap::Pending => {}
        }
        if boot.changed().await.is_err() && *boot.borrow() != Bootstrap::Member {
            return Err("the metadata group stopped before this node became a member".into());
        }
    }
}

/// Commits an empty transaction through the group and waits for this node to apply
/// it: everything committed before is then applied (and materialized) here. A group
/// without a majority does not answer: the node waits, saying so.
async fn caught_up(meta: &MetaHandle) {
    let barrier = MetaCmd::Txn {
        guards: Vec::new(),
        ops: Vec::new(),
    };
    loop {
        match meta.propose(barrier.clone()).await {
            Ok(_) => return,
            Err(e) => warn!("waiting for the metadata group to answer: {e}"),
        }
    }
}

fn lock(s: &Storage) -> std::sync::MutexGuard<'_, Option<ClusterMembership>> {
    s.cluster
        .membership
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The members, whether each runs, and the metadata leader; `None` on a cluster of one.
pub fn status(s: &Storage) -> Option<ClusterStatus> {
    lock(s).as_ref().map(|m| m.status())
}

/// Stops the metadata group and the transport (at shutdown, after the connections
/// closed), so peers see the link go at once rather than at a timeout.
pub async fn shutdown(s: &Storage) {
    let Some(m) = lock(s).take() else {
        return;
    };
    if s.cluster.run(m.shutdown()).await.is_none() {
        warn!("the cluster runtime was gone before the cluster stopped");
    }
    info!("left the cluster");
}
