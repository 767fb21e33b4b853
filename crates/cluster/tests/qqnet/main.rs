//! Quorum queue groups of three members over the real transport (docs/design/cluster.md
//! §3, step 7): nodes in one process on loopback TCP, each with its own store in a
//! temporary data dir, the real `NodeLog`, `QqSm` and `QuorumNode`. Commit on a
//! majority only, forwarding from followers, effects on the leader's node only,
//! deliveries to a consumer's node over `QQ_DELIVER_SERVICE`, a leader's loss (the new
//! leader's `LeaderChanged` gives checked-out messages back), and a stopped member
//! catching up from its data dir by log (in appends cut below the frame limit) and by
//! snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod harness;
#[path = "../support/mod.rs"]
mod support;

use harness::*;

use std::time::Duration;

use broker_cluster::net::{NetConfig, PeerAddr};
use broker_cluster::quorum::ProposeError;
use broker_cluster::{Node, NodeId};
use broker_core::quorum::{CancelReason, Effect, QqOp, QqResp};
use bytes::Bytes;

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
    let mut nodes = start_cluster(&["a", "b", "c"], &d, LOG).await;
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
    nodes.push(TestNode::start(&name, &dir, &addr, &all, LOG).await);
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
    let mut nodes = start_cluster(&["a", "b", "c"], &d, LOG).await;
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
    let back = TestNode::start(&name, &dir, &addr, &all, LOG).await;
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
    let mut nodes = start_cluster(&["a", "b", "c"], &d, SNAPSHOTS).await;
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
    let back = TestNode::start(&name, &dir, &addr, &all, SNAPSHOTS).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_member_catches_up_by_appends_cut_below_the_frame_limit() {
    // 1 MiB frames: openraft sends up to 32 entries of 300 KiB in one append (~9 MiB),
    // which the router cuts into appends of three entries
    let opts = Opts {
        snapshots: false,
        max_frame: 1 << 20,
    };
    let d = dirs(3);
    let mut nodes = start_cluster(&["a", "b", "c"], &d, opts).await;
    let l = leader_of(&mut nodes, None).await;
    let f = (l + 1) % 3;
    let gone = nodes.remove(f).stop().await;
    let l = nodes
        .iter()
        .position(|n| n.group.raft.metrics().borrow().state.is_leader());
    let l = l.unwrap();
    let lid = nodes[l].id();
    let h = nodes[l].handle();
    let mut last = 0;
    for s in 1..=12u64 {
        let batch = vec![publish(lid, s, vec![s as u8; 300 << 10])];
        last = h.propose(cmd(QqOp::Enqueue { batch })).await.unwrap().index;
    }
    let (name, addr, dir) = gone;
    let mut all = peers(&nodes, &[]);
    all.push(PeerAddr {
        name: name.clone(),
        addr: addr.clone(),
    });
    let back = TestNode::start(&name, &dir, &addr, &all, opts).await;
    back.applied(last).await;
    assert_eq!(back.counts(), (12, 0, 0));
    assert_eq!(back.group.sm.export(), nodes[l].group.sm.export());
    nodes.push(back);
    shutdown(nodes).await;
}
