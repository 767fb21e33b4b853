//! The access side of the materializer (docs/design/cluster.md §2): committed records of
//! users, vhosts, permissions, topic permissions, limits, policies and schemas become this node's
//! registries (`access.rs`, `policies.rs`, `schemas.rs`), its vhosts (a vhost record added or removed
//! starts or drops the node's `VHost`), the policies in force on its queues and exchanges,
//! and the connections a deleted user or vhost had here. Every node runs it for every
//! change, whoever proposed it, so a user created on one node logs in on all of them.
//!
//! Applying a record is idempotent (it sets what the record says), so a replay of the
//! log tail after a restart or a reload after a snapshot finds nothing to undo.

use crate::broker::access::{INIT, USER, VHOST};
use crate::broker::runtime::Runtime;
use crate::broker::vhost::VHost;
use broker_cluster::meta::Change;

/// Key prefixes of the access records (everything that is not topology).
const PREFIXES: &[&[u8]] = &[
    b"user\0",
    b"perm\0",
    b"vhost\0",
    b"tperm\0",
    b"ulimit\0",
    b"policy\0",
    b"oppolicy\0",
    b"shovel\0",
    b"schema\0",
];

/// Whether `key` is an access record's (or the defaults' marker).
pub(crate) fn is_access_key(key: &[u8]) -> bool {
    key == INIT.as_bytes() || PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Applies one committed change of an access record. The caller holds the
/// materializer's lock, so this never interleaves with a reload.
pub(crate) fn applied(rt: &Runtime, c: &Change) {
    let key = String::from_utf8_lossy(&c.key);
    let new = c.new.as_deref();
    rt.registry.apply_record(&key, new);
    rt.shovels.apply_record(&key, new);
    if let Some(vhost) = rt.policies.apply_record(&key, new) {
        apply_policies(rt, &vhost);
    }
    // a schema changed: the exchanges that use it look it up again
    if let Some(vhost) = rt.schemas.apply_record(&key, new) {
        apply_policies(rt, &vhost);
    }
    if let Some(name) = key.strip_prefix(VHOST) {
        match new {
            Some(_) => ensure_vhost(rt, name),
            None => drop_vhost(rt, name),
        }
    } else if let (Some(name), None) = (key.strip_prefix(USER), new) {
        close_connections(
            rt,
            |_, user| user == name,
            &format!("user '{name}' is deleted"),
        );
    }
}

/// After the keyspace was replaced (snapshot install) or first became the cluster's:
/// the registries and policies are rebuilt from `records`, vhosts without a record are
/// dropped and missing ones started. A vhost that stays keeps its `VHost` (its topology
/// is the topology materializer's business, which reloads next).
pub(crate) fn reload(rt: &Runtime, records: &[(Vec<u8>, Vec<u8>)]) {
    rt.registry.reload(records);
    rt.policies.reload(records);
    rt.shovels.reload(records);
    rt.schemas.reload(records);
    let names: Vec<String> = rt.vhosts.iter().map(|v| v.key().clone()).collect();
    for name in names {
        if rt.registry.vhost(&name).is_none() {
            drop_vhost(rt, &name);
        }
    }
    for rec in rt.registry.vhosts() {
        ensure_vhost(rt, &rec.name);
        apply_policies(rt, &rec.name);
    }
}

fn ensure_vhost(rt: &Runtime, name: &str) {
    if rt.vhost(name).is_none() {
        rt.vhosts
            .insert(name.to_owned(), VHost::new(name, rt.node.clone()));
    }
}

/// A vhost record went: its connections are closed (320, as RabbitMQ) and the node
/// forgets it. Its durable entities went before it (the deleting node removes them
/// through the group first).
fn drop_vhost(rt: &Runtime, name: &str) {
    close_connections(
        rt,
        |vhost, _| vhost == name,
        &format!("vhost '{name}' is deleted"),
    );
    rt.vhosts.remove(name);
}

/// Closes (320 CONNECTION_FORCED) the node's connections `which(vhost, user)` selects.
fn close_connections(rt: &Runtime, which: impl Fn(&str, &str) -> bool, reason: &str) {
    for c in rt.conn_info.iter().filter(|c| which(&c.vhost, &c.user)) {
        if let Some(r) = rt.connections.get(&c.id) {
            r.do_send(crate::broker::messages::ForceClose {
                reason: reason.to_owned(),
            });
        }
    }
}

/// Brings a vhost's queues and exchanges to the policies now in force, on a worker (the
/// materializer never waits for an actor). The node that took the change does the same
/// before it answers; the second pass finds nothing to change.
fn apply_policies(rt: &Runtime, vhost: &str) {
    let Some(v) = rt.vhost(vhost) else {
        return;
    };
    let node = rt.node.clone();
    rt.node.next_arbiter().spawn(async move {
        let _changing = node.policies.changing.lock().await;
        v.apply_policies().await;
    });
}
