//! The metadata group as a one-node Raft (the broker without cluster flags): proposals
//! through `MetaHandle`, concurrent conflicting declares of which exactly one applies,
//! a restart that replays the log past the store, and the forwarding error path.

mod support;

use broker_cluster::meta::{Guard, MetaCmd, MetaHandle, MetaRaft, MetaResp, Op, ProposeError};
use broker_core::replicated::APPLIED_KEY;
use broker_core::store::DefinitionStore;
use openraft::{BasicNode, Config, SnapshotPolicy};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use support::mem_log::MemLog;
use support::{Alone, Node1, TestResult};

fn config() -> Result<Arc<Config>, Box<dyn std::error::Error>> {
    Ok(Arc::new(base_config().validate()?))
}

fn base_config() -> Config {
    Config {
        cluster_name: "meta-test".into(),
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        ..Default::default()
    }
}

/// Snapshots when the test asks (openraft ignores a trigger while a build runs, so a
/// policy would make the test's timing matter) and keeps no log behind them.
fn compacting() -> Result<Arc<Config>, Box<dyn std::error::Error>> {
    let c = Config {
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..base_config()
    };
    Ok(Arc::new(c.validate()?))
}

/// A member on the store in `dir` and the log `log`; initializes the group the first
/// time, and waits until it leads.
async fn start(dir: &Path, log: MemLog) -> Result<(MetaHandle, Node1), Box<dyn std::error::Error>> {
    start_with(dir, log, config()?).await
}

async fn start_with(
    dir: &Path,
    log: MemLog,
    config: Arc<Config>,
) -> Result<(MetaHandle, Node1), Box<dyn std::error::Error>> {
    let node = Node1::open(dir)?;
    let raft = MetaRaft::new(1, config, Alone, log.clone(), node.sm.clone()).await?;
    if log.is_fresh() {
        let members: BTreeMap<u64, BasicNode> = [(1, BasicNode::new("127.0.0.1:1"))].into();
        raft.initialize(members).await?;
    }
    raft.wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.current_leader == Some(1), "leads its group of one")
        .await?;
    Ok((
        MetaHandle::with_timeout(raft, Duration::from_secs(10)),
        node,
    ))
}

