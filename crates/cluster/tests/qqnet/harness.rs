//! The three-node harness of the quorum group tests: a node with its own store, log,
//! transport and member of one group; an effect sink that records and forwards remote
//! deliveries; a delivery receiver; and the shell's `LeaderChanged` on taking over.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::support;
use broker_cluster::log::NodeLog;
use broker_cluster::net::{BoxFut, NetConfig, PeerAddr, Transport};
use broker_cluster::quorum::{
    deliver_service, send_deliveries, DeliverBatch, DeliveryReceiver, EffectSink, MemberSpec,
    QuorumGroup, QuorumHandle, QuorumNode, RemoteDelivery, QQ_DELIVER_SERVICE,
};
use broker_cluster::{node_id, Node, NodeId};
use broker_core::message::Message;
use broker_core::quorum::{ChanId, Checkout, ConsumerId, Effect, Publish, QqCmd, QqOp};
use broker_core::store::{encode_message, MessageStore};
use broker_store::{Flusher, SledStore};
use bytes::Bytes;
use openraft::{Config, SnapshotPolicy};
use tokio::sync::{mpsc, watch};

/// How long any awaited event may take before the test fails.
pub const LIMIT: Duration = Duration::from_secs(30);
/// The group every test runs.
pub const GID: u64 = 7;

/// Elections after 1-2 s of silence (a busy machine does not depose a leader mid-test);
/// with `snapshots`, a snapshot every 5 entries with no log kept behind it and 256 KiB
/// chunks, so a member that was away catches up by a snapshot of several chunks.
/// How the nodes of a test run.
#[derive(Clone, Copy)]
pub struct Opts {
    /// Snapshots every 5 entries (else never).
    pub snapshots: bool,
    /// The transport's frame limit.
    pub max_frame: usize,
}

/// Catch-up by log, default frames.
pub const LOG: Opts = Opts {
    snapshots: false,
    max_frame: 16 << 20,
};

/// Catch-up by snapshot, default frames.
pub const SNAPSHOTS: Opts = Opts {
    snapshots: true,
    max_frame: 16 << 20,
};

pub fn raft_config(snapshots: bool) -> Arc<Config> {
    let mut c = Config {
        heartbeat_interval: 50,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        max_payload_entries: broker_cluster::quorum::MAX_PAYLOAD_ENTRIES,
        ..Default::default()
    };
    if snapshots {
        c.snapshot_policy = SnapshotPolicy::LogsSinceLast(5);
        c.max_in_snapshot_log_to_keep = 0;
        c.purge_batch_size = 1;
        c.snapshot_max_chunk_size = 256 << 10;
    } else {
        c.snapshot_policy = SnapshotPolicy::Never;
    }
    Arc::new(c.validate().unwrap())
}

/// What a node's sink saw: every effect it was handed, in order. Like the server's
/// buffer it skips entries an earlier process applied, and it sends deliveries for
/// consumers on other nodes there, in order, through one forwarding task.
pub struct Sink {
    me: NodeId,
    seen: watch::Sender<Vec<Effect>>,
    skip_below: Mutex<u64>,
    remote: mpsc::UnboundedSender<(NodeId, RemoteDelivery)>,
}

impl EffectSink for Sink {
    fn effects(&self, index: u64, effects: Vec<Effect>) {
        if index < *self.skip_below.lock().unwrap() {
            return;
        }
        for e in &effects {
            if let Some(d) = RemoteDelivery::from_effect(e) {
                if d.consumer.chan.node != self.me {
                    self.remote.send((d.consumer.chan.node, d)).unwrap();
                }
            }
        }
        self.seen.send_modify(|s| s.extend(effects));
    }

    fn opened(&self, last: Option<u64>) {
        *self.skip_below.lock().unwrap() = last.map_or(0, |l| l + 1);
    }
}

/// Sends remote deliveries in the order the sink decided them.
pub async fn forward_deliveries(
    net: Transport,
    mut rx: mpsc::UnboundedReceiver<(NodeId, RemoteDelivery)>,
) {
    while let Some((node, d)) = rx.recv().await {
        let mut by_node: BTreeMap<NodeId, Vec<RemoteDelivery>> = BTreeMap::new();
        by_node.entry(node).or_default().push(d);
        while let Ok((n, d)) = rx.try_recv() {
            by_node.entry(n).or_default().push(d);
        }
        for (n, ds) in by_node {
            if let Err(e) = send_deliveries(&net, n, GID, ds).await {
                eprintln!("deliveries to {n:#x} lost: {e}");
            }
        }
    }
}

/// What a node received for its consumers.
#[derive(Default)]
pub struct Received(watch::Sender<Vec<(NodeId, DeliverBatch)>>);

