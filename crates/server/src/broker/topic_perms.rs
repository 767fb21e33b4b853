//! Topic permissions (RabbitMQ's `set_topic_permissions`): per (vhost, user, exchange) a
//! write and a read regular expression matched, unanchored, against routing keys: write on
//! basic.publish to a topic exchange, read on bindings from one (queue.bind/unbind,
//! exchange.bind/unbind). A user without an entry for the exchange is not restricted.
//!
//! `{username}` and `{vhost}` in a pattern are replaced by the user's and the vhost's name
//! before it is compiled, as RabbitMQ expands them. Since a pattern belongs to one (vhost,
//! user), that happens once, when it is set: a check is a map lookup and a regex match,
//! and a channel whose user has no topic permission in its vhost skips even the lookup
//! (it caches the user's table against [`TopicPermTable::version`]).

use broker_core::AmqpError;
use dashmap::DashMap;
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Key prefix in the definitions store: `tperm\0{vhost}\0{user}\0{exchange}`.
pub const KEY: &str = "tperm\0";

/// One topic permission as RabbitMQ writes it (without vhost and user).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPermission {
    /// The exchange it applies to.
    pub exchange: String,
    /// Pattern routing keys of publishes must match.
    pub write: String,
    /// Pattern binding keys must match.
    pub read: String,
}

/// A permission with its patterns expanded and compiled.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// As set.
    pub perm: TopicPermission,
    write: Regex,
    read: Regex,
}

/// One user's topic permissions in one vhost, by exchange.
pub type UserTopics = Arc<HashMap<String, Compiled>>;

fn compile(pattern: &str, vhost: &str, user: &str) -> Result<Regex, String> {
    let expanded = pattern
        .replace("{username}", user)
        .replace("{vhost}", vhost);
    Regex::new(&expanded).map_err(|e| format!("invalid_regexp: {pattern}: {e}"))
}

impl Compiled {
    fn new(vhost: &str, user: &str, perm: TopicPermission) -> Result<Compiled, String> {
        Ok(Compiled {
            write: compile(&perm.write, vhost, user)?,
            read: compile(&perm.read, vhost, user)?,
            perm,
        })
    }
}

/// Every topic permission, by (vhost, user).
#[derive(Default)]
pub struct TopicPermTable {
    by_user: DashMap<(String, String), UserTopics>,
    /// Bumped on every change, so channels know when their cached table is stale.
    version: AtomicU64,
}

/// Whether `key` may be written (`write`) or read to `exchange` under `topics`; `Ok` when
/// the user has no entry for the exchange. The refusal is RabbitMQ's 403 text.
pub fn check(
    topics: &HashMap<String, Compiled>,
    write: bool,
    exchange: &str,
    key: &str,
    vhost: &str,
    user: &str,
) -> Result<(), AmqpError> {
    let Some(c) = topics.get(exchange) else {
        return Ok(());
    };
    let re = if write { &c.write } else { &c.read };
    if re.is_match(key) {
        return Ok(());
    }
    Err(AmqpError::access_refused(format!(
        "access to topic '{key}' in exchange '{exchange}' in vhost '{vhost}' refused for user '{user}'"
    )))
}

/// Whether `exchange` is a topic exchange of `v` (topic permissions apply to those only).
pub fn is_topic(v: &super::vhost::VHost, exchange: &str) -> bool {
    v.exchange(exchange)
        .is_some_and(|x| x.kind == broker_core::routing::ExchangeKind::Topic)
}

impl TopicPermTable {
    /// Changes whenever a topic permission does.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The user's topic permissions in the vhost, if it has any.
    pub fn of(&self, vhost: &str, user: &str) -> Option<UserTopics> {
        self.by_user
            .get(&(vhost.to_owned(), user.to_owned()))
            .map(|t| t.clone())
    }

    /// The check for one request (the management API's publish and bindings): `Ok`
    /// unless `user` has a topic permission on `exchange`, a topic exchange of `v`, that
    /// refuses `key`.
    pub fn check_user(
        &self,
        v: &super::vhost::VHost,
        user: &str,
        write: bool,
        exchange: &str,
        key: &str,
    ) -> Result<(), AmqpError> {
        let Some(topics) = self.of(&v.name, user) else {
            return Ok(());
        };
        if !topics.contains_key(exchange) || !is_topic(v, exchange) {
            return Ok(());
        }
        check(&topics, write, exchange, key, &v.name, user)
    }

    /// Takes a stored record (key after [`KEY`]: `vhost\0user\0exchange`).
    pub fn load(&self, rest: &str, json: &[u8]) -> Result<(), String> {
        let mut parts = rest.splitn(3, '\0');
        let (Some(vhost), Some(user)) = (parts.next(), parts.next()) else {
            return Err("malformed key".into());
        };
        let perm: TopicPermission = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        self.insert(vhost, user, Compiled::new(vhost, user, perm)?);
        Ok(())
    }

