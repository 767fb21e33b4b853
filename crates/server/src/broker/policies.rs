//! Policies and operator policies of every vhost (the rules are broker-core's
//! `policy`): kept in memory, committed through the metadata group as JSON records under
//! `policy\0vhost\0name` and `oppolicy\0vhost\0name` (every node's materializer applies
//! them here, [`Policies::apply_record`]), and applied live to the queues and exchanges
//! they match (`VHost::apply_policies`) on every node.

use crate::broker::cluster::{commit_records, ClusterNode, RecordWrite};
use broker_core::policy::{self, Kind, Policy, Target};
use broker_core::store::{DefinitionStore, StoreError};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

const POLICY: &str = "policy\0";
const OPERATOR: &str = "oppolicy\0";

/// Policies by (vhost, name), one map per kind.
type Table = RwLock<BTreeMap<(String, String), Arc<Policy>>>;

/// Which policies apply to one object, and what they come to.
#[derive(Debug, Default, Clone)]
pub struct Resolved {
    /// The applying policy's name.
    pub policy: Option<String>,
    /// The applying operator policy's name.
    pub operator_policy: Option<String>,
    /// RabbitMQ's `effective_policy_definition`.
    pub effective: Map<String, Value>,
}

/// The policies of all vhosts.
pub struct Policies {
    policies: Table,
    operator: Table,
    store: Option<Arc<dyn DefinitionStore>>,
    /// The node in the cluster, whose metadata group changes go through (with a store).
    cluster: Option<Arc<ClusterNode>>,
    /// Held from a change until it is applied, so two changes at once cannot leave a
    /// queue with the arguments of the older one.
    pub changing: tokio::sync::Mutex<()>,
    /// Bumped after every change to the tables: a queue declared while a change was
    /// being applied compares it before and after it is registered, and takes the new
    /// arguments itself if the change may have missed it.
    generation: std::sync::atomic::AtomicU64,
}

fn prefix(kind: Kind) -> &'static str {
    match kind {
        Kind::Policy => POLICY,
        Kind::Operator => OPERATOR,
    }
}

fn key(kind: Kind, vhost: &str, name: &str) -> String {
    format!("{}{vhost}\0{name}", prefix(kind))
}

/// The kind and (vhost, name) of a policy record's key.
fn parse_key(k: &str) -> Option<(Kind, &str, &str)> {
    let (kind, rest) = if let Some(rest) = k.strip_prefix(POLICY) {
        (Kind::Policy, rest)
    } else {
        (Kind::Operator, k.strip_prefix(OPERATOR)?)
    };
    let (vhost, name) = rest.split_once('\0').unwrap_or((rest, ""));
    Some((kind, vhost, name))
}

impl Policies {
    /// Loads the stored policies; a damaged record is logged and skipped.
    pub fn load(
        store: Option<Arc<dyn DefinitionStore>>,
        cluster: Option<Arc<ClusterNode>>,
    ) -> Result<Policies, String> {
        let p = Policies {
            policies: Default::default(),
            operator: Default::default(),
            store,
            cluster,
            changing: Default::default(),
            generation: Default::default(),
        };
        let records = match &p.store {
            Some(s) => s
                .definitions()
                .map_err(|e| format!("cannot read policies: {e}"))?,
            None => Vec::new(),
        };
        p.reload(&records);
        Ok(p)
    }

    /// Replaces every policy with those among `records` (a snapshot install, or the
    /// node's first view as a member).
    pub fn reload(&self, records: &[(Vec<u8>, Vec<u8>)]) {
        for kind in [Kind::Policy, Kind::Operator] {
            self.table(kind)
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        }
        for (k, v) in records {
            self.apply_record(&String::from_utf8_lossy(k), Some(v));
        }
        self.changed();
    }

    /// Applies one committed record (`None`: removed); returns the vhost whose policies
    /// changed (`None` for a key of another table).
    pub fn apply_record(&self, key: &str, value: Option<&[u8]>) -> Option<String> {
        let (kind, vhost, name) = parse_key(key)?;
        let k = (vhost.to_owned(), name.to_owned());
        let mut t = self.table(kind).write().unwrap_or_else(|e| e.into_inner());
        match value {
            None => drop(t.remove(&k)),
            Some(v) => {
                let parsed = serde_json::from_slice::<Value>(v)
                    .map_err(|e| e.to_string())
                    .and_then(|body| Policy::parse(kind, vhost, name, &body));
                match parsed {
                    Ok(pol) => drop(t.insert(k, Arc::new(pol))),
                    Err(e) => tracing::error!(vhost, name, "damaged policy record skipped: {e}"),
                }
            }
        }
        drop(t);
        self.changed();
        Some(vhost.to_owned())
    }