fn declare(name: &str, by: u8) -> MetaCmd {
    MetaCmd::Txn {
        guards: vec![Guard::Absent(name.as_bytes().to_vec())],
        ops: vec![Op::Put(name.as_bytes().to_vec(), vec![by])],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_declares_of_one_name_apply_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (meta, node) = start(dir.path(), MemLog::default()).await?;
    let first = meta.propose(declare("q0", 0)).await?;
    let MetaResp::Applied { index } = first else {
        return Err(format!("first declare: {first:?}").into());
    };
    // answered from this node's own apply: the store has it already
    assert_eq!(node.store.definition(b"q0")?, Some(vec![0]));
    meta.wait_applied(index).await?;

    let racers: Vec<_> = (1..=8u8)
        .map(|by| {
            let meta = meta.clone();
            tokio::spawn(async move { (by, meta.propose(declare("q1", by)).await) })
        })
        .collect();
    let mut winners = Vec::new();
    for r in racers {
        let (by, resp) = r.await?;
        match resp? {
            MetaResp::Applied { .. } => winners.push(by),
            MetaResp::Conflict { guard: 0 } => {
                // the loser's node has applied the winner's entry: deciding again, it
                // sees the queue
                assert!(node.store.definition(b"q1")?.is_some());
            }
            other => return Err(format!("racer {by}: {other:?}").into()),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one declare applies: {winners:?}");
    assert_eq!(node.store.definition(b"q1")?, Some(vec![winners[0]]));
    assert!(matches!(
        meta.propose(MetaCmd::Txn {
            guards: vec![],
            ops: vec![Op::Put(APPLIED_KEY.to_vec(), vec![])]
        })
        .await,
        Err(ProposeError::ReservedKey)
    ));
    meta.raft().shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_replays_the_log_past_what_the_store_kept() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = MemLog::default();
    let early = {
        let (meta, node) = start(dir.path(), log.clone()).await?;
        meta.propose(declare("q0", 0)).await?;
        let early = node.store.definitions_snapshot()?;
        for i in 1..5u8 {
            meta.propose(declare(&format!("q{i}"), i)).await?;
        }
        meta.raft().shutdown().await?;
        early
    };
    // apply's writes are staged, not flushed: a crash may lose the last ones. Stand for
    // that by putting back the keyspace (and applied id) as it was after the first
    // declare; the log still has the rest, and openraft applies it again from there.
    Node1::open(dir.path())?.store.replace_definitions(&early)?;
    let (meta, node) = start(dir.path(), log.clone()).await?;
    assert!(
        node.seen.seen().len() >= 4,
        "the lost entries were applied again"
    );
    meta.wait_applied(log.last_index().ok_or("empty log")?)
        .await?;
    for i in 0..5u8 {
        assert_eq!(
            node.store.definition(format!("q{i}").as_bytes())?,
            Some(vec![i])
        );
    }
    assert_eq!(
        meta.propose(declare("q4", 9)).await?,
        MetaResp::Conflict { guard: 0 }
    );
    meta.raft().shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_the_log_was_purged_behind_a_snapshot() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = MemLog::default();
    {
        let (meta, _node) = start_with(dir.path(), log.clone(), compacting()?).await?;
        for i in 0..12u8 {
            meta.propose(declare(&format!("q{i}"), i)).await?;
            if i == 5 {
                // a build that runs while the next entries apply
                meta.raft().trigger().snapshot().await?;
            }
        }
        meta.raft()
            .wait(Some(Duration::from_secs(10)))
            .metrics(|m| m.snapshot.is_some(), "first snapshot")
            .await?;
        // one more covers the tail; openraft drops the log behind it
        meta.raft().trigger().snapshot().await?;
        let last = log.last_index().ok_or("empty log")?;
        let m = meta
            .raft()
            .wait(Some(Duration::from_secs(10)))
            .metrics(|m| m.purged.is_some_and(|p| p.index >= last), "log purged")
            .await?;
        assert!(m.snapshot.is_some_and(|s| s.index >= last));
        meta.raft().shutdown().await?;
    }
    // the purged entries exist only in the store now: it must have them, with the
    // applied id that says so, or openraft could not start
    let (meta, node) = start_with(dir.path(), log.clone(), compacting()?).await?;
    meta.wait_applied(log.last_index().ok_or("empty log")?)
        .await?;
    for i in 0..12u8 {
        assert_eq!(
            node.store.definition(format!("q{i}").as_bytes())?,
            Some(vec![i])
        );
    }
    // a snapshot is at hand for a follower that would need one
    let m = meta.raft().metrics().borrow().clone();
    assert!(m.snapshot.is_some_and(|s| s.index >= 13), "{m:?}");
    let again = meta.propose(declare("q12", 12)).await?;
    assert!(
        matches!(again, MetaResp::Applied { index } if index > 13),
        "{again:?}"
    );
    meta.raft().shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_lead_names_the_forwarding_path() -> TestResult {
    let dir = tempfile::tempdir()?;
    let node = Node1::open(dir.path())?;
    // never initialized: no leader known
    let raft = MetaRaft::new(1, config()?, Alone, MemLog::default(), node.sm.clone()).await?;
    let meta = MetaHandle::with_timeout(raft, Duration::from_secs(5));
    match meta.propose(declare("q", 1)).await {
        Err(ProposeError::ForwardToLeader { leader: None, .. }) => {}
        other => return Err(format!("expected ForwardToLeader: {other:?}").into()),
    }
    assert_eq!(
        ProposeError::Timeout(Duration::from_secs(30))
            .to_amqp()
            .code
            .code(),
        541
    );
    meta.raft().shutdown().await?;
    Ok(())
}