    fn insert(&self, vhost: &str, user: &str, c: Compiled) {
        let key = (vhost.to_owned(), user.to_owned());
        let mut map: HashMap<String, Compiled> = HashMap::new();
        if let Some(old) = self.by_user.get(&key) {
            map.extend(old.iter().map(|(x, o)| (x.clone(), o.clone())));
        }
        map.insert(c.perm.exchange.clone(), c);
        self.by_user.insert(key, Arc::new(map));
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// The record write that sets a permission, and whether the user had none in the
    /// vhost (RabbitMQ's 201); a pattern that is no regex is `Err(reason)`.
    pub fn set_write(
        &self,
        vhost: &str,
        user: &str,
        perm: TopicPermission,
    ) -> Result<(bool, crate::broker::cluster::RecordWrite), String> {
        Compiled::new(vhost, user, perm.clone())?;
        let new = self.of(vhost, user).is_none();
        let json = serde_json::to_vec(&perm).map_err(|e| e.to_string())?;
        let key = format!("{KEY}{vhost}\0{user}\0{}", perm.exchange);
        Ok((new, (key, Some(json))))
    }

    /// The record writes that remove every topic permission of a user (`vhost` None), in
    /// a vhost (`user` None), or of a user in a vhost (both).
    pub fn clear_writes(
        &self,
        vhost: Option<&str>,
        user: Option<&str>,
    ) -> Vec<crate::broker::cluster::RecordWrite> {
        let mut out = Vec::new();
        for e in self.by_user.iter() {
            let (v, u) = e.key();
            if vhost.is_none_or(|x| x == v) && user.is_none_or(|x| x == u) {
                for x in e.value().keys() {
                    out.push((format!("{KEY}{v}\0{u}\0{x}"), None));
                }
            }
        }
        out
    }

    /// Applies a committed record (`rest`: the key after [`KEY`]; `None`: removed).
    pub fn apply(&self, rest: &str, json: Option<&[u8]>) -> Result<(), String> {
        let Some(json) = json else {
            let mut parts = rest.splitn(3, '\0');
            let (Some(vhost), Some(user), Some(x)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err("malformed key".into());
            };
            let key = (vhost.to_owned(), user.to_owned());
            let Some(old) = self.by_user.get(&key).map(|t| t.clone()) else {
                return Ok(());
            };
            let mut map: HashMap<String, Compiled> = (*old).clone();
            map.remove(x);
            if map.is_empty() {
                self.by_user.remove(&key);
            } else {
                self.by_user.insert(key, Arc::new(map));
            }
            self.version.fetch_add(1, Ordering::AcqRel);
            return Ok(());
        };
        self.load(rest, json)
    }

    /// Forgets every topic permission (a reload from the store follows).
    pub fn clear_all(&self) {
        self.by_user.clear();
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Every topic permission: (vhost, user, permission), sorted.
    pub fn all(&self) -> Vec<(String, String, TopicPermission)> {
        let mut v: Vec<_> = self
            .by_user
            .iter()
            .flat_map(|e| {
                let (vh, u) = e.key().clone();
                e.value()
                    .values()
                    .map(|c| (vh.clone(), u.clone(), c.perm.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        v.sort_by(|a, b| (&a.0, &a.1, &a.2.exchange).cmp(&(&b.0, &b.1, &b.2.exchange)));
        v
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails by panicking
mod tests {
    use super::*;

    fn set(t: &TopicPermTable, v: &str, u: &str, p: TopicPermission) -> Result<bool, String> {
        let (new, (k, json)) = t.set_write(v, u, p)?;
        t.apply(k.strip_prefix(KEY).unwrap(), json.as_deref())?;
        Ok(new)
    }

    fn clear(t: &TopicPermTable, v: &str, u: &str) -> bool {
        let writes = t.clear_writes(Some(v), Some(u));
        for (k, json) in &writes {
            t.apply(k.strip_prefix(KEY).unwrap(), json.as_deref())
                .unwrap();
        }
        !writes.is_empty()
    }

    fn perm(x: &str, w: &str, r: &str) -> TopicPermission {
        TopicPermission {
            exchange: x.into(),
            write: w.into(),
            read: r.into(),
        }
    }

    #[test]
    fn patterns_expand_and_match_unanchored() {
        let t = TopicPermTable::default();
        assert!(t.of("/", "bob").is_none());
        let v = t.version();
        assert!(set(&t, "/", "bob", perm("amq.topic", "^a\\.{username}$", "")).unwrap());
        assert!(t.version() > v);
        assert!(!set(&t, "/", "bob", perm("other", "", "")).unwrap());
        assert!(!set(&t, "/", "bob", perm("other", "^z", "")).unwrap());
        let topics = t.of("/", "bob").unwrap();
        assert!(check(&topics, true, "amq.topic", "a.bob", "/", "bob").is_ok());
        let e = check(&topics, true, "amq.topic", "a.eve", "/", "bob").unwrap_err();
        assert_eq!(
            e.reply_text(),
            "ACCESS_REFUSED - access to topic 'a.eve' in exchange 'amq.topic' in vhost '/' refused for user 'bob'"
        );
        // an empty pattern matches every key; other exchanges are not restricted
        assert!(check(&topics, false, "amq.topic", "anything", "/", "bob").is_ok());
        assert!(check(&topics, true, "x", "zz", "/", "bob").is_ok());
        assert!(set(&t, "/", "bob", perm("x", "(", "")).is_err());
        assert_eq!(t.all().len(), 2);
        assert!(clear(&t, "/", "bob"));
        assert!(!clear(&t, "/", "bob"));
        assert!(t.of("/", "bob").is_none());
    }
}
