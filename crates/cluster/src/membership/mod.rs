//! The node in the metadata group (docs/design/cluster.md §7): [`ClusterMembership`]
//! starts the transport and the metadata group's `Raft` on it, forms the group on first
//! start from `--cluster-peers` (`bootstrap.rs`: every listed node must answer the
//! handshake with the identical peer set first, the split-brain guard), asks a formed
//! cluster to add this node when it is not a member (`join.rs`), keeps links to members
//! that joined after the transport started, and reports every member's state for
//! `/api/nodes` and `broker-cli cluster status` ([`ClusterMembership::status`]).
//!
//! A restart reopens the Raft log and state machine from the data dir and rejoins: there
//! is nothing to bootstrap, openraft catches the node up by log or snapshot.

mod bootstrap;
mod join;

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::{BasicNode, SnapshotPolicy};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::log::NodeLog;
use crate::meta::{forward_service, MetaHandle, MetaRaft, MetaSm, MetaTc, META_FORWARD_SERVICE};
use crate::net::{Bound, PeerAddr, RaftGroup, Transport};
use crate::{node_id, NodeId, META_GROUP};

pub use join::JOIN_SERVICE;

/// How a node's place in the metadata group was settled, as the bootstrap task sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// Fresh Raft state; the task has not decided yet.
    Pending,
    /// Fresh Raft state, and the group cannot be formed yet: the text says why (a peer
    /// that did not answer, or one configured with another peer set).
    Waiting(String),
    /// The node is in the group: it formed it, joined it, or had Raft state on disk.
    Member,
}

/// What the membership needs beside the bound transport.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// `--cluster-peers` (an entry with this node's own name is allowed and skipped).
    pub peers: Vec<PeerAddr>,
    /// The address other nodes reach this node at; `None`: this node's entry in `peers`,
    /// else the bound listener's address.
    pub advertise: Option<String>,
    /// The metadata group's Raft configuration (validated).
    pub raft: Arc<openraft::Config>,
}

impl MembershipConfig {
    /// `peers` with the metadata group's standard Raft timings: heartbeats every 100 ms,
    /// elections after 1–2 s of silence, a snapshot every 1000 entries.
    pub fn new(peers: Vec<PeerAddr>) -> Result<MembershipConfig, String> {
        let raft = openraft::Config {
            cluster_name: "broker-meta".into(),
            heartbeat_interval: 100,
            election_timeout_min: 1000,
            election_timeout_max: 2000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(1000),
            ..Default::default()
        };
        let raft = raft.validate().map_err(|e| e.to_string())?;
        Ok(MembershipConfig {
            peers,
            advertise: None,
            raft: Arc::new(raft),
        })
    }
}

/// One member as `/api/nodes` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// Its node name (`node-<id>` when no handshake ever told this node the name).
    pub name: String,
    /// Its Raft id.
    pub id: NodeId,
    /// Its cluster address as the membership records it.
    pub addr: String,
    /// Whether it votes (a joining node is a learner until it caught up).
    pub voter: bool,
    /// This node, or a node whose link from this node is open and authenticated.
    pub running: bool,
}

/// The metadata group as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// Every member, by name; before the group is formed, this node and its peers.
    pub nodes: Vec<NodeStatus>,
    /// The metadata leader's name, if this node knows one.
    pub leader: Option<String>,
}

/// This node's transport and metadata group, with the tasks that form and keep it.
pub struct ClusterMembership {
    net: Transport,
    raft: MetaRaft,
    bootstrap: watch::Receiver<Bootstrap>,
    tasks: Vec<JoinHandle<()>>,
}

