//! Quorum queue groups of three members over the real transport (docs/design/cluster.md
//! §3, step 7): nodes in one process on loopback TCP, each with its own store in a
//! temporary data dir, the real `NodeLog`, `QqSm` and `QuorumNode`. Commit on a
//! majority only, forwarding from followers, effects on the leader's node only,
//! deliveries to a consumer's node over `QQ_DELIVER_SERVICE`, a leader's loss (the new
//! leader's `LeaderChanged` gives checked-out messages back), and a stopped member
//! catching up from its data dir by log and by snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use broker_cluster::log::NodeLog;
use broker_cluster::net::{BoxFut, NetConfig, PeerAddr, Transport};
use broker_cluster::quorum::{
    deliver_service, send_deliveries, DeliverBatch, DeliveryReceiver, EffectSink, MemberSpec,
    ProposeError, QuorumGroup, QuorumHandle, QuorumNode, RemoteDelivery, QQ_DELIVER_SERVICE,
};
use broker_cluster::{node_id, Node, NodeId};
use broker_core::message::Message;
use broker_core::quorum::{
    CancelReason, ChanId, Checkout, ConsumerId, Effect, Publish, QqCmd, QqOp, QqResp,
};
use broker_core::store::{encode_message, MessageStore};
use broker_store::{Flusher, SledStore};
use bytes::Bytes;
use openraft::{Config, SnapshotPolicy};
use tokio::sync::{mpsc, watch};

/// How long any awaited event may take before the test fails.
const LIMIT: Duration = Duration::from_secs(30);
const GID: u64 = 7;

