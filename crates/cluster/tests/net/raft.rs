//! Raft groups over the transport: election, replication of two groups on the same
//! links, fail-over, catch-up after a restart, the secret, unknown groups.

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use broker_cluster::net::{BoxFut, GroupRpc, NetError, PeerAddr, RpcKind, Transport};
use broker_cluster::NodeId;
use bytes::Bytes;
use openraft::error::RPCError;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::VoteRequest;
use openraft::{BasicNode, Vote};

use super::store::{MemLog, MemSm, Tc};
use super::*;

async fn leader_seen_by(m: &Member, not: Option<NodeId>) -> NodeId {
    let metrics = m
        .raft
        .wait(Some(LIMIT))
        .metrics(
            |x| x.current_leader.is_some_and(|l| Some(l) != not),
            "a leader",
        )
        .await
        .unwrap();
    metrics.current_leader.unwrap()
}

fn index_of(nets: &[Transport], id: NodeId) -> usize {
    nets.iter().position(|n| n.node_id() == id).unwrap()
}

async fn write(m: &Member, values: RangeInclusive<u64>) -> u64 {
    let mut last = 0;
    for v in values {
        last = m.raft.client_write(v).await.unwrap().log_id.index;
    }
    last
}

async fn applied(m: &Member, index: u64, expect: RangeInclusive<u64>) {
    m.raft
        .wait(Some(LIMIT))
        .applied_index_at_least(Some(index), "applied")
        .await
        .unwrap();
    assert_eq!(m.sm.values(), expect.collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_two_groups_fail_over_and_catch_up() {
    let cfgs = ["n1", "n2", "n3"]
        .iter()
        .map(|n| config(n, "127.0.0.1:0", b"secret"))
        .collect();
    let mut nets = start_all(cfgs).await;
    all_up(&nets).await;
    let peers: Vec<PeerAddr> = nets
        .iter()
        .map(|n| PeerAddr {
            name: n.name().to_string(),
            addr: n.local_addr().unwrap().to_string(),
        })
        .collect();
    // groups[g][node]: two groups on the same three links.
    let mut groups: Vec<Vec<Member>> = Vec::new();
    for gid in [1u64, 2] {
        let mut g = Vec::new();
        for n in &nets {
            g.push(join_group(n, gid, MemLog::default(), MemSm::default()).await);
        }
        g[0].raft.initialize(members(&nets)).await.unwrap();
        groups.push(g);
    }
    for g in &groups {
        let leader = index_of(&nets, leader_seen_by(&g[0], None).await);
        let last = write(&g[leader], 1..=10).await;
        for m in g {
            applied(m, last, 1..=10).await;
        }
    }

    // Fail-over: cut the first group's leader off; both groups go on without it.
    let gone = index_of(&nets, leader_seen_by(&groups[0][0], None).await);
    let gone_id = nets[gone].node_id();
    nets[gone].shutdown().await;
    assert!(!nets[gone].is_up(nets[(gone + 1) % 3].node_id()));
    let survivors: Vec<usize> = (0..3).filter(|&i| i != gone).collect();
    let mut lasts = Vec::new();
    for g in &groups {
        let leader = index_of(&nets, leader_seen_by(&g[survivors[0]], Some(gone_id)).await);
        assert_ne!(leader, gone);
        let last = write(&g[leader], 11..=15).await;
        for &i in &survivors {
            applied(&g[i], last, 1..=15).await;
        }
        lasts.push(last);
    }

    // The leaders snapshot and purge past what the stopped node has, so it can only
    // catch up by snapshot.
    let mut aways = Vec::new();
    for (g, &last) in groups.iter().zip(&lasts) {
        let away = g[gone].raft.metrics().borrow().last_log_index.unwrap();
        aways.push(away);
        let leader = index_of(&nets, leader_seen_by(&g[survivors[0]], Some(gone_id)).await);
        let past =
            |x: &openraft::RaftMetrics<u64, BasicNode>| x.purged.is_some_and(|p| p.index > away);
        g[leader]
            .raft
            .wait(Some(LIMIT))
            .metrics(past, "purged past the stopped node")
            .await
            .unwrap();
        assert!(away < last);
    }

    // Restart: new Rafts over the same stores, a new transport on the same address.
    for g in &groups {
        g[gone].raft.shutdown().await.unwrap();
    }
    let addr = nets[gone].local_addr().unwrap().to_string();
    let bound = Transport::bind(config(nets[gone].name(), &addr, b"secret"))
        .await
        .unwrap();
    nets[gone] = bound.start(peers);
    all_up(&nets).await;
    for (gi, g) in groups.iter_mut().enumerate() {
        let (log, sm) = (g[gone].log.clone(), g[gone].sm.clone());
        g[gone] = join_group(&nets[gone], gi as u64 + 1, log, sm).await;
        applied(&g[gone], lasts[gi], 1..=15).await;
        let snap = g[gone].raft.metrics().borrow().snapshot;
        assert!(
            snap.is_some_and(|s| s.index > aways[gi]),
            "caught up by snapshot: {snap:?}"
        );
    }
    for g in &groups {
        for m in g {
            m.raft.shutdown().await.unwrap();
        }
    }
    for n in &nets {
        n.shutdown().await;
    }
}

/// Counts the RPCs that reach it and refuses them.
struct Counting(Arc<AtomicUsize>);

impl GroupRpc for Counting {
    fn handle(&self, _kind: RpcKind, _payload: Bytes) -> BoxFut<Result<Bytes, String>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Err("counted".to_string()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_secret_is_refused_and_its_votes_never_arrive() {
    let nets = start_all(vec![
        config("good", "127.0.0.1:0", b"right"),
        config("evil", "127.0.0.1:0", b"wrong"),
    ])
    .await;
    let (good, evil) = (&nets[0], &nets[1]);
    let reached = Arc::new(AtomicUsize::new(0));
    good.add_group(9, Arc::new(Counting(reached.clone())));
    let m = join_group(evil, 9, MemLog::default(), MemSm::default()).await;
    m.raft.initialize(members(&nets)).await.unwrap();
    // A second campaign on `evil` means its first one asked `good` for a vote.
    m.raft
        .wait(Some(LIMIT))
        .metrics(|x| x.current_term >= 2, "a second campaign")
        .await
        .unwrap();
    assert_eq!(reached.load(Ordering::SeqCst), 0);
    assert!(!good.is_up(evil.node_id()) && !evil.is_up(good.node_id()));
    assert!(good.peer_hello(evil.node_id()).is_none());
    assert!(good.refused_handshakes() > 0 && evil.refused_handshakes() > 0);
    let err = evil
        .call(good.node_id(), 1, Bytes::from_static(b"hi"))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Unreachable { .. }), "{err:?}");
    m.raft.shutdown().await.unwrap();
    for n in &nets {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_come_and_go_and_an_unknown_group_is_unreachable() {
    let nets = start_all(vec![
        config("a", "127.0.0.1:0", b"s"),
        config("b", "127.0.0.1:0", b"s"),
    ])
    .await;
    all_up(&nets).await;
    assert_eq!(
        nets[0].peer_hello(nets[1].node_id()).unwrap().peers,
        vec!["a".to_string()]
    );
    let mut router = nets[0].router::<Tc>(42);
    let mut conn = router
        .new_client(nets[1].node_id(), &BasicNode::default())
        .await;
    let vote = || VoteRequest::new(Vote::new(1, nets[0].node_id()), None);
    let opt = || RPCOption::new(Duration::from_secs(5));
    let err = conn.vote(vote(), opt()).await.unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");

    let m = join_group(&nets[1], 42, MemLog::default(), MemSm::default()).await;
    let resp = conn.vote(vote(), opt()).await.unwrap();
    assert!(resp.vote_granted, "{resp:?}");

    nets[1].remove_group(42);
    let err = conn.vote(vote(), opt()).await.unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    m.raft.shutdown().await.unwrap();
    for n in &nets {
        n.shutdown().await;
    }
}