impl DeliveryReceiver for Received {
    fn delivered(&self, from: NodeId, batch: DeliverBatch) -> BoxFut<()> {
        self.0.send_modify(|r| r.push((from, batch)));
        Box::pin(async {})
    }
}

/// The part of the server's shell tested here: when the node takes over the group (a
/// new term), it proposes `LeaderChanged` on its own member; the watch says for which
/// term it committed.
pub fn spawn_shell(group: &QuorumGroup) -> watch::Receiver<u64> {
    let mut lead = group.leadership();
    let raft = group.raft.clone();
    let (tx, rx) = watch::channel(0u64);
    tokio::spawn(async move {
        loop {
            let l = *lead.borrow_and_update();
            if l.leading && l.term > *tx.borrow() {
                // the answer is not needed: on failure the node no longer leads
                if raft.client_write(cmd(QqOp::LeaderChanged)).await.is_ok() {
                    tx.send_replace(l.term);
                }
            }
            if lead.changed().await.is_err() {
                break;
            }
        }
    });
    rx
}

/// One node: its data dir, store, log, transport and its member of group `GID`.
pub struct TestNode {
    pub name: String,
    pub addr: String,
    pub dir: PathBuf,
    pub store: Weak<SledStore>,
    pub log: Arc<NodeLog>,
    pub qn: QuorumNode,
    pub group: QuorumGroup,
    pub effects: watch::Receiver<Vec<Effect>>,
    pub received: watch::Receiver<Vec<(NodeId, DeliverBatch)>>,
    pub shell: watch::Receiver<u64>,
}

pub fn members(all: &[PeerAddr]) -> BTreeMap<NodeId, Node> {
    all.iter()
        .map(|p| (node_id(&p.name), Node::new(p.addr.clone())))
        .collect()
}

impl TestNode {
    pub async fn start(name: &str, dir: &Path, listen: &str, all: &[PeerAddr], opts: Opts) -> Self {
        let mut nc = NetConfig::new(name, listen, b"secret".to_vec());
        nc.max_frame = opts.max_frame;
        nc.backoff = (Duration::from_millis(20), Duration::from_millis(200));
        let bound = Transport::bind(nc).await.unwrap();
        let addr = bound.local_addr().unwrap().to_string();
        let store = Arc::new(support::open_store(dir).unwrap());
        let flusher = Flusher::start(store.clone() as Arc<dyn MessageStore>);
        let (log, _) = NodeLog::open(&store, flusher);
        let net = bound.start(all.to_vec());
        let recv = Arc::new(Received::default());
        let received = recv.0.subscribe();
        net.add_service(QQ_DELIVER_SERVICE, deliver_service(recv));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(forward_deliveries(net.clone(), rx));
        let (seen, effects) = watch::channel(Vec::new());
        let sink = Arc::new(Sink {
            me: net.node_id(),
            seen,
            skip_below: Mutex::new(0),
            remote: tx,
        });
        let qn = QuorumNode::new(net);
        let spec = MemberSpec {
            id: GID,
            members: members(all),
            config: raft_config(opts.snapshots),
            initialize: true,
        };
        let group = qn
            .start_group(spec, &log, store.raft_snapshots(), sink)
            .await
            .unwrap();
        let shell = spawn_shell(&group);
        TestNode {
            name: name.into(),
            addr,
            dir: dir.to_path_buf(),
            store: Arc::downgrade(&store),
            log,
            qn,
            group,
            effects,
            received,
            shell,
        }
    }

    pub fn id(&self) -> NodeId {
        node_id(&self.name)
    }

    pub fn handle(&self) -> QuorumHandle {
        self.qn.handle(&self.group).with_timeout(LIMIT)
    }

    /// The leader this node sees (other than `not`).
    pub async fn leader(&self, not: Option<NodeId>) -> NodeId {
        let w = self.group.raft.wait(Some(LIMIT));
        let m = w
            .metrics(
                |x| x.current_leader.is_some_and(|l| Some(l) != not),
                "a leader",
            )
            .await
            .unwrap();
        m.current_leader.unwrap()
    }

    pub async fn applied(&self, index: u64) {
        let w = self.group.raft.wait(Some(LIMIT));
        w.applied_index_at_least(Some(index), "applied")
            .await
            .unwrap();
    }

    pub fn last_applied(&self) -> u64 {
        let m = self.group.raft.metrics().borrow().clone();
        m.last_applied.map_or(0, |l| l.index)
    }

    /// (ready, unacked, consumers) after the last applied entry.
    pub fn counts(&self) -> (u64, u64, u64) {
        let c = self.group.sm.counts();
        let r = std::sync::atomic::Ordering::Relaxed;
        (c.ready.load(r), c.unacked.load(r), c.consumers.load(r))
    }

