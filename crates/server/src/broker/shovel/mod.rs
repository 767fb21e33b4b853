//! Dynamic shovels (RabbitMQ's `shovel` runtime parameters): definitions kept in memory,
//! committed through the metadata group as JSON records under `shovel\0vhost\0name`
//! (every node's materializer applies them here, [`Shovels::apply_record`], like
//! policies), and the shovels themselves: one supervised task each (`run.rs`) on the
//! shovels' own small tokio runtime, with a status `/api/shovels` shows.
//!
//! In a cluster a shovel runs on ONE node: the running member with the lowest name
//! (every node decides the same from the membership status, again every few seconds,
//! so a shovel moves when its node goes and comes back when it returns). A cluster of
//! one runs them all.

mod headers;
pub mod params;
mod run;
pub mod uri;

use crate::broker::cluster::{commit_records, ClusterNode, RecordWrite};
use broker_core::store::{DefinitionStore, StoreError};
use params::ShovelDef;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use tokio::sync::watch;

const PREFIX: &str = "shovel\0";
/// How often a node checks which shovels it should run (cluster placement).
const PLACEMENT_TICK: std::time::Duration = std::time::Duration::from_secs(3);

/// A shovel's state, RabbitMQ's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShovelState {
    /// Connecting (or waiting to reconnect after a failure).
    Starting,
    /// Moving messages.
    Running,
    /// Failed (see the reason) or completed.
    Terminated,
}

impl ShovelState {
    /// RabbitMQ's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ShovelState::Starting => "starting",
            ShovelState::Running => "running",
            ShovelState::Terminated => "terminated",
        }
    }
}

/// What a running shovel reports.
#[derive(Debug)]
pub struct Status {
    state: Mutex<(ShovelState, Option<String>, u64)>,
    forwarded: AtomicU64,
    /// Messages left before `src-delete-after` (-1: unlimited).
    remaining: AtomicI64,
    /// Published, not yet confirmed by the destination (`on-confirm`).
    unacked: AtomicI64,
}

impl Status {
    fn new() -> Status {
        Status {
            state: Mutex::new((ShovelState::Starting, None, crate::broker::node::now_ms())),
            forwarded: AtomicU64::new(0),
            remaining: AtomicI64::new(-1),
            unacked: AtomicI64::new(0),
        }
    }

    /// Sets the state (and the reason of a termination).
    pub fn set(&self, state: ShovelState, reason: Option<String>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *s = (state, reason, crate::broker::node::now_ms());
        if state != ShovelState::Running {
            self.unacked.store(0, Ordering::Relaxed);
        }
    }

    /// State, reason, when it last changed (ms).
    pub fn get(&self) -> (ShovelState, Option<String>, u64) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn forwarded(&self) {
        self.forwarded.fetch_add(1, Ordering::Relaxed);
    }

    fn set_remaining(&self, r: Option<u64>) {
        let v = r.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        self.remaining.store(v, Ordering::Relaxed);
    }

    fn unacked(&self, d: i64) {
        self.unacked.fetch_add(d, Ordering::Relaxed);
    }

    /// Messages forwarded since the shovel was (re)started on this node.
    pub fn forwarded_count(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// Messages left before it deletes itself (`None`: unlimited).
    pub fn remaining(&self) -> Option<u64> {
        u64::try_from(self.remaining.load(Ordering::Relaxed)).ok()
    }

    /// Forwarded messages not yet confirmed.
    pub fn remaining_unacked(&self) -> u64 {
        u64::try_from(self.unacked.load(Ordering::Relaxed)).unwrap_or(0)
    }
}

/// (vhost, name, definition, status if it runs on this node) of one shovel.
pub type ShovelView = (String, String, Arc<ShovelDef>, Option<Arc<Status>>);

/// A running shovel's task.
struct Running {
    stop: watch::Sender<bool>,
    status: Arc<Status>,
    task: tokio::task::JoinHandle<()>,
}

/// One shovel parameter.
struct Entry {
    value: Value,
    def: Arc<ShovelDef>,
    run: Option<Running>,
}

/// What the shovels need from the node, given once the listener is bound (`start`).
pub struct StartEnv {
    /// This node's plain AMQP listener (local shovels connect to it).
    pub local: Option<std::net::SocketAddr>,
    /// The internal user's password on this process.
    pub secret: String,
    /// Whether the node is one of a cluster (placement is checked every few seconds).
    pub clustered: bool,
    /// The names of the cluster's running members (`None`: a cluster of one).
    pub members: Box<dyn Fn() -> Option<Vec<String>> + Send + Sync>,
}

/// [`StartEnv`] and the shovels' runtime.
struct Env {
    start: StartEnv,
    exec: tokio::runtime::Runtime,
}

/// The shovels of all vhosts.
pub struct Shovels {
    table: Mutex<BTreeMap<(String, String), Entry>>,
    store: Option<Arc<dyn DefinitionStore>>,
    cluster: Option<Arc<ClusterNode>>,
    env: OnceLock<Env>,
    me: Weak<Shovels>,
}

fn key(vhost: &str, name: &str) -> String {
    format!("{PREFIX}{vhost}\0{name}")
}

/// Whether `key` is a shovel record's.
pub(crate) fn is_shovel_key(key: &[u8]) -> bool {
    key.starts_with(PREFIX.as_bytes())
}

impl Shovels {
    /// Loads the stored shovels (started later, by [`Shovels::start`]).
    pub fn load(
        store: Option<Arc<dyn DefinitionStore>>,
        cluster: Option<Arc<ClusterNode>>,
    ) -> Result<Arc<Shovels>, String> {
        let s = Arc::new_cyclic(|me| Shovels {
            table: Default::default(),
            store,
            cluster,
            env: OnceLock::new(),
            me: me.clone(),
        });
        let records = match &s.store {
            Some(st) => st
                .definitions()
                .map_err(|e| format!("cannot read shovels: {e}"))?,
            None => Vec::new(),
        };
        s.reload(&records);
        Ok(s)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Entry>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces every shovel with those among `records` (a snapshot install).
    pub fn reload(&self, records: &[(Vec<u8>, Vec<u8>)]) {
        let keep: Vec<(String, Vec<u8>)> = records
            .iter()
            .filter(|(k, _)| is_shovel_key(k))
            .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.clone()))
            .collect();
        let gone: Vec<(String, String)> = {
            let t = self.lock();
            t.keys()
                .filter(|(v, n)| !keep.iter().any(|(k, _)| *k == key(v, n)))
                .cloned()
                .collect()
        };
        for (v, n) in gone {
            self.apply_record(&key(&v, &n), None);
        }
        for (k, v) in keep {
            self.apply_record(&k, Some(&v));
        }
    }

