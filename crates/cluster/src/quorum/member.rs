//! Replicated quorum queue groups on this node (docs/design/cluster.md §3, step 7):
//! [`QuorumNode`] starts a group's member over the cluster transport, keeps the node's
//! groups in a registry ([`QuorumGroups`]) that the forwarding service looks commands
//! up in, and stops them. [`Leadership`] is what the server's shell watches to start or
//! stop carrying effects out and to propose `LeaderChanged` when it takes over.

use super::forward::forward_service;
use super::handle::QuorumHandle;
use super::{initialize, EffectSink, Opened, QqRaft, QqSm, QqTc, QuorumGroup, QQ_FORWARD_SERVICE};
use crate::log::NodeLog;
use crate::net::{RaftGroup, Transport};
use crate::{GroupId, Node, NodeId};
use broker_store::raft::snapshots::SnapshotFiles;
use openraft::{Config, ServerState};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// This node's replicated groups by id (clones share it): the forwarding service answers
/// for the groups found here and "unknown group" for the others.
#[derive(Clone, Default)]
pub struct QuorumGroups {
    inner: Arc<RwLock<HashMap<GroupId, QqRaft>>>,
}

impl QuorumGroups {
    /// The member of group `id` on this node, if it runs here.
    pub fn get(&self, id: GroupId) -> Option<QqRaft> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    fn insert(&self, id: GroupId, raft: QqRaft) {
        let mut m = self.inner.write().unwrap_or_else(|p| p.into_inner());
        m.insert(id, raft);
    }

    fn remove(&self, id: GroupId) -> Option<QqRaft> {
        let mut m = self.inner.write().unwrap_or_else(|p| p.into_inner());
        m.remove(&id)
    }
}

/// What a member of a replicated group starts with.
#[derive(Clone)]
pub struct MemberSpec {
    /// The group ([`super::quorum_group_id`]).
    pub id: GroupId,
    /// The initial members with their cluster addresses, identical on every member (as
    /// the metadata group's membership gives them): used only when the log is empty.
    pub members: BTreeMap<NodeId, Node>,
    /// The openraft configuration ([`super::config`]; tests shorten it).
    pub config: Arc<Config>,
    /// This member initializes the group when its log is empty. openraft's
    /// `initialize` starts an election at once, so when every member initialized, they
    /// all stood together and any could win: only the member placed to lead does, and
    /// the others take the membership from its first entries (or initialize later,
    /// [`QuorumGroup::initialize`], once it is found down).
    pub initialize: bool,
}

/// Whether this node leads a group, as its Raft metrics say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// This node's current term.
    pub term: u64,
    /// This node is the leader (of `term`). A change of `term` while leading is a new
    /// leadership too: the shell proposes `LeaderChanged` again.
    pub leading: bool,
}

/// The quorum queue side of this node: the transport, and the registry of its groups.
/// [`QuorumNode::new`] registers [`QQ_FORWARD_SERVICE`] on the transport.
#[derive(Clone)]
pub struct QuorumNode {
    net: Transport,
    groups: QuorumGroups,
}

impl QuorumNode {
    /// The quorum side over `net` (create it on the cluster runtime, once per node).
    pub fn new(net: Transport) -> QuorumNode {
        let groups = QuorumGroups::default();
        net.add_service(QQ_FORWARD_SERVICE, forward_service(groups.clone()));
        QuorumNode { net, groups }
    }

    /// The transport.
    pub fn transport(&self) -> &Transport {
        &self.net
    }

    /// The node's groups.
    pub fn groups(&self) -> &QuorumGroups {
        &self.groups
    }

    /// Starts this node's member of `spec.id` (on the cluster runtime): log from `log`,
    /// state from `snapshots`, effects of the entries it writes while it leads to
    /// `sink`, RPCs over the transport. A new group (empty log) is initialized with
    /// `spec.members`; every member does so with the same set, which openraft accepts.
    pub async fn start_group(
        &self,
        spec: MemberSpec,
        log: &Arc<NodeLog>,
        snapshots: SnapshotFiles,
        sink: Arc<dyn EffectSink>,
    ) -> Result<QuorumGroup, String> {
        let id = spec.id;
        let me = self.net.node_id();
        let opened = Opened::open(id, log, &sink).await?;
        let sm = QqSm::open_member(id, snapshots, sink, me, opened.store.clone())?;
        let network = self.net.router::<QqTc>(id);
        let raft = QqRaft::new(me, spec.config, network, opened.store, sm.clone())
            .await
            .map_err(|e| format!("group {id}: cannot start: {e}"))?;
        self.net.add_group(id, Arc::new(RaftGroup(raft.clone())));
        self.groups.insert(id, raft.clone());
        let recovered = opened.last.is_some();
        if !recovered && spec.initialize {
            if let Err(e) = initialize(id, &raft, spec.members).await {
                self.stop_group(id).await;
                return Err(e);
            }
        }
        Ok(QuorumGroup {
            id,
            raft,
            sm,
            recovered,
        })
    }

    /// Stops this node's member of `id`: no more RPCs or forwarded commands reach it,
    /// and its Raft shuts down (its log and snapshot stay for a restart).
    pub async fn stop_group(&self, id: GroupId) {
        self.net.remove_group(id);
        if let Some(raft) = self.groups.remove(id) {
            if let Err(e) = raft.shutdown().await {
                tracing::warn!(group = id, "quorum group did not stop cleanly: {e}");
            }
        }
    }

    /// A handle that proposes to `group`'s leader wherever it is.
    pub fn handle(&self, group: &QuorumGroup) -> QuorumHandle {
        QuorumHandle::new(group.raft.clone(), group.id).with_transport(self.net.clone())
    }
}

impl QuorumGroup {
    /// A watch of this node's [`Leadership`] of the group, from its Raft metrics (a task
    /// on the current runtime follows them; it ends with the group). The shell proposes
    /// `LeaderChanged` when it sees `leading` with a new term, carries effects out while
    /// it leads, and stops when it no longer does.
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        let me = self.raft.metrics().borrow().id;
        let of = move |m: &openraft::RaftMetrics<NodeId, Node>| Leadership {
            leader: m.current_leader,
            term: m.current_term,
            leading: m.state == ServerState::Leader && m.current_leader == Some(me),
        };
        let mut metrics = self.raft.metrics();
        let (tx, rx) = watch::channel(of(&metrics.borrow()));
        tokio::spawn(async move {
            while metrics.changed().await.is_ok() {
                let now = of(&metrics.borrow_and_update());
                tx.send_if_modified(|l| std::mem::replace(l, now) != now);
                if tx.is_closed() {
                    break;
                }
            }
        });
        rx
    }
}
