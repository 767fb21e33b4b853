//! Users, permissions and vhost limits: the broker's access registry. Kept in memory
//! (looked up once per connection and per declare, never per publish); the records are
//! the metadata group's (docs/design/cluster.md §2), so a change is committed through
//! the group and every node's materializer applies it here ([`Registry::apply_record`]):
//! a user created on one node logs in on all of them.
//!
//! RabbitMQ's defaults (vhost "/", user guest/guest tagged administrator with full
//! permissions on "/") are created once for the cluster, at its first formation, by a
//! guarded transaction (`access_apply.rs`); until a fresh node is a member it knows them
//! in memory only. guest may log in from loopback only.

use crate::broker::cluster::{commit_records, ClusterNode, RecordWrite};
use broker_core::auth::{Access, Permission, User};
use broker_core::deadletter::Reach;
use broker_core::store::{DefinitionStore, StoreError};
use broker_core::AmqpError;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Key prefixes in the definitions store (exchanges, queues and bindings use e/q/b).
/// Read patterns that match every resource name: the only ones that let a binding with
/// wildcards on `amq.dead-letter` through (a regex cannot in general be proven to match
/// every name, so the rule takes RabbitMQ's usual spellings of "everything").
pub const READ_ALL: &[&str] = &[".*", "^.*", ".*$", "^.*$"];

pub(crate) const USER: &str = "user\0";
pub(crate) const PERM: &str = "perm\0";
pub(crate) const VHOST: &str = "vhost\0";
/// Present once the cluster's defaults were created (the guard of that transaction).
pub(crate) const INIT: &str = "init";

/// Limits of a vhost (`max-connections`, `max-queues`); `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostLimits {
    /// Most client connections.
    #[serde(rename = "max-connections", skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    /// Most queues.
    #[serde(rename = "max-queues", skip_serializing_if = "Option::is_none")]
    pub max_queues: Option<u64>,
}

/// A vhost's stored record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VhostRecord {
    /// Name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Limits.
    #[serde(default)]
    pub limits: VhostLimits,
    /// Free tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct PermRecord {
    configure: String,
    write: String,
    read: String,
}

/// Users, permissions and vhost records.
pub struct Registry {
    users: DashMap<String, User>,
    /// (vhost, user) → permission.
    perms: DashMap<(String, String), Permission>,
    vhosts: DashMap<String, VhostRecord>,
    store: Option<Arc<dyn DefinitionStore>>,
    /// The node in the cluster, whose metadata group changes go through (with a store).
    cluster: Option<Arc<ClusterNode>>,
    /// Whether the records include [`INIT`] (the defaults exist in the store).
    initialised: std::sync::atomic::AtomicBool,
    /// Bumped whenever a permission changes (channels cache their checks against it).
    version: AtomicU64,
    /// Users that may log in from loopback addresses only (RabbitMQ's `loopback_users`).
    loopback_users: Vec<String>,
    /// Per-user limits and the counts they are checked against.
    pub user_limits: super::user_limits::UserLimitTable,
    /// Topic permissions by (vhost, user).
    pub topic_perms: super::topic_perms::TopicPermTable,
    /// The password of the broker's own [`INTERNAL_USER`] on this process: random at
    /// start, never stored or shown, accepted from loopback only. Local shovels
    /// (`amqp://` without a host) log in with it and act with full rights, as
    /// RabbitMQ's direct connections do.
    internal_secret: String,
}

fn salt() -> [u8; 4] {
    rand::random()
}

impl Registry {
    /// Loads the registry from the store's records. A store without the defaults (a
    /// fresh data dir) gets them in memory only, until the group commits them
    /// (`access_apply::defaults`) and the registry is reloaded from the store.
    pub fn load(
        store: Option<Arc<dyn DefinitionStore>>,
        cluster: Option<Arc<ClusterNode>>,
    ) -> Result<Registry, String> {
        let r = Registry {
            users: DashMap::new(),
            perms: DashMap::new(),
            vhosts: DashMap::new(),
            store,
            cluster,
            initialised: Default::default(),
            version: AtomicU64::new(1),
            loopback_users: vec!["guest".into()],
            user_limits: Default::default(),
            topic_perms: Default::default(),
            internal_secret: (0..4)
                .map(|_| format!("{:016x}", rand::random::<u64>()))
                .collect(),
        };
        let records = match &r.store {
            Some(s) => s
                .definitions()
                .map_err(|e| format!("cannot read users and vhosts: {e}"))?,
            None => Vec::new(),
        };
        r.reload(&records);
        if !r.is_initialised() {
            // not the marker: the store does not have them yet
            for (k, v) in defaults().into_iter().filter(|(k, _)| k != INIT) {
                r.apply_record(&k, v.as_deref());
            }
        }
        Ok(r)
    }

