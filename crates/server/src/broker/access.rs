//! Users, permissions and vhost limits: the broker's access registry. Kept in memory
//! (looked up once per connection and per declare, never per publish) and in the
//! definitions store, so users, vhosts and permissions are durable.
//!
//! A fresh data dir gets RabbitMQ's defaults: vhost "/", user guest/guest tagged
//! administrator with full permissions on "/". guest may log in from loopback only.

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

const USER: &str = "user\0";
const PERM: &str = "perm\0";
const VHOST: &str = "vhost\0";
const INIT: &str = "init";

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
    /// Bumped whenever a permission changes (channels cache their checks against it).
    version: AtomicU64,
    /// Users that may log in from loopback addresses only (RabbitMQ's `loopback_users`).
    loopback_users: Vec<String>,
    /// Per-user limits and the counts they are checked against.
    pub user_limits: super::user_limits::UserLimitTable,
    /// Topic permissions by (vhost, user).
    pub topic_perms: super::topic_perms::TopicPermTable,
}

fn salt() -> [u8; 4] {
    rand::random()
}

impl Registry {
    /// Loads the registry from the store; a fresh store gets "/" and guest.
    pub fn load(store: Option<Arc<dyn DefinitionStore>>) -> Result<Registry, String> {
        let r = Registry {
            users: DashMap::new(),
            perms: DashMap::new(),
            vhosts: DashMap::new(),
            store,
            version: AtomicU64::new(1),
            loopback_users: vec!["guest".into()],
            user_limits: Default::default(),
            topic_perms: Default::default(),
        };
        let records = match &r.store {
            Some(s) => s
                .definitions()
                .map_err(|e| format!("cannot read users and vhosts: {e}"))?,
            None => Vec::new(),
        };
        let mut initialised = false;
        for (k, v) in records {
            let key = String::from_utf8_lossy(&k).into_owned();
            let parsed: Result<(), serde_json::Error> = if let Some(name) = key.strip_prefix(USER) {
                serde_json::from_slice::<User>(&v).map(|u| {
                    r.users.insert(name.to_owned(), u);
                })
            } else if let Some(rest) = key.strip_prefix(PERM) {
                let (vhost, user) = rest.split_once('\0').unwrap_or((rest, ""));
                serde_json::from_slice::<PermRecord>(&v).map(|p| {
                    match Permission::new(&p.configure, &p.write, &p.read) {
                        Ok(perm) => {
                            r.perms.insert((vhost.to_owned(), user.to_owned()), perm);
                        }
                        Err(e) => tracing::error!(vhost, user, "stored permission skipped: {e}"),
                    }
                })
            } else if let Some(name) = key.strip_prefix(super::user_limits::KEY) {
                r.user_limits.load(name, &v)
            } else if let Some(rest) = key.strip_prefix(super::topic_perms::KEY) {
                if let Err(e) = r.topic_perms.load(rest, &v) {
                    tracing::error!(key = %key.replace('\0', "/"), "stored topic permission skipped: {e}");
                }
                Ok(())
            } else if let Some(name) = key.strip_prefix(VHOST) {
                serde_json::from_slice::<VhostRecord>(&v).map(|mut rec| {
                    rec.name = name.to_owned();
                    r.vhosts.insert(name.to_owned(), rec);
                })
            } else {
                if key == INIT {
                    initialised = true;
                }
                Ok(())
            };
            if let Err(e) = parsed {
                tracing::error!(key = %key.replace('\0', "/"), "damaged access record skipped: {e}");
            }
        }
        if !initialised {
            r.put_vhost(VhostRecord {
                name: "/".into(),
                ..Default::default()
            })
            .map_err(|e| e.to_string())?;
            r.put_user(User::new(
                "guest",
                "guest",
                vec!["administrator".into()],
                salt(),
            ))
            .map_err(|e| e.to_string())?;
            r.set_permission("/", "guest", Permission::all())
                .map_err(|e| e.to_string())?;
            if let Some(s) = &r.store {
                s.put_definition(INIT.as_bytes(), b"1")
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(r)
    }

    fn put(&self, key: String, value: Vec<u8>) -> Result<(), StoreError> {
        match &self.store {
            Some(s) => s.put_definition(key.as_bytes(), &value),
            None => Ok(()),
        }
    }

    fn del(&self, key: String) -> Result<(), StoreError> {
        match &self.store {
            Some(s) => s.delete_definition(key.as_bytes()),
            None => Ok(()),
        }
    }

    /// Sets (or with `None` clears) limit `name` of `user` (`max-connections`,
    /// `max-channels`); `Ok(false)` if `name` is no limit.
    pub fn set_user_limit(
        &self,
        user: &str,
        name: &str,
        value: Option<i64>,
    ) -> Result<bool, StoreError> {
        self.user_limits.set(self.store.as_ref(), user, name, value)
    }

    /// Replaces all of a user's limits (definitions import).
    pub fn replace_user_limits(
        &self,
        user: &str,
        l: super::user_limits::UserLimits,
    ) -> Result<(), StoreError> {
        self.user_limits.replace(self.store.as_ref(), user, l)
    }

    /// Sets a topic permission (see [`super::topic_perms::TopicPermTable::set`]).
    pub fn set_topic_permission(
        &self,
        vhost: &str,
        user: &str,
        p: super::topic_perms::TopicPermission,
    ) -> Result<bool, Result<String, StoreError>> {
        self.topic_perms.set(self.store.as_ref(), vhost, user, p)
    }

    /// Removes a user's topic permissions in a vhost; whether it had any.
    pub fn clear_topic_permissions(&self, vhost: &str, user: &str) -> Result<bool, StoreError> {
        self.topic_perms.clear(self.store.as_ref(), vhost, user)
    }

    /// Sets the users restricted to loopback logins (default: guest).
    pub fn set_loopback_users(&mut self, users: Vec<String>) {
        self.loopback_users = users;
    }

    /// Checks a login. `peer` is where the client connects from: guest is refused
    /// unless it comes from loopback, as RabbitMQ's `loopback_users` default does.
    pub fn authenticate(&self, user: &str, password: &str, peer: IpAddr) -> Option<User> {
        let u = self.check_password(user, password)?;
        if !self.may_log_in_from(&u.name, peer) {
            tracing::warn!(%peer, user = %u.name, "user may only connect from localhost (--loopback-users)");
            return None;
        }
        Some(u)
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
    pub fn put_user(&self, u: User) -> Result<(), StoreError> {
        let json = serde_json::to_vec(&u).map_err(|e| StoreError(e.to_string()))?;
        self.put(format!("{USER}{}", u.name), json)?;
        self.users.insert(u.name.clone(), u);
        Ok(())
    }

    /// Deletes a user and its permissions. Returns whether it existed.
    pub fn delete_user(&self, name: &str) -> Result<bool, StoreError> {
        if self.users.remove(name).is_none() {
            return Ok(false);
        }
        self.del(format!("{USER}{name}"))?;
        self.user_limits
            .replace(self.store.as_ref(), name, Default::default())?;
        self.topic_perms
            .clear_where(self.store.as_ref(), None, Some(name))?;
        let keys: Vec<(String, String)> = self
            .perms
            .iter()
            .filter(|p| p.key().1 == name)
            .map(|p| p.key().clone())
            .collect();
        for (vhost, user) in keys {
            self.clear_permission(&vhost, &user)?;
        }
        Ok(true)
    }

    /// A user's permission in a vhost.
    pub fn permission(&self, vhost: &str, user: &str) -> Option<Permission> {
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
    pub fn set_permission(&self, vhost: &str, user: &str, p: Permission) -> Result<(), StoreError> {
        let rec = PermRecord {
            configure: p.configure.clone(),
            write: p.write.clone(),
            read: p.read.clone(),
        };
        let json = serde_json::to_vec(&rec).map_err(|e| StoreError(e.to_string()))?;
        self.put(format!("{PERM}{vhost}\0{user}"), json)?;
        self.perms.insert((vhost.to_owned(), user.to_owned()), p);
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Removes a user's permission in a vhost. Returns whether it existed.
    pub fn clear_permission(&self, vhost: &str, user: &str) -> Result<bool, StoreError> {
        let existed = self
            .perms
            .remove(&(vhost.to_owned(), user.to_owned()))
            .is_some();
        self.del(format!("{PERM}{vhost}\0{user}"))?;
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(existed)
    }

    /// Changes whenever a permission does.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Whether `user` may do `kind` to the resource `name` in `vhost`.
    pub fn allows(&self, vhost: &str, user: &str, kind: Access, name: &str) -> bool {
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
    pub fn put_vhost(&self, rec: VhostRecord) -> Result<(), StoreError> {
        let json = serde_json::to_vec(&rec).map_err(|e| StoreError(e.to_string()))?;
        self.put(format!("{VHOST}{}", rec.name), json)?;
        self.vhosts.insert(rec.name.clone(), rec);
        Ok(())
    }

    /// Deletes a vhost record and every permission in it.
    pub fn delete_vhost(&self, name: &str) -> Result<bool, StoreError> {
        if self.vhosts.remove(name).is_none() {
            return Ok(false);
        }
        self.del(format!("{VHOST}{name}"))?;
        self.topic_perms
            .clear_where(self.store.as_ref(), Some(name), None)?;
        let keys: Vec<(String, String)> = self
            .perms
            .iter()
            .filter(|p| p.key().0 == name)
            .map(|p| p.key().clone())
            .collect();
        for (vhost, user) in keys {
            self.clear_permission(&vhost, &user)?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_registry_has_guest_on_loopback_only() {
        let r = Registry::load(None).unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let remote: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(r.authenticate("guest", "guest", lo).is_some());
        assert!(r.authenticate("guest", "guest", remote).is_none());
        assert!(r.authenticate("guest", "wrong", lo).is_none());
        assert!(r.allows("/", "guest", Access::Configure, "anything"));
        let bob = User::new("bob", "pw", vec![], [9, 9, 9, 9]);
        r.put_user(bob).unwrap();
        assert!(r.authenticate("bob", "pw", remote).is_some());
        assert!(!r.allows("/", "bob", Access::Read, "q"));
        let v = r.version();
        r.set_permission("/", "bob", Permission::new("", "", "^q$").unwrap())
            .unwrap();
        assert!(r.version() > v);
        assert!(r.allows("/", "bob", Access::Read, "q"));
        assert!(!r.allows("/", "bob", Access::Write, "q"));
        r.delete_user("bob").unwrap();
        assert!(r.permission("/", "bob").is_none());
    }

    #[test]
    fn loopback_users_can_be_lifted() {
        let mut r = Registry::load(None).unwrap();
        let remote: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(r.authenticate("guest", "guest", remote).is_none());
        r.set_loopback_users(vec![]);
        assert!(r.authenticate("guest", "guest", remote).is_some());
    }

    #[test]
    fn mapped_loopback_counts_as_loopback() {
        let r = Registry::load(None).unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let remote: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert!(r.may_log_in_from("guest", mapped));
        assert!(!r.may_log_in_from("guest", remote));
        assert!(r.may_log_in_from("bob", remote));
    }

    #[test]
    fn the_reserved_name_never_logs_in() {
        let r = Registry::load(None).unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let internal = broker_core::auth::INTERNAL_USER;
        r.put_user(User::new(
            internal,
            "pw",
            vec!["administrator".into()],
            [1, 2, 3, 4],
        ))
        .unwrap();
        assert!(r.authenticate(internal, "pw", lo).is_none());
        assert!(r.check_password(internal, "pw").is_none());
    }
}
