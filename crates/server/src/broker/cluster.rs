//! The node's place in the cluster (issue 16, docs/design/cluster.md): its name and Raft
//! id, the tokio runtime every Raft group of the node runs on, and the node-wide Raft log.
//!
//! openraft's cores are tokio tasks (`Raft::new` spawns one per group), so they run on a
//! multi-threaded runtime of their own, beside the actix arbiters: a group's election
//! timer or log I/O never waits behind a busy connection actor, and actors reach a group
//! through its `Raft` handle, whose futures run anywhere. The log is the store's Raft
//! WAL committed by the store's flusher, so one fsync round covers the classic queues,
//! the streams and every group.

use broker_cluster::log::NodeLog;
use broker_cluster::meta::{MetaCmd, MetaHandle, Op};
use broker_cluster::quorum::QuorumNode;
use broker_cluster::{GroupId, NodeId};
use broker_core::store::StoreError;
use std::collections::HashMap;

/// What a group's leader on another node sends this node for its consumers
/// (`qq_inbound.rs` receives it).
pub enum QqInbound {
    /// Deliveries, in the order the leader decided them.
    Deliveries(Vec<broker_cluster::quorum::RemoteDelivery>),
    /// These consumers were cancelled by the group (a new leader took over).
    Cancelled(Vec<broker_core::quorum::ConsumerId>),
}

/// How a queue's shell takes what arrives for it (it forwards to its actor).
pub type QqInboundFn = std::sync::Arc<dyn Fn(QqInbound) + Send + Sync>;
use broker_store::{Flusher, SledStore};
use std::future::Future;
use std::sync::{Arc, OnceLock};

/// One write of an access definition: the record's key and its new value (`None`
/// removes it).
pub type RecordWrite = (String, Option<Vec<u8>>);

/// Commits `writes` through the metadata group when the node has a store (`cluster`),
/// else applies them straight to memory with `local` (a broker without a data dir).
pub(crate) async fn commit_records(
    cluster: Option<&Arc<ClusterNode>>,
    writes: Vec<RecordWrite>,
    local: impl Fn(&str, Option<&[u8]>),
) -> Result<(), StoreError> {
    match cluster {
        Some(c) => c.commit_records(writes).await,
        None => {
            for (k, v) in &writes {
                local(k, v.as_deref());
            }
            Ok(())
        }
    }
}

/// Threads of the cluster runtime: Raft cores do little work each (the bodies are
/// written by the flusher thread), so two serve many groups.
const CLUSTER_THREADS: usize = 2;

/// The node in the cluster: its identity, the runtime its groups run on, their log.
pub struct ClusterNode {
    /// This node's name (`--node-name`).
    pub name: String,
    /// Its Raft id, derived from the name ([`broker_cluster::node_id`]).
    pub id: NodeId,
    /// The runtime of every Raft group (taken at drop to shut it down without blocking).
    runtime: Option<tokio::runtime::Runtime>,
    /// The node-wide Raft log.
    pub log: Arc<NodeLog>,
    /// Groups whose log was found on disk at start (their queues open them again).
    pub recovered: Vec<GroupId>,
    /// The metadata group's handle, once started (`broker/meta.rs`): every durable
    /// definition change is proposed through it.
    meta: OnceLock<MetaHandle>,
    /// The store ids this node reserved for new durable queues and has not used yet
    /// (`broker/meta.rs`: reserved a block at a time through the metadata group).
    pub(crate) queue_ids: tokio::sync::Mutex<std::ops::Range<u64>>,
    /// The groups' snapshot files (`data/raft/snapshots/`).
    pub snapshots: broker_store::raft::snapshots::SnapshotFiles,
    /// The transport and metadata membership of a node started with `--cluster-peers`
    /// (`broker/membership.rs`); `None` for a cluster of one, and after shutdown.
    pub(crate) membership: std::sync::Mutex<Option<broker_cluster::membership::ClusterMembership>>,
    /// The transport to the other nodes, once started (`broker/membership.rs`): queues
    /// whose home is another node reach it through this (`broker/queue/remote/`).
    transport: OnceLock<broker_cluster::net::Transport>,
    /// The quorum queue side of a node started with `--cluster-peers` (its groups'
    /// forwarding and deliveries over the transport); unset for a cluster of one.
    quorum: OnceLock<QuorumNode>,
    /// This node's quorum queue members by group: where deliveries and cancels that a
    /// leader on another node sends for this node's consumers go (`qq_inbound.rs`).
    pub(crate) qq_local: std::sync::Mutex<HashMap<GroupId, QqInboundFn>>,
}

