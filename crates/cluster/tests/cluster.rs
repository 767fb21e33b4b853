//! Three nodes in one process (the in-process network), each with its own store in its
//! own directory: election, replication, failover, restart from disk; and several
//! groups sharing each node's commit rounds.

mod common;

use common::net::Net;
use common::sm::QueueStateMachine;
use common::{config, Cmd, Node, Raft, Resp, TestResult};
use openraft::BasicNode;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

struct Member {
    raft: Raft,
    sm: QueueStateMachine,
}

async fn start(
    node: &Node,
    group: u64,
    id: u64,
    net: &Net,
) -> Result<Member, Box<dyn std::error::Error>> {
    let sm = QueueStateMachine::default();
    let raft = Raft::new(
        id,
        config()?,
        net.factory(id),
        node.group(group)?,
        sm.clone(),
    )
    .await?;
    net.add(id, raft.clone());
    Ok(Member { raft, sm })
}

fn members() -> BTreeMap<u64, BasicNode> {
    (1..=3)
        .map(|i| (i, BasicNode::new(format!("127.0.0.1:{}", 5000 + i))))
        .collect()
}

async fn leader_of(raft: &Raft) -> Result<u64, Box<dyn std::error::Error>> {
    let m = raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await?;
    m.current_leader.ok_or_else(|| "no leader".into())
}

fn node_dir(dir: &Path, id: u64) -> std::path::PathBuf {
    dir.join(format!("node{id}"))
}

fn enqueue(body: &[u8], ts_ms: u64) -> Cmd {
    Cmd::Enqueue {
        body: body.to_vec(),
        ts_ms,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_replicate_fail_over_and_restart_from_disk() -> TestResult {
    let dir = tempfile::tempdir()?;
    let net = Net::default();
    let mut nodes = BTreeMap::new();
    let mut ms = BTreeMap::new();
    for id in 1..=3 {
        let node = Node::open(&node_dir(dir.path(), id))?;
        ms.insert(id, start(&node, 1, id, &net).await?);
        nodes.insert(id, node);
    }
    ms[&1].raft.initialize(members()).await?;
    let leader = leader_of(&ms[&1].raft).await?;
    let w = ms[&leader].raft.client_write(enqueue(b"m0", 1)).await?;
    assert_eq!(w.data, Resp::Enqueued { id: 0 });
    for m in ms.values() {
        m.raft
            .wait(Some(Duration::from_secs(5)))
            .applied_index(Some(w.log_id.index), "replicated")
            .await?;
        assert_eq!(
            m.sm.state().messages.get(&0).map(|(b, _)| b.as_slice()),
            Some(&b"m0"[..])
        );
    }

    // the leader dies: the two others elect a new one and go on
    let old = ms.remove(&leader).ok_or("leader")?;
    net.remove(leader);
    old.raft.shutdown().await?;
    drop(old);
    nodes.remove(&leader).ok_or("leader node")?.close();
    let any = ms.values().next().ok_or("a survivor")?;
    let new_leader = any
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.current_leader.is_some_and(|l| l != leader),
            "a new leader",
        )
        .await?
        .current_leader
        .ok_or("no leader")?;
    let w2 = ms[&new_leader].raft.client_write(enqueue(b"m1", 2)).await?;
    assert_eq!(w2.data, Resp::Enqueued { id: 1 });

    // the old leader restarts from its store (vote and entries) and catches up
    let node = Node::open(&node_dir(dir.path(), leader))?;
    assert_eq!(node.recovered, vec![1]);
    let back = start(&node, 1, leader, &net).await?;
    back.raft
        .wait(Some(Duration::from_secs(10)))
        .applied_index(Some(w2.log_id.index), "caught up")
        .await?;
    assert_eq!(back.sm.state().messages.len(), 2);
    for m in ms.values().chain([&back]) {
        m.raft.shutdown().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_groups_share_each_nodes_commit_rounds() -> TestResult {
    const GROUPS: u64 = 8;
    let dir = tempfile::tempdir()?;
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, Node::open(&node_dir(dir.path(), id))?);
    }
    let mut groups = Vec::new();
    for g in 1..=GROUPS {
        let net = Net::default();
        let mut ms = BTreeMap::new();
        for (id, node) in &nodes {
            ms.insert(*id, start(node, g, *id, &net).await?);
        }
        ms[&1].raft.initialize(members()).await?;
        groups.push(ms);
    }
    let mut leaders = Vec::new();
    for ms in &groups {
        leaders.push(ms[&leader_of(&ms[&1].raft).await?].raft.clone());
    }
    let stat = |f: fn(&broker_store::raft::RaftStats) -> u64| -> u64 {
        nodes.values().map(|n| f(&n.log.wal().stats)).sum()
    };
    let rounds_before = stat(|s| s.rounds.load(Ordering::Relaxed));
    let mut tasks = Vec::new();
    for (g, raft) in leaders.iter().enumerate() {
        for i in 0..50u64 {
            let raft = raft.clone();
            tasks.push(tokio::spawn(async move {
                let body = format!("{g}-{i}").into_bytes();
                let w = raft.client_write(Cmd::Enqueue { body, ts_ms: i }).await;
                w.map(|w| (g, w.log_id.index))
            }));
        }
    }
    let mut last = vec![0u64; GROUPS as usize];
    for t in tasks {
        let (g, index) = t.await??;
        last[g] = last[g].max(index);
    }
    let rounds = stat(|s| s.rounds.load(Ordering::Relaxed)) - rounds_before;
    let shared = stat(|s| s.shared_rounds.load(Ordering::Relaxed));
    let records = stat(|s| s.records.load(Ordering::Relaxed));
    eprintln!(
        "400 commands in {GROUPS} groups on 3 nodes: {rounds} commit rounds, {records} raft records, \
         {shared} rounds shared by several groups"
    );
    // every command is appended on all three nodes: 1200 appends without sharing
    assert!(rounds < 1200, "rounds must be shared: {rounds}");
    assert!(shared > 0, "some rounds carried several groups");
    // every member applies everything before any is shut down (a leader gone first
    // would leave a follower without the commit index)
    for (g, ms) in groups.iter().enumerate() {
        for m in ms.values() {
            m.raft
                .wait(Some(Duration::from_secs(5)))
                .applied_index_at_least(Some(last[g]), "applied")
                .await?;
            assert_eq!(m.sm.state().messages.len(), 50);
        }
    }
    for ms in &groups {
        for m in ms.values() {
            m.raft.shutdown().await?;
        }
    }
    Ok(())
}