impl ClusterMembership {
    /// Starts `bound` with the configured peers, the metadata group over `log` and `sm`
    /// on it, the forwarding and join services, and the task that forms or joins the
    /// group when the Raft state is fresh. Call on the cluster runtime.
    pub async fn start(
        bound: Bound,
        cfg: MembershipConfig,
        log: &Arc<NodeLog>,
        sm: MetaSm,
    ) -> Result<ClusterMembership, String> {
        let name = bound.name().to_string();
        let listened = bound.local_addr().map_err(|e| e.to_string())?.to_string();
        let own = cfg
            .peers
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.addr.clone());
        let addr = cfg.advertise.clone().or(own).unwrap_or(listened);
        let net = bound.start(cfg.peers.clone());
        let group = log
            .group::<MetaTc>(META_GROUP)
            .map_err(|e| format!("cannot open the metadata log: {e}"))?;
        let router = net.router::<MetaTc>(META_GROUP);
        let raft = MetaRaft::new(net.node_id(), cfg.raft.clone(), router, group, sm)
            .await
            .map_err(|e| format!("cannot start the metadata group: {e}"))?;
        net.add_group(META_GROUP, Arc::new(RaftGroup(raft.clone())));
        net.add_service(META_FORWARD_SERVICE, forward_service(raft.clone()));
        net.add_service(JOIN_SERVICE, join::service(raft.clone(), net.clone()));
        let fresh = !raft
            .is_initialized()
            .await
            .map_err(|e| format!("the metadata group stopped: {e}"))?;
        let (tx, rx) = watch::channel(if fresh {
            Bootstrap::Pending
        } else {
            Bootstrap::Member
        });
        let mut tasks = vec![tokio::spawn(bootstrap::keep_links(
            raft.clone(),
            net.clone(),
        ))];
        if fresh {
            let members = initial_members(&name, &addr, &cfg.peers);
            let task = bootstrap::Task::new(raft.clone(), net.clone(), members, addr, tx);
            tasks.push(tokio::spawn(task.run()));
        }
        Ok(ClusterMembership {
            net,
            raft,
            bootstrap: rx,
            tasks,
        })
    }

    /// The node's transport (services of later steps register on it).
    pub fn transport(&self) -> &Transport {
        &self.net
    }

    /// The metadata group's `Raft` on this node.
    pub fn raft(&self) -> &MetaRaft {
        &self.raft
    }

    /// A handle that proposes to the metadata group, forwarding to the leader.
    pub fn meta(&self) -> MetaHandle {
        MetaHandle::new(self.raft.clone()).with_transport(self.net.clone())
    }

    /// Where the bootstrap stands (a watch: tests and the server's start await it).
    pub fn bootstrap(&self) -> watch::Receiver<Bootstrap> {
        self.bootstrap.clone()
    }

    /// Every member, whether it runs, and the leader (see [`ClusterStatus`]).
    pub fn status(&self) -> ClusterStatus {
        status(&self.raft, &self.net)
    }

    /// Stops the bootstrap and link tasks, the metadata group and the transport. The
    /// store and log stay open (the caller drops them).
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        // the services hold the transport and the Raft: let go of both
        self.net.remove_service(JOIN_SERVICE);
        self.net.remove_service(META_FORWARD_SERVICE);
        self.net.remove_group(META_GROUP);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("metadata group did not stop cleanly: {e}");
        }
        self.net.shutdown().await;
    }
}

/// The membership every node computes alike from `--cluster-peers`: this node and each
/// peer, with the address the list gives (this node's own entry when it is listed).
fn initial_members(name: &str, addr: &str, peers: &[PeerAddr]) -> BTreeMap<NodeId, BasicNode> {
    let mut members: BTreeMap<NodeId, BasicNode> = peers
        .iter()
        .map(|p| (node_id(&p.name), BasicNode::new(&p.addr)))
        .collect();
    members.insert(node_id(name), BasicNode::new(addr));
    members
}

/// The status of the group from `raft`'s metrics and `net`'s links.
fn status(raft: &MetaRaft, net: &Transport) -> ClusterStatus {
    let m = raft.metrics().borrow().clone();
    let me = net.node_id();
    let name = |id: NodeId| net.name_of(id).unwrap_or_else(|| format!("node-{id:016x}"));
    let membership = m.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let mut nodes: Vec<NodeStatus> = membership
        .nodes()
        .map(|(id, n)| NodeStatus {
            name: name(*id),
            id: *id,
            addr: n.addr.clone(),
            voter: voters.contains(id),
            running: *id == me || net.is_up(*id),
        })
        .collect();
    if nodes.is_empty() {
        // not formed yet: this node and the peers it was given
        let addr = net.local_addr().map(|a| a.to_string()).unwrap_or_default();
        nodes.push(NodeStatus {
            name: net.name().to_string(),
            id: me,
            addr,
            voter: false,
            running: true,
        });
        for (peer, id) in net.peers() {
            nodes.push(NodeStatus {
                name: peer,
                id,
                addr: String::new(),
                voter: false,
                running: net.is_up(id),
            });
        }
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    ClusterStatus {
        nodes,
        leader: m.current_leader.map(name),
    }
}
