//! Where a new quorum queue's members and leader go (docs/design/cluster.md §3), after
//! RabbitMQ's `rabbit_queue_location`: the queue leader locator — a policy's
//! `queue-leader-locator`, else the `x-queue-leader-locator` argument, else the node's
//! `--queue-leader-locator` (default `client-local`, as RabbitMQ's
//! `queue_leader_locator`) — picks the leader's node:
//!
//! - `client-local`: the declaring node;
//! - `balanced` (and the older names `random` and `least-leaders`, which RabbitMQ
//!   takes as `balanced`): while the cluster has fewer than [`RANDOM_FROM`] queues, the
//!   running voter that leads the fewest quorum queues, else a random one.
//!
//! The leader's node is the first member; `x-quorum-initial-group-size` (default 3,
//! at most the number of voters) - 1 other voters follow it, from the name-sorted list
//! at an offset that turns with the queue's store id, so followers spread too. The
//! first member asks for the group's first election (`queue/quorum/replicated.rs`);
//! the others stand only once the group has a leader, the first member's node is
//! down, or 30 s have passed. A later election (the leader's node lost) may move the
//! lead for good: openraft 0.9 cannot hand leadership back.

use crate::broker::runtime::Storage;
use crate::broker::vhost::VHost;
pub use crate::config::LeaderLocator;
use broker_cluster::membership::NodeStatus;
use broker_core::policy::Target;
use broker_core::store::decode_definitions;
use broker_wire::types::FieldTable;
use std::collections::HashMap;

/// From this many queues in the cluster on, `balanced` picks a random node (counting
/// leaders would cost too much, as in RabbitMQ).
pub const RANDOM_FROM: usize = 1000;

impl VHost {
    /// The leader locator of a new queue `name` declared with `arguments`.
    pub(crate) fn leader_locator(&self, name: &str, arguments: &FieldTable) -> LeaderLocator {
        let from_policy = self.node.policies.any_in(&self.name).then(|| {
            let r = self.node.policies.resolve(&self.name, name, Target::Queue);
            r.effective
                .get("queue-leader-locator")
                .and_then(|v| v.as_str())
                .and_then(LeaderLocator::parse)
        });
        let from_arg = || {
            arguments
                .inner()
                .get("x-queue-leader-locator")
                .and_then(broker_core::args::str_value)
                .and_then(|s| LeaderLocator::parse(&s))
        };
        from_policy
            .flatten()
            .or_else(from_arg)
            .unwrap_or(self.node.config.queue_leader_locator)
    }
}

/// The member nodes of a new quorum queue of store id `id`, its leader's node first.
/// Empty on a cluster of one: the queue is a group of one on this node, as before.
pub fn quorum_members(
    s: &Storage,
    id: u64,
    size: Option<u64>,
    locator: LeaderLocator,
) -> Vec<String> {
    let Some(status) = crate::broker::membership::status(s) else {
        return Vec::new();
    };
    let me = crate::broker::node::node_name();
    let leader = match locator {
        LeaderLocator::ClientLocal => me.to_string(),
        LeaderLocator::Balanced => balanced(s, &status.nodes).unwrap_or_else(|| me.to_string()),
    };
    let mut others: Vec<String> = status
        .nodes
        .iter()
        .filter(|n| n.voter && n.name != leader)
        .map(|n| n.name.clone())
        .collect();
    others.sort();
    if !others.is_empty() {
        let k = usize::try_from(id).unwrap_or(0) % others.len();
        others.rotate_left(k);
    }
    let want = usize::try_from(size.unwrap_or(3).max(1)).unwrap_or(usize::MAX);
    let mut members = vec![leader];
    members.extend(others.into_iter().take(want - 1));
    members
}

/// The running voter leading the fewest quorum queues (ties: by name), or a random one
/// when the cluster has [`RANDOM_FROM`] queues or more. A queue's leader is the one this
/// node's member knows, and for a queue of which this node is no member, its first
/// member (the node placed to lead it, which asks for its elections).
fn balanced(s: &Storage, nodes: &[NodeStatus]) -> Option<String> {
    let mut candidates: Vec<&NodeStatus> = nodes.iter().filter(|n| n.voter && n.running).collect();
    candidates.sort_by(|a, b| a.name.cmp(&b.name));
    let records = match s.definitions.definitions_with_prefix(b"q") {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("cannot read the queue records to place a leader: {e}");
            return None;
        }
    };
    if records.len() >= RANDOM_FROM {
        let i = rand::random::<usize>() % candidates.len().max(1);
        return candidates.get(i).map(|n| n.name.clone());
    }
    let (defs, _) = decode_definitions(records);
    let names: HashMap<u64, &str> = nodes.iter().map(|n| (n.id, n.name.as_str())).collect();
    let mut leads: HashMap<&str, usize> = HashMap::new();
    for q in defs.queues.iter().filter(|q| !q.members.is_empty()) {
        let gid = broker_cluster::quorum::quorum_group_id(q.id);
        let known = s
            .cluster
            .quorum()
            .and_then(|qn| qn.groups().get(gid))
            .and_then(|raft| raft.metrics().borrow().current_leader)
            .and_then(|id| names.get(&id).copied());
        if let Some(leader) = known.or(q.members.first().map(String::as_str)) {
            *leads.entry(leader).or_default() += 1;
        }
    }
    candidates
        .iter()
        .min_by_key(|n| leads.get(n.name.as_str()).copied().unwrap_or(0))
        .map(|n| n.name.clone())
}
