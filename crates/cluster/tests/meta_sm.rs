//! The metadata state machine driven directly with log entries, on real stores in
//! temporary data dirs: guard semantics, prefix deletes, reserved keys, determinism,
//! snapshots and restart.

mod support;

use broker_cluster::meta::{Change, Guard, MetaCmd, MetaEntry, MetaResp, Op};
use broker_core::replicated::{Record, APPLIED_KEY, MEMBERSHIP_KEY};
use broker_core::store::DefinitionStore;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{BasicNode, EntryPayload, Membership};
use std::collections::{BTreeMap, BTreeSet};
use support::{entry, log_id, Node1, Seen, TestResult};

fn txn(guards: Vec<Guard>, ops: Vec<Op>) -> MetaCmd {
    MetaCmd::Txn { guards, ops }
}

fn k(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

async fn apply(
    n: &mut Node1,
    index: u64,
    cmd: MetaCmd,
) -> Result<MetaResp, Box<dyn std::error::Error>> {
    let mut out = n.sm.apply([entry(index, cmd)]).await?;
    out.pop().ok_or_else(|| "no answer".into())
}

fn records(n: &Node1) -> Result<Vec<Record>, Box<dyn std::error::Error>> {
    Ok(n.store.definitions()?)
}

#[tokio::test]
async fn guards_absent_present_equals() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut n = Node1::open(dir.path())?;
    let q = k("q1");
    let create = txn(
        vec![Guard::Absent(q.clone())],
        vec![Op::Put(q.clone(), k("v1"))],
    );
    assert_eq!(
        apply(&mut n, 1, create.clone()).await?,
        MetaResp::Applied { index: 1 }
    );
    assert_eq!(n.store.definition(&q)?, Some(k("v1")));

    // the same declare again: the record is there now
    assert_eq!(
        apply(&mut n, 2, create).await?,
        MetaResp::Conflict { guard: 0 }
    );
    // a delete decided on another record: the second guard fails, nothing changes
    let stale = txn(
        vec![Guard::Present(q.clone()), Guard::Equals(q.clone(), k("v0"))],
        vec![Op::Delete(q.clone())],
    );
    let before = records(&n)?;
    assert_eq!(
        apply(&mut n, 3, stale).await?,
        MetaResp::Conflict { guard: 1 }
    );
    assert_eq!(records(&n)?, before);
    // Present on a missing key fails too
    let missing = txn(
        vec![Guard::Present(k("nope"))],
        vec![Op::Put(k("x"), k("y"))],
    );
    assert_eq!(
        apply(&mut n, 4, missing).await?,
        MetaResp::Conflict { guard: 0 }
    );
    assert_eq!(records(&n)?, before);

    let replace = txn(
        vec![Guard::Equals(q.clone(), k("v1"))],
        vec![Op::Put(q.clone(), k("v2"))],
    );
    assert_eq!(
        apply(&mut n, 5, replace).await?,
        MetaResp::Applied { index: 5 }
    );
    assert_eq!(n.store.definition(&q)?, Some(k("v2")));

    // conflicts still move the applied id on, and tell the observer nothing changed
    let (applied, _) = n.sm.applied_state().await?;
    assert_eq!(applied, Some(log_id(5)));
    let change = |old: Option<&str>, new: &str| Change {
        key: q.clone(),
        old: old.map(k),
        new: Some(k(new)),
    };
    assert_eq!(
        n.seen.seen(),
        vec![
            Seen::Applied(1, vec![change(None, "v1")]),
            Seen::Applied(2, vec![]),
            Seen::Applied(3, vec![]),
            Seen::Applied(4, vec![]),
            Seen::Applied(5, vec![change(Some("v1"), "v2")]),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn ops_apply_in_order_and_delete_prefix_takes_what_is_under_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut n = Node1::open(dir.path())?;
    let setup = txn(
        vec![],
        vec![
            Op::Put(k("q\0a\0one"), k("1")),
            Op::Put(k("q\0a\0two"), k("2")),
            Op::Put(k("q\0b\0one"), k("3")),
            Op::Put(k("q\0a"), k("not under the prefix")),
        ],
    );
    apply(&mut n, 1, setup).await?;
    let drop_vhost = txn(
        vec![Guard::Present(k("q\0a\0one"))],
        vec![
            Op::Put(k("q\0a\0three"), k("4")), // written, then taken by the prefix delete
            Op::Delete(k("q\0a\0two")),
            Op::DeletePrefix(k("q\0a\0")),
            Op::Put(k("q\0a\0four"), k("5")), // after it: stays
        ],
    );
    assert_eq!(
        apply(&mut n, 2, drop_vhost).await?,
        MetaResp::Applied { index: 2 }
    );
    let keys: Vec<Vec<u8>> = records(&n)?.into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec![k("q\0a"), k("q\0a\0four"), k("q\0b\0one")]);
    let Some(Seen::Applied(2, changes)) = n.seen.seen().pop() else {
        return Err("no changes seen".into());
    };
    type Seen3 = (String, Option<Vec<u8>>, Option<Vec<u8>>);
    let summary: Vec<Seen3> = changes
        .into_iter()
        .map(|c| {
            (
                String::from_utf8_lossy(&c.key).replace('\0', "/"),
                c.old,
                c.new,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("q/a/three".into(), None, Some(k("4"))),
            ("q/a/two".into(), Some(k("2")), None),
            // the prefix delete, in key order, of what held a record at that point
            ("q/a/one".into(), Some(k("1")), None),
            ("q/a/three".into(), Some(k("4")), None),
            ("q/a/four".into(), None, Some(k("5"))),
        ]
    );
    // a prefix that covers everything leaves the state machine's own keys alone
    apply(&mut n, 3, txn(vec![], vec![Op::DeletePrefix(vec![])])).await?;
    assert!(records(&n)?.is_empty());
    let (applied, _) = n.sm.applied_state().await?;
    assert_eq!(applied, Some(log_id(3)));
    Ok(())
}

#[tokio::test]
async fn reserved_keys_are_invisible_to_commands() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut n = Node1::open(dir.path())?;
    let forge = txn(
        vec![Guard::Absent(APPLIED_KEY.to_vec())],
        vec![
            Op::Put(APPLIED_KEY.to_vec(), k("forged")),
            Op::Put(k("x"), k("1")),
        ],
    );
    assert!(
        forge.reserved_key().is_some(),
        "propose refuses it up front"
    );
    // applied anyway (a log written by an older version, say): the reserved write is
    // skipped, the rest applies
    assert_eq!(
        apply(&mut n, 1, forge).await?,
        MetaResp::Applied { index: 1 }
    );
    assert_eq!(n.sm.applied_state().await?.0, Some(log_id(1)));
    assert_eq!(records(&n)?, vec![(k("x"), k("1"))]);
    Ok(())
}

fn membership_entry(index: u64) -> MetaEntry {
    let nodes: BTreeMap<u64, BasicNode> = [(1, BasicNode::new("127.0.0.1:1"))].into();
    let voters: BTreeSet<u64> = [1].into();
    MetaEntry {
        log_id: log_id(index),
        payload: EntryPayload::Membership(Membership::new(vec![voters], nodes)),
    }
}

/// A mix of entries: a membership, blanks, creates, conflicts, replaces, prefix deletes.
fn history() -> Vec<MetaEntry> {
    let mut es = vec![
        membership_entry(1),
        MetaEntry {
            log_id: log_id(2),
            payload: EntryPayload::Blank,
        },
    ];
    for i in 0..40u64 {
        let name = k(&format!("q\0v{}\0n{}", i % 3, i % 7));
        let cmd = match i % 4 {
            0 | 1 => txn(
                vec![Guard::Absent(name.clone())],
                vec![Op::Put(name, i.to_be_bytes().to_vec())],
            ),
            2 => txn(
                vec![Guard::Present(name.clone())],
                vec![Op::Put(name, k("replaced"))],
            ),
            _ => txn(
                vec![],
                vec![Op::DeletePrefix(k(&format!("q\0v{}\0", i % 3)))],
            ),
        };
        es.push(entry(3 + i, cmd));
    }
    es
}

#[tokio::test]
async fn two_replicas_fed_the_same_entries_hold_the_same_bytes() -> TestResult {
    let (da, db) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (mut a, mut b) = (Node1::open(da.path())?, Node1::open(db.path())?);
    let ra = a.sm.apply(history()).await?;
    // the other replica applies the same log in other chunks
    let mut rb = Vec::new();
    for chunk in history().chunks(7) {
        rb.extend(b.sm.apply(chunk.to_vec()).await?);
    }
    assert_eq!(ra, rb);
    assert!(ra.iter().any(|r| matches!(r, MetaResp::Conflict { .. })));
    let (sa, sb) = (
        a.store.definitions_snapshot()?,
        b.store.definitions_snapshot()?,
    );
    assert!(!sa.records.is_empty());
    assert!(sa.state.membership.is_some());
    assert_eq!(sa, sb);
    assert_eq!(a.seen.seen(), b.seen.seen());
    Ok(())
}

#[tokio::test]
async fn a_snapshot_installed_elsewhere_gives_the_same_keyspace() -> TestResult {
    let (da, db) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (mut a, mut b) = (Node1::open(da.path())?, Node1::open(db.path())?);
    a.sm.apply(history()).await?;
    // b had other records, which the snapshot replaces
    apply(&mut b, 1, txn(vec![], vec![Op::Put(k("stale"), k("1"))])).await?;

    let snap = a.sm.get_snapshot_builder().await.build_snapshot().await?;
    assert_eq!(snap.meta.last_log_id, Some(log_id(42)));
    let mut receiving = b.sm.begin_receiving_snapshot().await?;
    receiving
        .get_mut()
        .extend_from_slice(snap.snapshot.get_ref());
    b.sm.install_snapshot(&snap.meta, receiving).await?;

    assert_eq!(
        a.store.definitions_snapshot()?,
        b.store.definitions_snapshot()?
    );
    assert_eq!(b.sm.applied_state().await?, a.sm.applied_state().await?);
    assert_eq!(b.seen.seen().last(), Some(&Seen::Reset));
    let current =
        b.sm.get_current_snapshot()
            .await?
            .ok_or("no current snapshot")?;
    assert_eq!(current.meta, snap.meta);
    // and both go on alike
    let next = txn(
        vec![Guard::Absent(k("new"))],
        vec![Op::Put(k("new"), k("1"))],
    );
    assert_eq!(
        apply(&mut a, 43, next.clone()).await?,
        apply(&mut b, 43, next).await?
    );
    assert_eq!(
        a.store.definitions_snapshot()?,
        b.store.definitions_snapshot()?
    );
    Ok(())
}

#[tokio::test]
async fn applied_id_membership_and_keys_come_back_after_a_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let expected = {
        let mut n = Node1::open(dir.path())?;
        n.sm.apply(history()).await?;
        // what a clean stop does: the index flush, on the flusher thread
        n.sm.get_snapshot_builder().await.build_snapshot().await?;
        (n.store.definitions_snapshot()?, n.sm.applied_state().await?)
    };
    let mut n = Node1::open(dir.path())?;
    assert_eq!(n.store.definitions_snapshot()?, expected.0);
    let (applied, membership) = n.sm.applied_state().await?;
    assert_eq!((applied, membership.clone()), expected.1);
    assert_eq!(applied, Some(log_id(42)));
    assert_eq!(membership.log_id(), &Some(log_id(1)));
    // the state machine's own keys are not definitions
    assert!(n
        .store
        .definitions()?
        .iter()
        .all(|(key, _)| key != APPLIED_KEY && key != MEMBERSHIP_KEY));
    Ok(())
}
