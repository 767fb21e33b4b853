//! A quorum queue group of one on a real store: commands apply and their effects reach
//! the sink, the state comes back after a restart (from the log, and from the snapshot
//! file with the log after it).

mod support;

use broker_cluster::log::NodeLog;
use broker_cluster::quorum::{quorum_group_id, Alone, EffectSink, QuorumGroup};
use broker_cluster::Node;
use broker_core::message::Message;
use broker_core::quorum::{ChanId, Checkout, ConsumerId, Effect, Publish, QqCmd, QqOp, QqResp};
use broker_core::store::{encode_message, MessageStore};
use broker_store::Flusher;
use bytes::Bytes;
use openraft::storage::RaftStateMachine;
use openraft::RaftSnapshotBuilder;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{open_store, TestResult};

#[derive(Default)]
struct Sink(Mutex<Vec<Effect>>);

impl EffectSink for Sink {
    fn effects(&self, _index: u64, effects: Vec<Effect>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(effects);
    }
}

fn chan() -> ChanId {
    ChanId {
        node: 1,
        connection: 1,
        channel: 1,
    }
}

fn publish(seq: u64, body: &'static str) -> Publish {
    Publish {
        publisher: chan(),
        seq,
        message: encode_message(&Message {
            exchange: "".into(),
            routing_key: "q".into(),
            properties: Default::default(),
            raw_properties: Bytes::from_static(&[0, 0]),
            body: Bytes::from_static(body.as_bytes()),
            persist_id: None,
            arrival_ms: 0,
        }),
    }
}

fn cmd(op: QqOp) -> QqCmd {
    QqCmd { ts_ms: 1_000, op }
}

async fn open(
    dir: &std::path::Path,
    sink: Arc<Sink>,
) -> Result<(QuorumGroup, Arc<broker_store::SledStore>), Box<dyn std::error::Error>> {
    let store = Arc::new(open_store(dir)?);
    let flusher = Flusher::start(store.clone() as Arc<dyn MessageStore>);
    let (log, _) = NodeLog::open(&store, flusher);
    let members: BTreeMap<u64, Node> = [(1, Node::new("127.0.0.1:1"))].into();
    let group = QuorumGroup::start(
        quorum_group_id(0),
        1,
        members,
        &log,
        store.raft_snapshots(),
        sink,
        Alone,
    )
    .await?;
    group
        .raft
        .wait(Some(Duration::from_secs(10)))
        .current_leader(1, "leads")
        .await?;
    Ok((group, store))
}

#[test]
fn group_id_is_store_id_plus_one() {
    assert_eq!(quorum_group_id(0), 1);
    assert_eq!(quorum_group_id(41), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_delivers_and_recovers_from_log_and_snapshot() -> TestResult {
    let dir = tempfile::tempdir()?;
    let sink = Arc::new(Sink::default());
    let (group, store) = open(dir.path(), sink.clone()).await?;
    let batch = vec![publish(1, "a"), publish(2, "b"), publish(2, "dup")];
    let r = group
        .raft
        .client_write(cmd(QqOp::Enqueue { batch }))
        .await?;
    assert_eq!(r.data, QqResp::Ok);
    assert_eq!(
        group.sm.counts().ready.load(Ordering::Relaxed),
        2,
        "seq 2 deduplicated"
    );
    let consumer = ConsumerId {
        chan: chan(),
        tag: "c".into(),
    };
    let spec = Checkout::Consume {
        prefetch: 1,
        no_ack: false,
        priority: 0,
        exclusive: false,
    };
    group
        .raft
        .client_write(cmd(QqOp::Checkout { consumer, spec }))
        .await?;
    let delivered: Vec<Bytes> = sink
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(|e| match e {
            Effect::Deliver { message, .. } => Some(message.body.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        delivered,
        vec![Bytes::from_static(b"a")],
        "prefetch 1: one delivery"
    );
    group.raft.shutdown().await?;
    drop((group, store));

    // restart: the log replays the state
    let (group, store) = open(dir.path(), Arc::new(Sink::default())).await?;
    group
        .raft
        .wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(Some(3), "replayed")
        .await?;
    assert_eq!(group.sm.counts().ready.load(Ordering::Relaxed), 1);
    assert_eq!(group.sm.counts().unacked.load(Ordering::Relaxed), 1);
    // the snapshot file (what openraft's builder writes before it may purge the log)
    let built = group.sm.clone().build_snapshot().await?;
    assert_eq!(built.meta.last_log_id.map(|l| l.index), Some(3));
    group.raft.shutdown().await?;
    drop((group, store));

    // restart again: the state comes from the snapshot file, the log adds what follows
    let (group, _store) = open(dir.path(), Arc::new(Sink::default())).await?;
    let mut sm = group.sm.clone();
    let (applied, _) = sm.applied_state().await?;
    assert!(
        applied.is_some_and(|l| l.index >= 3),
        "from the snapshot: {applied:?}"
    );
    assert_eq!(group.sm.counts().ready.load(Ordering::Relaxed), 1);
    assert_eq!(group.sm.counts().unacked.load(Ordering::Relaxed), 1);
    group.raft.shutdown().await?;
    Ok(())
}