    /// Applies one committed record (`None`: removed): the table changes and, once
    /// started, the shovel starts, restarts with its new definition, or stops.
    pub fn apply_record(&self, k: &str, value: Option<&[u8]>) {
        let Some(rest) = k.strip_prefix(PREFIX) else {
            return;
        };
        let (vhost, name) = rest.split_once('\0').unwrap_or((rest, ""));
        let id = (vhost.to_owned(), name.to_owned());
        let mut t = self.lock();
        let parsed_value = value.and_then(|v| serde_json::from_slice::<Value>(v).ok());
        if let (Some(old), Some(new)) = (t.get(&id), parsed_value.as_ref()) {
            // the same definition applied again (a reload, a replay): it runs on
            if old.value == *new {
                return;
            }
        }
        if let Some(old) = t.remove(&id) {
            stop(old.run);
        }
        let Some(v) = value else {
            return;
        };
        let parsed = serde_json::from_slice::<Value>(v)
            .map_err(|e| e.to_string())
            .and_then(|value| params::parse(name, &value).map(|d| (value, d)));
        match parsed {
            Ok((value, def)) => {
                let mut e = Entry {
                    value,
                    def: Arc::new(def),
                    run: None,
                };
                if self.runs_here(vhost, name) {
                    e.run = self.spawn(vhost, name, &e.def);
                }
                t.insert(id, e);
            }
            Err(e) => tracing::error!(vhost, name, "damaged shovel record skipped: {e}"),
        }
    }

    async fn commit(&self, writes: Vec<RecordWrite>) -> Result<(), StoreError> {
        commit_records(self.cluster.as_ref(), writes, |k, v| {
            self.apply_record(k, v)
        })
        .await
    }

    /// Sets a shovel (committed through the metadata group); the value was checked by
    /// `params::parse`. Returns whether it is new.
    pub async fn put(&self, vhost: &str, name: &str, value: &Value) -> Result<bool, StoreError> {
        let new = self.get(vhost, name).is_none();
        self.commit(vec![(
            key(vhost, name),
            Some(value.to_string().into_bytes()),
        )])
        .await?;
        Ok(new)
    }

    /// Removes a shovel. Returns whether there was one.
    pub async fn delete(&self, vhost: &str, name: &str) -> Result<bool, StoreError> {
        if self.get(vhost, name).is_none() {
            return Ok(false);
        }
        self.commit(vec![(key(vhost, name), None)]).await?;
        Ok(true)
    }

    /// Removes every shovel of a deleted vhost (one transaction).
    pub async fn delete_vhost(&self, vhost: &str) -> Result<(), StoreError> {
        let writes: Vec<RecordWrite> = self
            .list(Some(vhost))
            .into_iter()
            .map(|(v, n, _)| (key(&v, &n), None))
            .collect();
        if writes.is_empty() {
            return Ok(());
        }
        self.commit(writes).await
    }

    /// One shovel's value.
    pub fn get(&self, vhost: &str, name: &str) -> Option<Value> {
        self.lock()
            .get(&(vhost.to_owned(), name.to_owned()))
            .map(|e| e.value.clone())
    }

