//! Quorum queue groups (issue 16, docs/design/cluster.md §3): each quorum queue is a
//! Raft group of its own whose log carries [`QqCmd`]s and whose state machine
//! ([`QqSm`]) is broker-core's deterministic [`broker_core::quorum::QqState`]. What the
//! state decides to do (deliver, dead-letter, nack, cancel) is handed to an
//! [`EffectSink`] that the server implements; only the leader's node carries it out.
//!
//! [`QuorumGroup::start`] opens a group on this node: its log from the node's
//! [`crate::log::NodeLog`], its state from its last snapshot file, a `Raft` on the
//! caller's runtime (the cluster runtime), initialized with the given members the first
//! time (openraft refuses a second `initialize` with `NotAllowed`: already done).
//!
//! Groups with several members (step 7) start through [`QuorumNode::start_group`]: the
//! group's RPCs over the cluster [`crate::net::Transport`], a registry of this node's
//! groups for the forwarding service ([`QQ_FORWARD_SERVICE`]), a [`QuorumHandle`] that
//! proposes on the leader wherever it is, a [`Leadership`] watch for the shell, and
//! [`QQ_DELIVER_SERVICE`] for deliveries to consumers on other nodes.

mod deliver;
mod forward;
mod handle;
mod member;
mod sm;

pub use deliver::{
    deliver_service, send_deliveries, DeliverBatch, DeliveryReceiver, RemoteDelivery,
    QQ_DELIVER_SERVICE,
};
pub use forward::QQ_FORWARD_SERVICE;
pub use handle::{Pending, ProposeError, Proposed, QuorumHandle, PROPOSE_TIMEOUT};
pub use member::{Leadership, MemberSpec, QuorumGroups, QuorumNode};
pub use sm::{Counts, EffectSink, QqSm};

use crate::log::{GroupLog, NodeLog};
use crate::{GroupId, Node, NodeId};
use broker_core::quorum::{QqCmd, QqResp};
use broker_store::raft::snapshots::SnapshotFiles;
use openraft::error::{InitializeError, RaftError};
use openraft::storage::RaftLogStorage;
use openraft::{Config, SnapshotPolicy};
use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

openraft::declare_raft_types!(
    /// A quorum queue group's types: queue commands in, their answers out.
    pub QqTc:
        D = QqCmd,
        R = QqResp,
        NodeId = crate::NodeId,
        Node = crate::Node,
        Entry = openraft::Entry<QqTc>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A quorum queue group member.
pub type QqRaft = openraft::Raft<QqTc>;

/// The Raft group of the quorum queue whose store id is `store_id`: group 0 is the
/// metadata group and store ids start at 0, so the queue's group is its store id + 1
/// (unique and never reused, as store ids are).
pub fn quorum_group_id(store_id: u64) -> GroupId {
    store_id + 1
}

/// Heartbeat of a quorum queue group (design §5: many groups per node, so slower than
/// the metadata group's).
pub const HEARTBEAT_MS: u64 = 500;
/// Election timeout range of a quorum queue group (design §5).
pub const ELECTION_MS: (u64, u64) = (1500, 3000);
/// A snapshot is built after this many entries (each `Enqueue` entry is a batch of
/// publishes, and a snapshot holds every live body, so not often).
pub const SNAPSHOT_EVERY: u64 = 4096;
/// Entries kept behind a snapshot (a lagging follower catches up from the log).
pub const KEEP_BEHIND_SNAPSHOT: u64 = 1024;

/// Entries per `append_entries` RPC: with [`MAX_BATCH_BYTES`] per entry they stay below
/// the transport's default 16 MiB frame (openraft bounds replication by entries only).
pub const MAX_PAYLOAD_ENTRIES: u64 = 32;
/// The largest `Enqueue` batch the shell should gather into one entry (a single message
/// above it is still one entry of its own; see [`MAX_PAYLOAD_ENTRIES`]).
pub const MAX_BATCH_BYTES: usize = 256 << 10;
/// Snapshot chunk size: one `install_snapshot` frame each, well below the frame limit.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 4 << 20;

/// The openraft configuration of a quorum queue group.
pub fn config() -> Result<Arc<Config>, String> {
    let c = Config {
        cluster_name: "quorum".into(),
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: ELECTION_MS.0,
        election_timeout_max: ELECTION_MS.1,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY),
        max_in_snapshot_log_to_keep: KEEP_BEHIND_SNAPSHOT,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        ..Default::default()
    };
    c.validate()
        .map(Arc::new)
        .map_err(|e| format!("quorum queue raft config: {e}"))
}

