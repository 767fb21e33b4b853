//! This node's member of the metadata group (docs/design/cluster.md §2), and how the
//! server proposes its durable definition changes through it.
//!
//! Durable topology changes follow one flow: decide against the local view (the applied
//! state: the store and what the materializer built from it), propose the writes as a
//! guarded transaction (the guards say what the decision saw), and let the group's apply
//! write the store and materialize the change (`materialize.rs`). On a conflict the
//! local view is already as new as the entry that won, so the caller decides again.
//! A declare-ok therefore waits for the entry to be in the Raft log on disk (a majority,
//! later) and applied on this node: the log, not sled, is the durability point.

use crate::broker::access::INIT;
use crate::broker::materialize::Materializer;
use crate::broker::runtime::{Runtime, Storage};
use crate::broker::vhost::VHost;
use broker_cluster::meta::{Guard, MetaCmd, MetaResp, MetaSm, MetaTc, Op};
use broker_cluster::META_GROUP;
use broker_core::AmqpError;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use tracing::{info, warn};

/// How many times a proposer decides again after a conflict before it gives up with
/// 541: each conflict means another change of the same names was applied meanwhile.
pub(crate) const MAX_RETRIES: usize = 16;

/// The record that hands out durable queues' store ids: the next id not yet reserved
/// (u64, big-endian). Proposers reserve [`ID_BLOCK`] ids at a time with an `Equals`
/// guard on it, so ids are unique across the group, never node-local.
pub(crate) const QUEUE_IDS_KEY: &[u8] = b"counter\0queue-id";

/// Ids reserved per proposal: one Raft entry per 64 new durable queues, not per queue.
const ID_BLOCK: u64 = 64;

/// Starts the metadata group (a group of one without `--cluster-peers`, else with the
/// peers through `broker/membership.rs`) on the cluster runtime, over the store's definitions, with the runtime's materializer as observer.
/// Returns once the group leads and has applied its whole log: a restart's replay of
/// the entries the store had not yet flushed is materialized like any live change.
pub async fn start(rt: &Arc<Runtime>) -> Result<(), String> {
    let Some(s) = rt.node.store.clone() else {
        return Ok(());
    };
    let begun = Instant::now();
    let observer = Arc::new(Materializer::new(Arc::downgrade(rt)));
    let sm = MetaSm::new(s.definitions.clone(), s.flusher.clone(), observer);
    if let Some(settings) = rt.config.cluster.as_ref() {
        // several nodes: the group formed with the peers (broker/membership.rs)
        let meta = crate::broker::membership::start(
            &s,
            settings,
            sm,
            Arc::downgrade(rt),
            rt.config.max_message_size,
        )
        .await?;
        info!(
            elapsed_ms = begun.elapsed().as_millis() as u64,
            "metadata group joined"
        );
        s.cluster.set_meta(meta);
        return defaults_once(rt, &s).await;
    }
    let log = s
        .cluster
        .log
        .group::<MetaTc>(META_GROUP)
        .map_err(|e| format!("cannot open the metadata group's log: {e}"))?;
    let id = s.cluster.id;
    let meta = s
        .cluster
        .run(broker_cluster::meta::start_alone(id, log, sm))
        .await
        .ok_or("the cluster runtime is gone")??;
    let applied = meta
        .raft()
        .metrics()
        .borrow()
        .last_applied
        .as_ref()
        .map(|l| l.index);
    info!(
        applied = applied.unwrap_or(0),
        elapsed_ms = begun.elapsed().as_millis() as u64,
        "metadata group started"
    );
    s.cluster.set_meta(meta);
    defaults_once(rt, &s).await
}

fn unavailable(why: impl std::fmt::Display) -> AmqpError {
    AmqpError::internal(format!("metadata store unavailable: {why}"))
}

/// Proposes `cmd` through the node's metadata group: `Ok(true)` once applied here,
/// `Ok(false)` on a conflict (decide again), 541 when the group does not answer.
pub(crate) async fn propose(s: &Storage, cmd: MetaCmd) -> Result<bool, AmqpError> {
    let Some(meta) = s.cluster.meta().cloned() else {
        return Err(unavailable("not started"));
    };
    match meta.propose(cmd).await {
        Ok(MetaResp::Applied { .. }) => Ok(true),
        Ok(MetaResp::Conflict { .. }) => Ok(false),
        Err(e) => {
            tracing::error!("metadata proposal failed: {e}");
            Err(e.to_amqp())
        }
    }
}