    /// (vhost, name, value) of one vhost's shovels or all, sorted.
    pub fn list(&self, vhost: Option<&str>) -> Vec<(String, String, Value)> {
        self.lock()
            .iter()
            .filter(|((v, _), _)| vhost.is_none_or(|x| x == v))
            .map(|((v, n), e)| (v.clone(), n.clone(), e.value.clone()))
            .collect()
    }

    /// (vhost, name, definition, status if it runs on this node) of the shovels.
    pub fn statuses(&self, vhost: Option<&str>) -> Vec<ShovelView> {
        self.lock()
            .iter()
            .filter(|((v, _), _)| vhost.is_none_or(|x| x == v))
            .map(|((v, n), e)| {
                let st = e.run.as_ref().map(|r| r.status.clone());
                (v.clone(), n.clone(), e.def.clone(), st)
            })
            .collect()
    }

    /// Restarts a shovel that runs on this node. Returns whether it was found.
    pub fn restart(&self, vhost: &str, name: &str) -> bool {
        let mut t = self.lock();
        let Some(e) = t.get_mut(&(vhost.to_owned(), name.to_owned())) else {
            return false;
        };
        stop(e.run.take());
        if self.runs_here(vhost, name) {
            e.run = self.spawn(vhost, name, &e.def);
        }
        true
    }

    /// Starts the shovels (after recovery, once the AMQP listener is bound), and the
    /// placement check of a cluster.
    pub fn start(&self, start: StartEnv) -> Result<(), String> {
        let exec = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("shovels")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the shovels' runtime: {e}"))?;
        let handle = exec.handle().clone();
        let clustered = start.clustered;
        let _ = self.env.set(Env { start, exec });
        self.place();
        if clustered {
            let me = self.me.clone();
            handle.spawn(async move {
                loop {
                    tokio::time::sleep(PLACEMENT_TICK).await;
                    match me.upgrade() {
                        Some(s) => s.place(),
                        None => return,
                    }
                }
            });
        }
        Ok(())
    }

    /// Starts the shovels this node should run and stops those it should not.
    fn place(&self) {
        let mut t = self.lock();
        for ((v, n), e) in t.iter_mut() {
            let here = self.runs_here(v, n);
            let running = e.run.as_ref().is_some_and(|r| !r.task.is_finished());
            if here && e.run.is_none() {
                e.run = self.spawn(v, n, &e.def);
            } else if !here && running {
                stop(e.run.take());
            }
        }
    }

    /// Whether this node runs the shovel: the running member with the lowest name.
    fn runs_here(&self, _vhost: &str, _name: &str) -> bool {
        let Some(env) = self.env.get() else {
            return false;
        };
        let Some(members) = (env.start.members)() else {
            return true;
        };
        let me = crate::broker::node::node_name();
        members.iter().min().is_none_or(|first| first == me)
    }

    /// Starts a shovel's task (once started).
    fn spawn(&self, vhost: &str, name: &str, def: &Arc<ShovelDef>) -> Option<Running> {
        let env = self.env.get()?;
        let status = Arc::new(Status::new());
        let (stop, rx) = watch::channel(false);
        let me = self.me.clone();
        let (v, n) = (vhost.to_owned(), name.to_owned());
        let ctx = run::RunCtx {
            vhost: v.clone(),
            name: n.clone(),
            def: def.clone(),
            status: status.clone(),
            local: env.start.local,
            secret: env.start.secret.clone(),
            node: crate::broker::node::node_name().to_owned(),
            on_done: Arc::new(move || {
                // src-delete-after reached: the shovel removes its own parameter
                let (me, v, n) = (me.clone(), v.clone(), n.clone());
                tokio::spawn(async move {
                    if let Some(s) = me.upgrade() {
                        if let Err(e) = s.delete(&v, &n).await {
                            tracing::error!(vhost = %v, name = %n, "cannot delete the completed shovel: {e}");
                        }
                    }
                });
            }),
        };
        let task = env.exec.spawn(run::supervise(ctx, rx));
        Some(Running { stop, status, task })
    }
}

impl Drop for Shovels {
    fn drop(&mut self) {
        // dropping a runtime inside another runtime's context panics; this does not wait
        if let Some(env) = self.env.take() {
            env.exec.shutdown_background();
        }
    }
}

/// Tells a shovel's task to stop (it closes its connections and ends).
fn stop(run: Option<Running>) {
    if let Some(r) = run {
        let _ = r.stop.send(true);
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a time in ms since the epoch, as RabbitMQ shows a
/// shovel's `timestamp`.
pub fn format_timestamp(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // days since 1970-01-01 to a civil date (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rabbitmqs_format() {
        assert_eq!(super::format_timestamp(0), "1970-01-01 00:00:00");
        assert_eq!(
            super::format_timestamp(1_709_251_199_000),
            "2024-02-29 23:59:59"
        );
    }
}