impl ClusterNode {
    /// Starts the cluster runtime and opens the Raft log of `store`, committed by its
    /// `flusher`.
    pub fn start(name: &str, store: &SledStore, flusher: Flusher) -> Result<Arc<Self>, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(CLUSTER_THREADS)
            .thread_name("cluster")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the cluster runtime: {e}"))?;
        let (log, recovered) = NodeLog::open(store, flusher);
        if !recovered.is_empty() {
            tracing::info!(groups = recovered.len(), "raft log opened");
        }
        Ok(Arc::new(ClusterNode {
            name: name.to_owned(),
            id: broker_cluster::node_id(name),
            runtime: Some(runtime),
            log,
            recovered,
            meta: OnceLock::new(),
            queue_ids: tokio::sync::Mutex::new(0..0),
            snapshots: store.raft_snapshots(),
            membership: std::sync::Mutex::new(None),
            transport: OnceLock::new(),
            quorum: OnceLock::new(),
            qq_local: std::sync::Mutex::new(HashMap::new()),
        }))
    }

    /// The metadata group, once started.
    pub fn meta(&self) -> Option<&MetaHandle> {
        self.meta.get()
    }

    /// Records the started metadata group (once; a second call is ignored).
    pub fn set_meta(&self, meta: MetaHandle) {
        let _ = self.meta.set(meta);
    }

    /// The transport to the other nodes; `None` on a cluster of one and before start.
    pub fn transport(&self) -> Option<&broker_cluster::net::Transport> {
        self.transport.get()
    }

    /// Records the started transport (once; a second call is ignored).
    pub fn set_transport(&self, net: broker_cluster::net::Transport) {
        let _ = self.transport.set(net);
    }

    /// The quorum queue side (replicated groups), once the transport is up.
    pub fn quorum(&self) -> Option<&QuorumNode> {
        self.quorum.get()
    }

    /// Records the node's quorum queue side (once; a second call is ignored).
    pub fn set_quorum(&self, q: QuorumNode) {
        let _ = self.quorum.set(q);
    }

    /// Commits access-definition writes (users, vhosts, permissions, limits, policies)
    /// through the metadata group, answered once applied on this node, so the
    /// registries its materializer updates show the change. These records are
    /// last-writer-wins, as in RabbitMQ, so the transaction has no guards.
    pub async fn commit_records(&self, writes: Vec<RecordWrite>) -> Result<(), StoreError> {
        let Some(meta) = self.meta() else {
            return Err(StoreError(
                "metadata store unavailable: not started (this node is not a member yet)".into(),
            ));
        };
        let ops = writes
            .into_iter()
            .map(|(k, v)| match v {
                Some(v) => Op::Put(k.into_bytes(), v),
                None => Op::Delete(k.into_bytes()),
            })
            .collect();
        let cmd = MetaCmd::Txn {
            guards: Vec::new(),
            ops,
        };
        match meta.propose(cmd).await {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::error!("metadata proposal failed: {e}");
                Err(StoreError(e.to_amqp().reply_text()))
            }
        }
    }

    /// The cluster runtime's handle: `Raft::new` and everything that must run beside
    /// the groups is spawned on it.
    pub fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.runtime.as_ref().map(|r| r.handle().clone())
    }

    /// Runs `f` on the cluster runtime and returns its output, from any thread or
    /// runtime (an actor awaits it like any future). `None` once the runtime is gone.
    pub async fn run<F>(&self, f: F) -> Option<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = self.handle()?;
        handle.spawn(f).await.ok()
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        // dropping a runtime inside another runtime's context panics; this does not wait
        if let Some(r) = self.runtime.take() {
            r.shutdown_background();
        }
    }
}