    async fn commit(&self, writes: Vec<RecordWrite>) -> Result<(), StoreError> {
        commit_records(self.cluster.as_ref(), writes, |k, v| {
            self.apply_record(k, v);
        })
        .await
    }

    fn table(&self, kind: Kind) -> &Table {
        match kind {
            Kind::Policy => &self.policies,
            Kind::Operator => &self.operator,
        }
    }

    /// Sets a policy (committed through the metadata group). Returns whether it is new.
    pub async fn put(&self, kind: Kind, p: Policy) -> Result<bool, StoreError> {
        let new = self.get(kind, &p.vhost, &p.name).is_none();
        let stored = serde_json::json!({
            "pattern": p.pattern,
            "apply-to": p.apply_to.as_str(),
            "definition": p.definition,
            "priority": p.priority,
        });
        let k = key(kind, &p.vhost, &p.name);
        self.commit(vec![(k, Some(stored.to_string().into_bytes()))])
            .await?;
        Ok(new)
    }

    /// Counts a change of the tables (see `generation`).
    fn changed(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Changes made so far: read before a queue's arguments are computed and again once
    /// it is registered, it tells whether a change may have passed the queue by.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Removes a policy. Returns whether there was one.
    pub async fn delete(&self, kind: Kind, vhost: &str, name: &str) -> Result<bool, StoreError> {
        if self.get(kind, vhost, name).is_none() {
            return Ok(false);
        }
        self.commit(vec![(key(kind, vhost, name), None)]).await?;
        Ok(true)
    }

    /// Removes every policy of a deleted vhost (one transaction).
    pub async fn delete_vhost(&self, vhost: &str) -> Result<(), StoreError> {
        let mut writes = Vec::new();
        for kind in [Kind::Policy, Kind::Operator] {
            for p in self.list(kind, Some(vhost)) {
                writes.push((key(kind, vhost, &p.name), None));
            }
        }
        if writes.is_empty() {
            return Ok(());
        }
        self.commit(writes).await
    }

    /// One policy.
    pub fn get(&self, kind: Kind, vhost: &str, name: &str) -> Option<Arc<Policy>> {
        let t = self.table(kind).read().unwrap_or_else(|e| e.into_inner());
        t.get(&(vhost.to_owned(), name.to_owned())).cloned()
    }

    /// The policies of one vhost or of all, by vhost and name.
    pub fn list(&self, kind: Kind, vhost: Option<&str>) -> Vec<Arc<Policy>> {
        let t = self.table(kind).read().unwrap_or_else(|e| e.into_inner());
        t.values()
            .filter(|p| vhost.is_none_or(|v| p.vhost == v))
            .cloned()
            .collect()
    }

    /// Whether a vhost has any policy or operator policy (so a declare can skip the
    /// lookup).
    pub fn any_in(&self, vhost: &str) -> bool {
        [Kind::Policy, Kind::Operator].iter().any(|k| {
            let t = self.table(*k).read().unwrap_or_else(|e| e.into_inner());
            t.keys().any(|(v, _)| v == vhost)
        })
    }

    /// Which policies apply to the object `name` in `vhost`.
    pub fn resolve(&self, vhost: &str, name: &str, target: Target) -> Resolved {
        let pick = |kind: Kind| {
            let t = self.table(kind).read().unwrap_or_else(|e| e.into_inner());
            let here = t.values().filter(|p| p.vhost == vhost).map(|p| p.as_ref());
            policy::select(here, name, target).cloned()
        };
        let (p, op) = (pick(Kind::Policy), pick(Kind::Operator));
        Resolved {
            effective: policy::effective_definition(p.as_ref(), op.as_ref()),
            policy: p.map(|p| p.name),
            operator_policy: op.map(|p| p.name),
        }
    }
}
