//! Per-user limits (`max-connections`, `max-channels`, RabbitMQ's `set_user_limits`) and
//! the live counts they are checked against. The limits are durable (definitions store,
//! key `ulimit\0{user}`); the counts live in memory, one pair of atomics per user shared by
//! its connections, so a check at connection.open or channel.open is one atomic add.
//!
//! As in RabbitMQ a negative value means "no limit" but is kept and shown as set, and 0
//! refuses every connection (or channel) of the user.

use broker_core::AmqpError;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Key prefix of a user's limits in the definitions store.
pub const KEY: &str = "ulimit\0";

/// A user's limits as RabbitMQ shows them (`{"max-connections": 10}`); `None` is unset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserLimits {
    /// Most connections of the user at once, across the node.
    #[serde(rename = "max-connections", skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i64>,
    /// Most channels of the user at once, across all its connections.
    #[serde(rename = "max-channels", skip_serializing_if = "Option::is_none")]
    pub max_channels: Option<i64>,
}

impl UserLimits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == UserLimits::default()
    }

    /// The slot of limit `name`, if it is one RabbitMQ knows.
    fn slot(&mut self, name: &str) -> Option<&mut Option<i64>> {
        match name {
            "max-connections" => Some(&mut self.max_connections),
            "max-channels" => Some(&mut self.max_channels),
            _ => None,
        }
    }
}

/// What a user has open right now.
#[derive(Debug, Default)]
pub struct UserUsage {
    /// Open connections (past connection.open).
    pub connections: AtomicU64,
    /// Open channels over all its connections.
    pub channels: AtomicU64,
}

/// Takes one unit of `counter` unless `limit` (when not negative) is reached; the unit
/// taken must be given back with `fetch_sub`. Returns the limit when refused.
fn take(counter: &AtomicU64, limit: Option<i64>) -> Result<(), i64> {
    let n = counter.fetch_add(1, Ordering::AcqRel);
    match limit {
        Some(l) if l >= 0 && n >= l as u64 => {
            counter.fetch_sub(1, Ordering::AcqRel);
            Err(l)
        }
        _ => Ok(()),
    }
}

/// Every user's limits and usage.
#[derive(Default)]
pub struct UserLimitTable {
    limits: DashMap<String, UserLimits>,
    usage: DashMap<String, Arc<UserUsage>>,
    /// Open connections of every user: what `--max-connections` counts.
    node_connections: AtomicU64,
}

impl UserLimitTable {
    /// Takes a stored record (`KEY` + user → JSON limits).
    pub fn load(&self, user: &str, json: &[u8]) -> Result<(), serde_json::Error> {
        let l: UserLimits = serde_json::from_slice(json)?;
        self.limits.insert(user.to_owned(), l);
        Ok(())
    }

    /// A user's limits (empty if none are set).
    pub fn get(&self, user: &str) -> UserLimits {
        self.limits.get(user).map(|l| *l).unwrap_or_default()
    }

    /// Every user with a limit set, by name.
    pub fn all(&self) -> Vec<(String, UserLimits)> {
        let mut v: Vec<_> = self
            .limits
            .iter()
            .filter(|l| !l.value().is_empty())
            .map(|l| (l.key().clone(), *l.value()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The record write that sets (or with `None` clears) limit `name` of `user`, from
    /// its current limits; `None` for a name that is no limit.
    pub fn set_write(
        &self,
        user: &str,
        name: &str,
        value: Option<i64>,
    ) -> Option<crate::broker::cluster::RecordWrite> {
        let mut l = self.get(user);
        *l.slot(name)? = value;
        Some(Self::write(user, l))
    }

    /// The record write that replaces all of a user's limits (definitions import, user
    /// deletion): no record when none is set.
    pub fn write(user: &str, l: UserLimits) -> crate::broker::cluster::RecordWrite {
        let json = (!l.is_empty()).then(|| serde_json::to_vec(&l).unwrap_or_default());
        (format!("{KEY}{user}"), json)
    }

    /// Applies a committed record of `user` (`None`: removed).
    pub fn apply(&self, user: &str, json: Option<&[u8]>) -> Result<(), serde_json::Error> {
        match json {
            Some(j) => self.load(user, j),
            None => {
                self.limits.remove(user);
                Ok(())
            }
        }
    }

    /// Forgets every limit (a reload from the store follows).
    pub fn clear_all(&self) {
        self.limits.clear();
    }

    /// The usage counters of a user (shared by all its connections).
    pub fn usage(&self, user: &str) -> Arc<UserUsage> {
        self.usage.entry(user.to_owned()).or_default().clone()
    }

    /// Counts one more connection on the node, or refuses it (530, as RabbitMQ 4's
    /// `connection_max` does at connection.open) when `node_max` are open.
    pub fn open_node_connection(&self, node_max: Option<u64>) -> Result<(), AmqpError> {
        let limit = node_max.map(|m| i64::try_from(m).unwrap_or(i64::MAX));
        take(&self.node_connections, limit).map_err(|l| {
            AmqpError::not_allowed(format!(
                "connection refused: node connection limit ({l}) is reached"
            ))
        })
    }

    /// Gives back what [`UserLimitTable::open_node_connection`] took.
    pub fn close_node_connection(&self) {
        self.node_connections.fetch_sub(1, Ordering::AcqRel);
    }

    /// Counts one more connection of `user`, or refuses it with RabbitMQ's 530 text.
    pub fn open_connection(&self, user: &str, usage: &UserUsage) -> Result<(), AmqpError> {
        take(&usage.connections, self.get(user).max_connections).map_err(|l| {
            AmqpError::not_allowed(format!(
                "connection refused for user '{user}': user connection limit ({l}) is reached"
            ))
        })
    }

    /// Counts one more channel of `user`, or refuses it with RabbitMQ's 530 text.
    pub fn open_channel(&self, user: &str, usage: &UserUsage) -> Result<(), AmqpError> {
        take(&usage.channels, self.get(user).max_channels).map_err(|l| {
            AmqpError::not_allowed(format!(
                "number of channels opened for user '{user}' has reached the maximum allowed user limit of ({l})"
            ))
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails by panicking
mod tests {
    use super::*;

    #[test]
    fn limits_count_and_refuse() {
        let t = UserLimitTable::default();
        let set = |name: &str, v: Option<i64>| {
            let Some((k, json)) = t.set_write("u", name, v) else {
                return false;
            };
            t.apply(k.strip_prefix(KEY).unwrap(), json.as_deref())
                .unwrap();
            true
        };
        assert!(set("max-connections", Some(1)));
        assert!(!set("bogus", Some(1)));
        let u = t.usage("u");
        assert!(t.open_connection("u", &u).is_ok());
        let e = t.open_connection("u", &u).unwrap_err();
        assert!(e
            .reply_text()
            .contains("user connection limit (1) is reached"));
        assert_eq!(u.connections.load(Ordering::Acquire), 1);
        // negative: no limit, but shown as set
        set("max-connections", Some(-1));
        assert!(t.open_connection("u", &u).is_ok());
        assert_eq!(t.all().len(), 1);
        set("max-connections", None);
        assert!(t.all().is_empty());
        set("max-channels", Some(0));
        assert!(t.open_channel("u", &u).is_err());
        assert!(t.open_node_connection(Some(1)).is_ok());
        assert!(t.open_node_connection(Some(1)).is_err());
        t.close_node_connection();
        assert!(t.open_node_connection(None).is_ok());
    }
}