    /// Waits until this node's shell committed `LeaderChanged` in the term it leads.
    pub async fn took_over(&mut self) {
        let term = self.group.raft.metrics().borrow().current_term;
        let done = self.shell.wait_for(|t| *t >= term);
        tokio::time::timeout(LIMIT, done).await.unwrap().unwrap();
    }

    pub async fn effects_where(
        &mut self,
        what: &str,
        f: impl Fn(&[Effect]) -> bool,
    ) -> Vec<Effect> {
        let seen = self.effects.wait_for(|e| f(e));
        let got = tokio::time::timeout(LIMIT, seen).await;
        got.unwrap_or_else(|_| panic!("never: {what}"))
            .unwrap()
            .clone()
    }

    pub fn delivered(&self) -> Vec<Bytes> {
        bodies(&self.effects.borrow())
    }

    /// Stops the node (its group, then its transport) and waits until its store is
    /// released, so the data dir can be opened again.
    pub async fn stop(self) -> (String, String, PathBuf) {
        self.qn.stop_group(GID).await;
        self.qn.transport().shutdown().await;
        let store = self.store;
        drop((self.log, self.group, self.qn));
        let deadline = tokio::time::Instant::now() + LIMIT;
        // nothing announces that the flusher thread let go of the store
        while store.strong_count() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "store not released");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (self.name, self.addr, self.dir)
    }
}

pub fn bodies(effects: &[Effect]) -> Vec<Bytes> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Deliver { message, .. } => Some(message.body.clone()),
            _ => None,
        })
        .collect()
}

pub fn cmd(op: QqOp) -> QqCmd {
    QqCmd { ts_ms: 1_000, op }
}

pub fn chan(node: NodeId) -> ChanId {
    ChanId {
        node,
        connection: 1,
        channel: 1,
    }
}

pub fn publish(node: NodeId, seq: u64, body: Vec<u8>) -> Publish {
    Publish {
        publisher: chan(node),
        seq,
        message: encode_message(&Message {
            exchange: "".into(),
            routing_key: "q".into(),
            properties: Default::default(),
            raw_properties: Bytes::from_static(&[0, 0]),
            body: Bytes::from(body),
            persist_id: None,
            arrival_ms: 0,
        }),
    }
}

pub fn enqueue(node: NodeId, seqs: std::ops::Range<u64>) -> QqCmd {
    let batch = seqs
        .map(|s| publish(node, s, format!("m{s}").into_bytes()))
        .collect();
    cmd(QqOp::Enqueue { batch })
}

pub fn consume(node: NodeId, tag: &str, prefetch: u32) -> QqCmd {
    cmd(QqOp::Checkout {
        consumer: ConsumerId {
            chan: chan(node),
            tag: tag.into(),
        },
        spec: Checkout::Consume {
            prefetch,
            no_ack: false,
            priority: 0,
            exclusive: false,
        },
    })
}

/// Binds every name on a free port and starts each node with all of them as peers.
pub async fn start_cluster(
    names: &[&str],
    dirs: &[tempfile::TempDir],
    opts: Opts,
) -> Vec<TestNode> {
    let held: Vec<std::net::TcpListener> = names
        .iter()
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let all: Vec<PeerAddr> = names
        .iter()
        .zip(&held)
        .map(|(n, l)| PeerAddr {
            name: n.to_string(),
            addr: l.local_addr().unwrap().to_string(),
        })
        .collect();
    drop(held);
    let mut nodes = Vec::new();
    for ((p, d), n) in all.iter().zip(dirs).zip(names) {
        nodes.push(TestNode::start(n, d.path(), &p.addr, &all, opts).await);
    }
    nodes
}

pub fn peers(nodes: &[TestNode], gone: &[(String, String, PathBuf)]) -> Vec<PeerAddr> {
    let mut all: Vec<PeerAddr> = nodes
        .iter()
        .map(|n| PeerAddr {
            name: n.name.clone(),
            addr: n.addr.clone(),
        })
        .chain(gone.iter().map(|(name, addr, _)| PeerAddr {
            name: name.clone(),
            addr: addr.clone(),
        }))
        .collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

pub fn dirs(n: usize) -> Vec<tempfile::TempDir> {
    (0..n).map(|_| tempfile::tempdir().unwrap()).collect()
}

/// Every node agrees on one leader, which took over; returns its position.
pub async fn leader_of(nodes: &mut [TestNode], not: Option<NodeId>) -> usize {
    let leader = nodes[0].leader(not).await;
    for n in nodes.iter() {
        assert_eq!(n.leader(not).await, leader, "on {}", n.name);
    }
    let at = nodes.iter().position(|n| n.id() == leader).unwrap();
    nodes[at].took_over().await;
    at
}

pub async fn shutdown(nodes: Vec<TestNode>) {
    for n in nodes {
        n.stop().await;
    }
}