/// The error after [`MAX_RETRIES`] conflicts.
pub(crate) fn too_many_conflicts(what: &str) -> AmqpError {
    unavailable(format!("{what}: too many concurrent changes, try again"))
}

impl VHost {
    /// Whether this node runs with `--cluster-peers` (definitions come from other nodes
    /// too).
    pub(crate) fn clustered(&self) -> bool {
        self.node.config.cluster.is_some()
    }

    /// With `--cluster-peers`: waits until this node has applied everything the
    /// metadata group committed before now (an empty transaction through the group),
    /// so that a lookup which found nothing can look again before it answers 404 (a
    /// queue declared through another node is committed there before this node applies
    /// it). False on a cluster of one, or when the group does not answer.
    pub(crate) async fn catch_up(&self) -> bool {
        if !self.clustered() {
            return false;
        }
        let Some(s) = self.storage() else {
            return false;
        };
        let barrier = MetaCmd::Txn {
            guards: Vec::new(),
            ops: Vec::new(),
        };
        propose(&s, barrier).await.is_ok()
    }

    /// A store id for a new durable queue: from this node's reserved block, reserving
    /// the next block through the group when it is used up (the first reservation
    /// starts above every id the store handed out before, so a data dir of an older
    /// version keeps its queues' ids unique).
    pub(crate) async fn next_queue_id(&self, s: &Storage) -> Result<u64, AmqpError> {
        let mut block = s.cluster.queue_ids.lock().await;
        if block.start < block.end {
            let id = block.start;
            block.start += 1;
            return Ok(id);
        }
        let read = |e| unavailable(format!("cannot read the store: {e}"));
        for _ in 0..MAX_RETRIES {
            let current = s.definitions.definition(QUEUE_IDS_KEY).map_err(read)?;
            let (first, guard) = match current {
                Some(v) => {
                    let bytes: [u8; 8] = v
                        .as_slice()
                        .try_into()
                        .map_err(|_| unavailable("damaged queue id counter record"))?;
                    (
                        u64::from_be_bytes(bytes),
                        Guard::Equals(QUEUE_IDS_KEY.to_vec(), v),
                    )
                }
                None => (
                    s.definitions.next_id().map_err(read)?,
                    Guard::Absent(QUEUE_IDS_KEY.to_vec()),
                ),
            };
            let end = first + ID_BLOCK;
            let cmd = MetaCmd::Txn {
                guards: vec![guard],
                ops: vec![Op::Put(QUEUE_IDS_KEY.to_vec(), end.to_be_bytes().to_vec())],
            };
            if propose(s, cmd).await? {
                *block = first + 1..end;
                return Ok(first);
            }
        }
        Err(too_many_conflicts("queue id"))
    }
}

/// How long a node waits between attempts to create the defaults (no majority yet).
const DEFAULTS_RETRY: Duration = Duration::from_secs(1);

/// Once the node is a member that has applied the group's log: creates RabbitMQ's
/// defaults unless the keyspace has them (a guarded transaction, so of the nodes that
/// form a cluster together exactly one creates them, once), then makes the registries
/// the store's (a fresh node knew the defaults in memory only until now).
pub(crate) async fn defaults_once(rt: &Runtime, s: &Storage) -> Result<(), String> {
    if rt.registry.is_initialised() {
        return Ok(());
    }
    let read = |e| format!("cannot read the definitions: {e}");
    while s
        .definitions
        .definition(INIT.as_bytes())
        .map_err(read)?
        .is_none()
    {
        let ops = crate::broker::access::defaults()
            .into_iter()
            .map(|(k, v)| Op::Put(k.into_bytes(), v.unwrap_or_default()))
            .collect();
        let cmd = MetaCmd::Txn {
            guards: vec![Guard::Absent(INIT.as_bytes().to_vec())],
            ops,
        };
        match propose(s, cmd).await {
            Ok(true) => info!("created the default vhost '/' and user 'guest'"),
            // another node created them first: this node has applied that by now
            Ok(false) => {}
            Err(e) => {
                warn!(
                    "cannot create the defaults yet: {}; trying again",
                    e.reply_text()
                );
                tokio::time::sleep(DEFAULTS_RETRY).await;
            }
        }
    }
    let _materializing = crate::broker::materialize::lock(rt);
    let records = s.definitions.definitions().map_err(read)?;
    crate::broker::access_apply::reload(rt, &records);
    Ok(())
}
