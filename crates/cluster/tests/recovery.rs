//! A group's log survives a reopen of its store: vote, entries, truncation and purge;
//! and many groups' appends share one commit round.

mod common;

use common::{Cmd, Node, Tc, TestResult};
use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64) -> Entry<Tc> {
    let body = format!("{term}-{index}").into_bytes();
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Cmd::Enqueue { body, ts_ms: index }),
    }
}

/// Appends `entries` and waits for the flusher's round.
async fn append(
    log: &mut broker_cluster::log::GroupLog<Tc>,
    entries: Vec<Entry<Tc>>,
) -> TestResult {
    Ok(log.append_durable(entries).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vote_entries_truncation_and_purge_survive_a_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let node = Node::open(dir.path())?;
    assert!(node.recovered.is_empty());
    let mut log = node.group(7)?;
    let mut other = node.group(8)?;
    append(&mut log, (0..10).map(|i| entry(1, i)).collect()).await?;
    append(&mut other, vec![entry(1, 0)]).await?;
    log.save_vote(&Vote::new_committed(2, 1)).await?;
    log.truncate(log_id(1, 6)).await?;
    append(&mut log, vec![entry(2, 6), entry(2, 7)]).await?;
    log.purge(log_id(1, 2)).await?;
    // the purge is made durable by the next round
    log.save_vote(&Vote::new_committed(2, 1)).await?;
    drop((log, other));
    node.close();

    let node = Node::open(dir.path())?;
    assert_eq!(node.recovered, vec![7, 8]);
    let mut log = node.group(7)?;
    assert_eq!(log.read_vote().await?, Some(Vote::new_committed(2, 1)));
    let st = log.get_log_state().await?;
    assert_eq!(st.last_purged_log_id, Some(log_id(1, 2)));
    assert_eq!(st.last_log_id, Some(log_id(2, 7)));
    let got: Vec<LogId<u64>> = log
        .try_get_log_entries(0..100)
        .await?
        .iter()
        .map(|e| e.log_id)
        .collect();
    let want = vec![
        log_id(1, 3),
        log_id(1, 4),
        log_id(1, 5),
        log_id(2, 6),
        log_id(2, 7),
    ];
    assert_eq!(got, want);
    let e = log.try_get_log_entries(6..7).await?;
    assert_eq!(e[0].payload, entry(2, 6).payload);
    let mut other = node.group(8)?;
    assert_eq!(other.get_log_state().await?.last_log_id, Some(log_id(1, 0)));
    drop((log, other));
    node.close();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_and_the_earlier_records_kept() -> TestResult {
    use std::io::Write;
    let dir = tempfile::tempdir()?;
    let node = Node::open(dir.path())?;
    let mut log = node.group(3)?;
    append(&mut log, (0..4).map(|i| entry(1, i)).collect()).await?;
    drop(log);
    node.close();
    // a crash in the middle of the next record: half of it reached the file
    let raft = dir.path().join("raft");
    let last = std::fs::read_dir(&raft)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
        .max()
        .ok_or("no raft segment")?;
    let good = std::fs::metadata(&last)?.len();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&last)?
        .write_all(&[0, 0, 1, 0, 9, 9, 9, 9, 1, 0, 0])?;

    let node = Node::open(dir.path())?;
    let mut log = node.group(3)?;
    assert_eq!(log.get_log_state().await?.last_log_id, Some(log_id(1, 3)));
    assert_eq!(log.try_get_log_entries(0..10).await?.len(), 4);
    assert_eq!(std::fs::metadata(&last)?.len(), good);
    drop(log);
    node.close();
    Ok(())
}

/// Appends of many groups made at once are covered by a few commit rounds of the one
/// flusher: the fsync is shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_groups_appends_share_a_commit_round() -> TestResult {
    let dir = tempfile::tempdir()?;
    let node = Node::open(dir.path())?;
    let stats = &node.log.wal().stats;
    let mut waits = Vec::new();
    for g in 1..=50u64 {
        let log = node.group(g)?;
        waits.push(tokio::spawn(async move {
            log.append_durable(vec![entry(1, 0)]).await
        }));
    }
    for w in waits {
        w.await??;
    }
    let rounds = stats.rounds.load(std::sync::atomic::Ordering::Relaxed);
    let records = stats.records.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("50 groups' appends: {records} records in {rounds} commit rounds");
    assert_eq!(records, 50);
    assert!(rounds < 25, "rounds are shared: {rounds}");
    assert!(
        stats
            .shared_rounds
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    node.close();
    Ok(())
}