/// One quorum queue group on this node: its Raft handle and state machine.
#[derive(Clone)]
pub struct QuorumGroup {
    /// The group's id ([`quorum_group_id`]).
    pub id: GroupId,
    /// The Raft member on this node.
    pub raft: QqRaft,
    /// Its state machine (counts for the management API).
    pub sm: QqSm,
    /// The group had a log on this node already (a restart, not a new queue).
    pub recovered: bool,
}

impl QuorumGroup {
    /// Opens group `id` on this node: the log from `log`, the state from `snapshots`,
    /// effects to `sink`, the network from `network`. Call it on the cluster runtime
    /// (openraft spawns the group's core on the current runtime). `members` become the
    /// initial membership when the group is new. Every effect reaches the sink: a
    /// group of one leads whatever it applies (replicated groups start through
    /// [`QuorumNode::start_group`]).
    pub async fn start<N>(
        id: GroupId,
        me: NodeId,
        members: BTreeMap<NodeId, Node>,
        log: &Arc<NodeLog>,
        snapshots: SnapshotFiles,
        sink: Arc<dyn EffectSink>,
        network: N,
    ) -> Result<QuorumGroup, String>
    where
        N: openraft::network::RaftNetworkFactory<QqTc>,
    {
        let opened = Opened::open(id, log, &sink).await?;
        let sm = QqSm::open(id, snapshots, sink)?;
        let raft = QqRaft::new(me, config()?, network, opened.store, sm.clone())
            .await
            .map_err(|e| format!("group {id}: cannot start: {e}"))?;
        let recovered = opened.last.is_some();
        if !recovered {
            initialize(id, &raft, members).await?;
        }
        Ok(QuorumGroup {
            id,
            raft,
            sm,
            recovered,
        })
    }
}

impl QuorumGroup {
    /// `initialize(members)` of a new group on this member, when it was started without
    /// (the member placed to lead is down): it stands for election at once. Nothing
    /// happens when the group has a membership already (another member's reached it).
    pub async fn initialize(&self, members: BTreeMap<NodeId, Node>) -> Result<(), String> {
        initialize(self.id, &self.raft, members).await
    }
}

/// A group's log opened and its sink told what it held.
struct Opened {
    store: GroupLog<QqTc>,
    last: Option<u64>,
}

impl Opened {
    async fn open(
        id: GroupId,
        log: &Arc<NodeLog>,
        sink: &Arc<dyn EffectSink>,
    ) -> Result<Opened, String> {
        let mut store = log
            .group::<QqTc>(id)
            .map_err(|e| format!("group {id}: cannot open its log: {e}"))?;
        let last = store
            .get_log_state()
            .await
            .map_err(|e| format!("group {id}: cannot read its log: {e}"))?
            .last_log_id
            .map(|l| l.index);
        sink.opened(last);
        Ok(Opened { store, last })
    }
}

/// `initialize(members)` of a new group; `NotAllowed` means another member's
/// identical initialization reached this node first, or it was done before.
async fn initialize(
    id: GroupId,
    raft: &QqRaft,
    members: BTreeMap<NodeId, Node>,
) -> Result<(), String> {
    match raft.initialize(members).await {
        Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(format!("group {id}: cannot initialize: {e}")),
    }
}

/// The network of a group whose only member is this node: it is never asked to send
/// anything (a group of one replicates to nobody and asks nobody for votes).
pub struct Alone;

/// The connection [`Alone`] would hand out: every call fails as unreachable.
pub struct NoPeer;

mod alone {
    use super::{Alone, NoPeer, QqTc};
    use crate::{Node, NodeId};
    use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
    use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
    use openraft::raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    };

    type Err<E = openraft::error::Infallible> = RPCError<NodeId, Node, RaftError<NodeId, E>>;

    fn unreachable<E: std::error::Error>() -> Err<E> {
        RPCError::Unreachable(Unreachable::new(&std::io::Error::other(
            "a group of one has no peers",
        )))
    }

    impl RaftNetworkFactory<QqTc> for Alone {
        type Network = NoPeer;
        async fn new_client(&mut self, _target: NodeId, _node: &Node) -> NoPeer {
            NoPeer
        }
    }

    impl RaftNetwork<QqTc> for NoPeer {
        async fn append_entries(
            &mut self,
            _rpc: AppendEntriesRequest<QqTc>,
            _option: RPCOption,
        ) -> Result<AppendEntriesResponse<NodeId>, Err> {
            Err(unreachable())
        }

        async fn install_snapshot(
            &mut self,
            _rpc: InstallSnapshotRequest<QqTc>,
            _option: RPCOption,
        ) -> Result<InstallSnapshotResponse<NodeId>, Err<InstallSnapshotError>> {
            Err(unreachable())
        }

        async fn vote(
            &mut self,
            _rpc: VoteRequest<NodeId>,
            _option: RPCOption,
        ) -> Result<VoteResponse<NodeId>, Err> {
            Err(unreachable())
        }
    }
}