/// Elections after 1-2 s of silence (a busy machine does not depose a leader mid-test);
/// with `snapshots`, a snapshot every 5 entries with no log kept behind it and 256 KiB
/// chunks, so a member that was away catches up by a snapshot of several chunks.
fn raft_config(snapshots: bool) -> Arc<Config> {
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
struct Sink {
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
async fn forward_deliveries(
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
struct Received(watch::Sender<Vec<(NodeId, DeliverBatch)>>);

impl DeliveryReceiver for Received {
    fn delivered(&self, from: NodeId, batch: DeliverBatch) -> BoxFut<()> {
        self.0.send_modify(|r| r.push((from, batch)));
        Box::pin(async {})
    }
}

/// The part of the server's shell tested here: when the node takes over the group (a
/// new term), it proposes `LeaderChanged` on its own member; the watch says for which
/// term it committed.
fn spawn_shell(group: &QuorumGroup) -> watch::Receiver<u64> {
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
struct TestNode {
    name: String,
    addr: String,
    dir: PathBuf,
    store: Weak<SledStore>,
    log: Arc<NodeLog>,
    qn: QuorumNode,
    group: QuorumGroup,
    effects: watch::Receiver<Vec<Effect>>,
    received: watch::Receiver<Vec<(NodeId, DeliverBatch)>>,
    shell: watch::Receiver<u64>,
}

fn members(all: &[PeerAddr]) -> BTreeMap<NodeId, Node> {
    all.iter()
        .map(|p| (node_id(&p.name), Node::new(p.addr.clone())))
        .collect()
}

impl TestNode {
    async fn start(name: &str, dir: &Path, listen: &str, all: &[PeerAddr], snaps: bool) -> Self {
        let mut nc = NetConfig::new(name, listen, b"secret".to_vec());
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
            config: raft_config(snaps),
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

    fn id(&self) -> NodeId {
        node_id(&self.name)
    }

    fn handle(&self) -> QuorumHandle {
        self.qn.handle(&self.group).with_timeout(LIMIT)
    }

    /// The leader this node sees (other than `not`).
    async fn leader(&self, not: Option<NodeId>) -> NodeId {
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

    async fn applied(&self, index: u64) {
        let w = self.group.raft.wait(Some(LIMIT));
        w.applied_index_at_least(Some(index), "applied")
            .await
            .unwrap();
    }

    fn last_applied(&self) -> u64 {
        let m = self.group.raft.metrics().borrow().clone();
        m.last_applied.map_or(0, |l| l.index)
    }

    /// (ready, unacked, consumers) after the last applied entry.
    fn counts(&self) -> (u64, u64, u64) {
        let c = self.group.sm.counts();
        let r = std::sync::atomic::Ordering::Relaxed;
        (c.ready.load(r), c.unacked.load(r), c.consumers.load(r))
    }

    /// Waits until this node's shell committed `LeaderChanged` in the term it leads.
    async fn took_over(&mut self) {
        let term = self.group.raft.metrics().borrow().current_term;
        let done = self.shell.wait_for(|t| *t >= term);
        tokio::time::timeout(LIMIT, done).await.unwrap().unwrap();
    }

    async fn effects_where(&mut self, what: &str, f: impl Fn(&[Effect]) -> bool) -> Vec<Effect> {
        let seen = self.effects.wait_for(|e| f(e));
        let got = tokio::time::timeout(LIMIT, seen).await;
        got.unwrap_or_else(|_| panic!("never: {what}"))
            .unwrap()
            .clone()
    }

    fn delivered(&self) -> Vec<Bytes> {
        bodies(&self.effects.borrow())
    }

    /// Stops the node (its group, then its transport) and waits until its store is
    /// released, so the data dir can be opened again.
    async fn stop(self) -> (String, String, PathBuf) {
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

fn bodies(effects: &[Effect]) -> Vec<Bytes> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Deliver { message, .. } => Some(message.body.clone()),
            _ => None,
        })
        .collect()
}

fn cmd(op: QqOp) -> QqCmd {
    QqCmd { ts_ms: 1_000, op }
}

fn chan(node: NodeId) -> ChanId {
    ChanId {
        node,
        connection: 1,
        channel: 1,
    }
}

fn publish(node: NodeId, seq: u64, body: Vec<u8>) -> Publish {
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

fn enqueue(node: NodeId, seqs: std::ops::Range<u64>) -> QqCmd {
    let batch = seqs
        .map(|s| publish(node, s, format!("m{s}").into_bytes()))
        .collect();
    cmd(QqOp::Enqueue { batch })
}

fn consume(node: NodeId, tag: &str, prefetch: u32) -> QqCmd {
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
async fn start_cluster(names: &[&str], dirs: &[tempfile::TempDir], snaps: bool) -> Vec<TestNode> {
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
        nodes.push(TestNode::start(n, d.path(), &p.addr, &all, snaps).await);
    }
    nodes
}

fn peers(nodes: &[TestNode], gone: &[(String, String, PathBuf)]) -> Vec<PeerAddr> {
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

fn dirs(n: usize) -> Vec<tempfile::TempDir> {
    (0..n).map(|_| tempfile::tempdir().unwrap()).collect()
}

/// Every node agrees on one leader, which took over; returns its position.
async fn leader_of(nodes: &mut [TestNode], not: Option<NodeId>) -> usize {
    let leader = nodes[0].leader(not).await;
    for n in nodes.iter() {
        assert_eq!(n.leader(not).await, leader, "on {}", n.name);
    }
    let at = nodes.iter().position(|n| n.id() == leader).unwrap();
    nodes[at].took_over().await;
    at
}

async fn shutdown(nodes: Vec<TestNode>) {
    for n in nodes {
        n.stop().await;
    }
}

#[test]
fn group_rpcs_fit_in_a_frame() {
    let q = broker_cluster::quorum::config().unwrap();
    let frame = NetConfig::new("a", "127.0.0.1:0", b"s".to_vec()).max_frame as u64;
    let batch = broker_cluster::quorum::MAX_BATCH_BYTES as u64;
    assert!(q.max_payload_entries * batch < frame, "appends fit");
    assert!(q.snapshot_max_chunk_size < frame, "snapshot chunks fit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_on_a_majority_forwards_and_delivers_on_the_consumers_node() {
    let d = dirs(3);
    let mut nodes = start_cluster(&["a", "b", "c"], &d, false).await;
    let l = leader_of(&mut nodes, None).await;
    let fs: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    let (f, lid) = (nodes[fs[0]].id(), nodes[l].id());

    // a follower's proposal is forwarded; the leader's answer comes back with its index
    let p = nodes[fs[0]]
        .handle()
        .propose(enqueue(f, 1..3))
        .await
        .unwrap();
    assert_eq!(p.resp, QqResp::Ok);
    for n in &nodes {
        n.applied(p.index).await;
        assert_eq!(n.counts(), (2, 0, 0), "on {}", n.name);
    }

    // a consumer on the follower's node: the leader decides, its sink alone gets the
    // effects, and the deliveries reach the consumer's node through QQ_DELIVER
    let p = nodes[fs[0]]
        .handle()
        .propose(consume(f, "c1", 2))
        .await
        .unwrap();
    for n in &nodes {
        n.applied(p.index).await;
        assert_eq!(n.counts(), (0, 2, 1), "on {}", n.name);
    }
    let fx = nodes[l]
        .effects_where("two deliveries", |e| bodies(e).len() == 2)
        .await;
    assert_eq!(bodies(&fx), [Bytes::from("m1"), Bytes::from("m2")]);
    for &i in &fs {
        assert!(
            nodes[i].delivered().is_empty(),
            "effects on follower {}",
            nodes[i].name
        );
    }
    let mut rx = nodes[fs[0]].received.clone();
    let got = rx.wait_for(|r| r.iter().map(|(_, b)| b.deliveries.len()).sum::<usize>() == 2);
    let got = tokio::time::timeout(LIMIT, got)
        .await
        .unwrap()
        .unwrap()
        .clone();
    let mut ds = Vec::new();
    for (from, batch) in &got {
        assert_eq!((*from, batch.group), (lid, GID));
        ds.extend(batch.deliveries.iter().cloned());
    }
    let bs: Vec<Bytes> = ds.iter().map(|d| d.decode().unwrap().body).collect();
    assert_eq!(bs, [Bytes::from("m1"), Bytes::from("m2")]);
    assert!(ds.iter().all(|d| d.consumer.tag == "c1" && !d.redelivered));
    assert!(nodes[fs[1]].received.borrow().is_empty());

    // both followers stop: the leader alone commits nothing, its proposal times out
    let before = nodes[l].last_applied();
    let mut gone = Vec::new();
    for i in [fs[1], fs[0]] {
        gone.push(nodes.remove(i).stop().await);
    }
    let leader = &nodes[0];
    let short = leader.handle().with_timeout(Duration::from_secs(2));
    let r = short.propose(enqueue(lid, 1..2)).await;
    assert_eq!(r, Err(ProposeError::Timeout(Duration::from_secs(2))));
    assert_eq!(leader.last_applied(), before, "applied without a majority");
    assert_eq!(leader.counts(), (0, 2, 1));

    // one comes back from its data dir: the same publish again commits, once (the
    // entry that timed out commits too, and deduplication drops its copy)
    let (name, addr, dir) = gone.pop().unwrap();
    let mut all = peers(&nodes, &gone);
    all.push(PeerAddr {
        name: name.clone(),
        addr: addr.clone(),
    });
    nodes.push(TestNode::start(&name, &dir, &addr, &all, false).await);
    let p = nodes[0].handle().propose(enqueue(lid, 1..2)).await.unwrap();
    for n in &nodes {
        n.applied(p.index).await;
        assert_eq!(n.counts(), (1, 2, 1), "on {}", n.name);
    }
    assert_eq!(nodes[0].group.sm.export(), nodes[1].group.sm.export());
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_gives_checked_out_messages_back_and_the_old_one_catches_up() {
    let d = dirs(3);
    let mut nodes = start_cluster(&["a", "b", "c"], &d, false).await;
    let l = leader_of(&mut nodes, None).await;
    let f = (l + 1) % 3;
    let fid = nodes[f].id();
    let h = nodes[f].handle();
    h.propose(consume(fid, "c1", 10)).await.unwrap();
    h.propose(enqueue(fid, 1..6)).await.unwrap();
    let fx = nodes[l]
        .effects_where("five deliveries", |e| bodies(e).len() == 5)
        .await;
    let ids: Vec<u64> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Deliver { msg_id, .. } => Some(*msg_id),
            _ => None,
        })
        .collect();
    let settle = cmd(QqOp::Settle {
        channel: chan(fid),
        ids: ids[..2].to_vec(),
    });
    let last = h.propose(settle).await.unwrap().index;
    for n in &nodes {
        n.applied(last).await;
        assert_eq!(n.counts(), (0, 3, 1));
    }

    // the leader's node goes; another is elected within a few seconds and takes over
    let old = nodes.remove(l);
    let old_id = old.id();
    let gone = old.stop().await;
    let t0 = tokio::time::Instant::now();
    let nl = leader_of(&mut nodes, Some(old_id)).await;
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(10), "new leader after {took:?}");
    // LeaderChanged: the three unsettled messages are ready again, the consumer gone
    let at = nodes[nl].last_applied();
    for n in &nodes {
        n.applied(at).await;
        assert_eq!(n.counts(), (3, 0, 0), "on {}", n.name);
    }
    let fx = nodes[nl].effects.borrow().clone();
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::ConsumerCancelled {
            reason: CancelReason::LeaderChanged,
            ..
        }
    )));

    // a new consumer gets exactly what was confirmed and not settled, redelivered
    let other = nodes[1 - nl].id();
    let h2 = nodes[1 - nl].handle();
    h2.propose(consume(other, "c2", 10)).await.unwrap();
    let fx = nodes[nl]
        .effects_where("redeliveries", |e| {
            e.iter()
                .filter(|x| {
                    matches!(
                        x,
                        Effect::Deliver {
                            redelivered: true,
                            ..
                        }
                    )
                })
                .count()
                == 3
        })
        .await;
    let re: Vec<(Bytes, bool)> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Deliver {
                message,
                redelivered,
                consumer,
                ..
            } if consumer.tag == "c2" => Some((message.body.clone(), *redelivered)),
            _ => None,
        })
        .collect();
    let want: Vec<(Bytes, bool)> = ["m3", "m4", "m5"]
        .iter()
        .map(|b| (Bytes::from(*b), true))
        .collect();
    assert_eq!(re, want);
    // (seq 6: the publisher may be the one that sent 1-5)
    let last = h2.propose(enqueue(other, 6..7)).await.unwrap().index;

    // the old leader restarts from its data dir and catches up by log, as a follower:
    // its sink gets none of the effects
    let (name, addr, dir) = gone;
    let mut all = peers(&nodes, &[]);
    all.push(PeerAddr {
        name: name.clone(),
        addr: addr.clone(),
    });
    let back = TestNode::start(&name, &dir, &addr, &all, false).await;
    back.applied(last).await;
    let leader_state = nodes[nl].group.sm.export();
    let w = nodes[nl].group.raft.wait(Some(LIMIT));
    w.applied_index_at_least(Some(last), "leader applied")
        .await
        .unwrap();
    assert_eq!(
        back.group.sm.export(),
        leader_state,
        "the old leader's state"
    );
    assert_eq!(back.counts(), (0, 4, 1));
    assert!(back.delivered().is_empty(), "effects on a follower");
    nodes.push(back);
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_missed_compacted_entries_catches_up_by_snapshot() {
    let d = dirs(3);
    let mut nodes = start_cluster(&["a", "b", "c"], &d, true).await;
    let l = leader_of(&mut nodes, None).await;
    let f = (l + 1) % 3;
    let gone = nodes.remove(f).stop().await;
    let l = nodes
        .iter()
        .position(|n| n.group.raft.metrics().borrow().state.is_leader())
        .unwrap();
    let lid = nodes[l].id();

    // 12 entries of 200 KiB bodies: the snapshot holds ~2.4 MiB, sent in 256 KiB chunks
    let h = nodes[l].handle();
    let mut last = 0;
    for s in 1..=12u64 {
        let body = vec![s as u8; 200 << 10];
        let batch = vec![publish(lid, s, body)];
        last = h.propose(cmd(QqOp::Enqueue { batch })).await.unwrap().index;
    }
    let w = nodes[l].group.raft.wait(Some(LIMIT));
    let purged = move |m: &openraft::RaftMetrics<NodeId, Node>| {
        m.purged.is_some_and(|p| p.index + 5 >= last)
    };
    w.metrics(purged, "purged behind the snapshot")
        .await
        .unwrap();

    let (name, addr, dir) = gone;
    let mut all = peers(&nodes, &[]);
    all.push(PeerAddr {
        name: name.clone(),
        addr: addr.clone(),
    });
    let back = TestNode::start(&name, &dir, &addr, &all, true).await;
    back.applied(last).await;
    let m = back.group.raft.metrics().borrow().clone();
    assert!(m.snapshot.is_some(), "caught up without a snapshot: {m:?}");
    assert_eq!(back.counts(), (12, 0, 0));
    assert_eq!(
        back.group.sm.export(),
        nodes[l].group.sm.export(),
        "bodies and all"
    );

    nodes.push(back);
    shutdown(nodes).await;
}