    /// Whether the store's records include the defaults' marker.
    pub fn is_initialised(&self) -> bool {
        self.initialised.load(Ordering::Acquire)
    }

    /// Replaces everything with `records` (every definition record: those of other
    /// tables are skipped), after a snapshot install or once the node is a member.
    pub fn reload(&self, records: &[(Vec<u8>, Vec<u8>)]) {
        self.users.clear();
        self.perms.clear();
        self.vhosts.clear();
        self.user_limits.clear_all();
        self.topic_perms.clear_all();
        self.initialised.store(false, Ordering::Release);
        for (k, v) in records {
            self.apply_record(&String::from_utf8_lossy(k), Some(v));
        }
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Applies one committed record (`None`: removed); a key of another table is
    /// ignored, a damaged record logged and skipped.
    pub fn apply_record(&self, key: &str, value: Option<&[u8]>) {
        let parsed: Result<(), String> = if let Some(name) = key.strip_prefix(USER) {
            match value {
                None => {
                    self.users.remove(name);
                    Ok(())
                }
                Some(v) => serde_json::from_slice::<User>(v)
                    .map(|u| drop(self.users.insert(name.to_owned(), u)))
                    .map_err(|e| e.to_string()),
            }
        } else if let Some(rest) = key.strip_prefix(PERM) {
            let (vhost, user) = rest.split_once('\0').unwrap_or((rest, ""));
            let k = (vhost.to_owned(), user.to_owned());
            let r = match value {
                None => {
                    self.perms.remove(&k);
                    Ok(())
                }
                Some(v) => serde_json::from_slice::<PermRecord>(v)
                    .map_err(|e| e.to_string())
                    .and_then(|p| Permission::new(&p.configure, &p.write, &p.read))
                    .map(|perm| drop(self.perms.insert(k, perm))),
            };
            self.version.fetch_add(1, Ordering::AcqRel);
            r
        } else if let Some(name) = key.strip_prefix(super::user_limits::KEY) {
            self.user_limits
                .apply(name, value)
                .map_err(|e| e.to_string())
        } else if let Some(rest) = key.strip_prefix(super::topic_perms::KEY) {
            self.topic_perms.apply(rest, value)
        } else if let Some(name) = key.strip_prefix(VHOST) {
            match value {
                None => {
                    self.vhosts.remove(name);
                    Ok(())
                }
                Some(v) => serde_json::from_slice::<VhostRecord>(v)
                    .map(|mut rec| {
                        rec.name = name.to_owned();
                        self.vhosts.insert(name.to_owned(), rec);
                    })
                    .map_err(|e| e.to_string()),
            }
        } else {
            if key == INIT {
                self.initialised.store(value.is_some(), Ordering::Release);
            }
            Ok(())
        };
        if let Err(e) = parsed {
            tracing::error!(key = %key.replace('\0', "/"), "damaged access record skipped: {e}");
        }
    }

    /// Commits `writes` (through the metadata group when there is a store).
    async fn commit(&self, writes: Vec<RecordWrite>) -> Result<(), StoreError> {
        commit_records(self.cluster.as_ref(), writes, |k, v| {
            self.apply_record(k, v)
        })
        .await
    }

    /// Sets (or with `None` clears) limit `name` of `user` (`max-connections`,
    /// `max-channels`); `Ok(false)` if `name` is no limit.
    pub async fn set_user_limit(
        &self,
        user: &str,
        name: &str,
        value: Option<i64>,
    ) -> Result<bool, StoreError> {
        let Some(w) = self.user_limits.set_write(user, name, value) else {
            return Ok(false);
        };
        self.commit(vec![w]).await?;
        Ok(true)
    }

    /// Replaces all of a user's limits (definitions import).
    pub async fn replace_user_limits(
        &self,
        user: &str,
        l: super::user_limits::UserLimits,
    ) -> Result<(), StoreError> {
        let w = super::user_limits::UserLimitTable::write(user, l);
        self.commit(vec![w]).await
    }

    /// Sets a topic permission; `Ok(true)` if the user had none in the vhost. A pattern
    /// that is no regex is `Err(Ok(reason))`, a store failure `Err(Err(e))`.
    pub async fn set_topic_permission(
        &self,
        vhost: &str,
        user: &str,
        p: super::topic_perms::TopicPermission,
    ) -> Result<bool, Result<String, StoreError>> {
        let (new, w) = self.topic_perms.set_write(vhost, user, p).map_err(Ok)?;
        self.commit(vec![w]).await.map_err(Err)?;
        Ok(new)
    }

    /// Removes a user's topic permissions in a vhost; whether it had any.
    pub async fn clear_topic_permissions(
        &self,
        vhost: &str,
        user: &str,
    ) -> Result<bool, StoreError> {
        let writes = self.topic_perms.clear_writes(Some(vhost), Some(user));
        if writes.is_empty() {
            return Ok(false);
        }
        self.commit(writes).await?;
        Ok(true)
    }

    /// Sets the users restricted to loopback logins (default: guest).
    pub fn set_loopback_users(&mut self, users: Vec<String>) {
        self.loopback_users = users;
    }

    /// Checks a login. `peer` is where the client connects from: guest is refused
    /// unless it comes from loopback, as RabbitMQ's `loopback_users` default does.
    pub fn authenticate(&self, user: &str, password: &str, peer: IpAddr) -> Option<User> {
        if user == broker_core::auth::INTERNAL_USER {
            return self.internal_login(password, peer);
        }
        let u = self.check_password(user, password)?;
        if !self.may_log_in_from(&u.name, peer) {
            tracing::warn!(%peer, user = %u.name, "user may only connect from localhost (--loopback-users)");
            return None;
        }
        Some(u)
    }

    /// The password of the broker's own user on this process (local shovels).
    pub fn internal_secret(&self) -> &str {
        &self.internal_secret
    }

    /// The broker's own user, for a loopback login with this process's secret: an
    /// administrator with every permission in every vhost.
    fn internal_login(&self, password: &str, peer: IpAddr) -> Option<User> {
        let same = password.len() == self.internal_secret.len()
            && password
                .bytes()
                .zip(self.internal_secret.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        (same && peer.to_canonical().is_loopback()).then(|| User {
            name: broker_core::auth::INTERNAL_USER.to_owned(),
            password_hash: String::new(),
            hashing_algorithm: Default::default(),
            tags: vec!["administrator".to_owned()],
        })
    }

    /// The user if `password` is its password. The broker's reserved name never logs in,
    /// even if a record of that name was stored before the name was reserved.
    pub fn check_password(&self, user: &str, password: &str) -> Option<User> {
        if user == broker_core::auth::INTERNAL_USER {
            return None;
        }
        self.user(user).filter(|u| u.check_password(password))
    }

    /// Whether `user` may log in from `peer`: users in `loopback_users` only from a
    /// loopback address (an IPv4-mapped IPv6 loopback address counts as one). The AMQP
    /// handshake and the management API both ask, as in RabbitMQ.
    pub fn may_log_in_from(&self, user: &str, peer: IpAddr) -> bool {
        peer.to_canonical().is_loopback() || !self.loopback_users.iter().any(|u| u == user)
    }

    /// A user.
    pub fn user(&self, name: &str) -> Option<User> {
        self.users.get(name).map(|u| u.clone())
    }

    /// Every user, by name.
    pub fn users(&self) -> Vec<User> {
        let mut v: Vec<User> = self.users.iter().map(|u| u.value().clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Creates or replaces a user.
    pub async fn put_user(&self, u: User) -> Result<(), StoreError> {
        self.commit(vec![user_write(&u)?]).await
    }

    /// Deletes a user with its permissions, topic permissions and limits (one
    /// transaction). Returns whether it existed.
    pub async fn delete_user(&self, name: &str) -> Result<bool, StoreError> {
        if self.user(name).is_none() {
            return Ok(false);
        }
        let mut writes = vec![(format!("{USER}{name}"), None)];
        writes.push((format!("{}{name}", super::user_limits::KEY), None));
        writes.extend(self.topic_perms.clear_writes(None, Some(name)));
        writes.extend(self.perm_writes(|_, u| u == name));
        self.commit(writes).await?;
        Ok(true)
    }

    /// The writes that remove the permissions `which(vhost, user)` selects.
    fn perm_writes(&self, which: impl Fn(&str, &str) -> bool) -> Vec<RecordWrite> {
        self.perms
            .iter()
            .filter(|p| which(&p.key().0, &p.key().1))
            .map(|p| (format!("{PERM}{}\0{}", p.key().0, p.key().1), None))
            .collect()
    }

    /// A user's permission in a vhost.
    pub fn permission(&self, vhost: &str, user: &str) -> Option<Permission> {
        if user == broker_core::auth::INTERNAL_USER {
            return Permission::new(".*", ".*", ".*").ok();
        }
        self.perms
            .get(&(vhost.to_owned(), user.to_owned()))
            .map(|p| p.clone())
    }

    /// Every permission: (vhost, user, permission), sorted.
    pub fn permissions(&self) -> Vec<(String, String, Permission)> {
        let mut v: Vec<_> = self
            .perms
            .iter()
            .map(|p| (p.key().0.clone(), p.key().1.clone(), p.value().clone()))
            .collect();
        v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        v
    }

    /// Sets a user's permission in a vhost.
    pub async fn set_permission(
        &self,
        vhost: &str,
        user: &str,
        p: Permission,
    ) -> Result<(), StoreError> {
        self.commit(vec![perm_write(vhost, user, &p)?]).await
    }

    /// Removes a user's permission in a vhost. Returns whether it existed.
    pub async fn clear_permission(&self, vhost: &str, user: &str) -> Result<bool, StoreError> {
        let existed = self.permission(vhost, user).is_some();
        self.commit(vec![(format!("{PERM}{vhost}\0{user}"), None)])
            .await?;
        Ok(existed)
    }

    /// Changes whenever a permission does.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Whether `user` may do `kind` to the resource `name` in `vhost`.
    pub fn allows(&self, vhost: &str, user: &str, kind: Access, name: &str) -> bool {
        if user == broker_core::auth::INTERNAL_USER {
            return true;
        }
        self.perms
            .get(&(vhost.to_owned(), user.to_owned()))
            .is_some_and(|p| p.allows(kind, name))
    }

    /// Whether a binding from `amq.dead-letter` with `key` gives `user` only dead letters
    /// they could have read from the source queues: a key without wildcards needs read
    /// permission on the queue it names; a key with wildcards can reach any queue's, so it
    /// needs a read pattern that matches every name ([`READ_ALL`]).
    pub fn may_read_dead_letters(&self, vhost: &str, user: &str, key: &str) -> bool {
        match broker_core::deadletter::binding_reach(key) {
            Reach::Queue(queue) => self.allows(vhost, user, Access::Read, queue),
            Reach::AnyQueue => self
                .perms
                .get(&(vhost.to_owned(), user.to_owned()))
                .is_some_and(|p| READ_ALL.contains(&p.read.as_str())),
        }
    }

    /// [`Registry::may_read_dead_letters`] as the answer to a bind (AMQP and HTTP alike):
    /// 403 ACCESS_REFUSED naming what the key would have reached.
    pub fn check_dead_letter_binding(
        &self,
        vhost: &str,
        user: &str,
        key: &str,
    ) -> Result<(), AmqpError> {
        if self.may_read_dead_letters(vhost, user, key) {
            return Ok(());
        }
        let dlx = broker_core::deadletter::DEAD_LETTER_EXCHANGE;
        Err(AmqpError::access_refused(match broker_core::deadletter::binding_reach(key) {
            Reach::Queue(queue) => format!(
                "access to the dead letters of queue '{queue}' in vhost '{vhost}' refused for user '{user}'"
            ),
            Reach::AnyQueue => format!(
                "access to the dead letters of every queue in vhost '{vhost}' refused for user '{user}': \
                 binding key '{key}' on '{dlx}' has wildcards and needs read permission '.*'"
            ),
        }))
    }

    /// A vhost's record.
    pub fn vhost(&self, name: &str) -> Option<VhostRecord> {
        self.vhosts.get(name).map(|v| v.clone())
    }

    /// Every vhost record, by name.
    pub fn vhosts(&self) -> Vec<VhostRecord> {
        let mut v: Vec<VhostRecord> = self.vhosts.iter().map(|r| r.value().clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Creates or updates a vhost record.
    pub async fn put_vhost(&self, rec: VhostRecord) -> Result<(), StoreError> {
        self.commit(vec![vhost_write(&rec)?]).await
    }

    /// Deletes a vhost record with every permission and topic permission in it (one
    /// transaction).
    pub async fn delete_vhost(&self, name: &str) -> Result<bool, StoreError> {
        if self.vhost(name).is_none() {
            return Ok(false);
        }
        let mut writes = vec![(format!("{VHOST}{name}"), None)];
        writes.extend(self.topic_perms.clear_writes(Some(name), None));
        writes.extend(self.perm_writes(|v, _| v == name));
        self.commit(writes).await?;
        Ok(true)
    }
}

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError(e.to_string())
}

/// A user's record.
fn user_write(u: &User) -> Result<RecordWrite, StoreError> {
    let json = serde_json::to_vec(u).map_err(json_err)?;
    Ok((format!("{USER}{}", u.name), Some(json)))
}

/// A permission's record.
fn perm_write(vhost: &str, user: &str, p: &Permission) -> Result<RecordWrite, StoreError> {
    let rec = PermRecord {
        configure: p.configure.clone(),
        write: p.write.clone(),
        read: p.read.clone(),
    };
    let json = serde_json::to_vec(&rec).map_err(json_err)?;
    Ok((format!("{PERM}{vhost}\0{user}"), Some(json)))
}

/// A vhost's record.
fn vhost_write(rec: &VhostRecord) -> Result<RecordWrite, StoreError> {
    let json = serde_json::to_vec(rec).map_err(json_err)?;
    Ok((format!("{VHOST}{}", rec.name), Some(json)))
}

/// RabbitMQ's defaults as records: vhost "/", guest/guest (administrator) with every
/// permission on "/", and the [`INIT`] marker that guards their creation.
pub(crate) fn defaults() -> Vec<RecordWrite> {
    let vhost = VhostRecord {
        name: "/".into(),
        ..Default::default()
    };
    let guest = User::new("guest", "guest", vec!["administrator".into()], salt());
    let mut out: Vec<RecordWrite> = [
        vhost_write(&vhost),
        user_write(&guest),
        perm_write("/", "guest", &Permission::all()),
    ]
    .into_iter()
    .filter_map(Result::ok)
    .collect();
    out.push((INIT.to_owned(), Some(b"1".to_vec())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    #[test]
    fn fresh_registry_has_guest_on_loopback_only() {
        let r = Registry::load(None, None).unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let remote: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(r.authenticate("guest", "guest", lo).is_some());
        assert!(r.authenticate("guest", "guest", remote).is_none());
        assert!(r.authenticate("guest", "wrong", lo).is_none());
        assert!(r.allows("/", "guest", Access::Configure, "anything"));
        let bob = User::new("bob", "pw", vec![], [9, 9, 9, 9]);
        block_on(r.put_user(bob)).unwrap();
        assert!(r.authenticate("bob", "pw", remote).is_some());
        assert!(!r.allows("/", "bob", Access::Read, "q"));
        let v = r.version();
        block_on(r.set_permission("/", "bob", Permission::new("", "", "^q$").unwrap())).unwrap();
        assert!(r.version() > v);
        assert!(r.allows("/", "bob", Access::Read, "q"));
        assert!(!r.allows("/", "bob", Access::Write, "q"));
        block_on(r.delete_user("bob")).unwrap();
        assert!(r.permission("/", "bob").is_none());
    }

    #[test]
    fn loopback_users_can_be_lifted() {
        let mut r = Registry::load(None, None).unwrap();
        let remote: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(r.authenticate("guest", "guest", remote).is_none());
        r.set_loopback_users(vec![]);
        assert!(r.authenticate("guest", "guest", remote).is_some());
    }

    #[test]
    fn mapped_loopback_counts_as_loopback() {
        let r = Registry::load(None, None).unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let remote: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert!(r.may_log_in_from("guest", mapped));
        assert!(!r.may_log_in_from("guest", remote));
        assert!(r.may_log_in_from("bob", remote));
    }

    #[test]
    fn the_reserved_name_never_logs_in() {
        let r = Registry::load(None, None).unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let internal = broker_core::auth::INTERNAL_USER;
        block_on(r.put_user(User::new(
            internal,
            "pw",
            vec!["administrator".into()],
            [1, 2, 3, 4],
        )))
        .unwrap();
        assert!(r.authenticate(internal, "pw", lo).is_none());
        assert!(r.check_password(internal, "pw").is_none());
    }
}
