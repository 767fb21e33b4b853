//! Serializes topology changes per name, as RabbitMQ's metadata store runs each declare,
//! delete and bind in one transaction.
//!
//! Without it, two clients declaring the same new durable queue at once stored its
//! definition under one store id while the live queue used another (recovery then
//! deleted the confirmed messages as orphans), and a bind could land on a queue a
//! concurrent delete had just taken away. Every operation that reads-then-changes the
//! topology holds the locks of the names it touches for its whole course, awaits
//! included, so on one name they happen one after the other.
//!
//! The locks are striped: a fixed array of async mutexes indexed by a hash of the name,
//! so memory is bounded whatever names clients invent, and unrelated names rarely wait
//! for each other. An operation takes all its stripes at once, in ascending order, so
//! two operations can never wait for each other in a circle.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use tokio::sync::{Mutex, MutexGuard};

/// Number of stripes per vhost.
const STRIPES: usize = 256;

/// A name a topology operation touches.
#[derive(Debug, Clone, Copy)]
pub enum Resource<'a> {
    /// A queue, by name.
    Queue(&'a str),
    /// An exchange, by name.
    Exchange(&'a str),
}

impl Resource<'_> {
    fn stripe(&self) -> usize {
        let mut h = DefaultHasher::new();
        match self {
            Resource::Queue(n) => (0u8, n).hash(&mut h),
            Resource::Exchange(n) => (1u8, n).hash(&mut h),
        }
        (h.finish() as usize) % STRIPES
    }
}

/// The topology locks of one vhost.
pub struct TopologyLocks {
    stripes: Box<[Mutex<()>]>,
}

impl Default for TopologyLocks {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }
}

/// Held locks; dropping it releases them.
pub struct Held<'a> {
    _guards: Vec<MutexGuard<'a, ()>>,
}

impl TopologyLocks {
    /// Waits for, and holds, the locks of every name in `names`.
    pub async fn lock(&self, names: &[Resource<'_>]) -> Held<'_> {
        let mut idx: Vec<usize> = names.iter().map(Resource::stripe).collect();
        idx.sort_unstable();
        idx.dedup();
        let mut guards = Vec::with_capacity(idx.len());
        for i in idx {
            guards.push(self.stripes[i].lock().await);
        }
        Held { _guards: guards }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn one_name_waits_other_names_do_not() {
        let locks = Arc::new(TopologyLocks::default());
        let held = locks.lock(&[Resource::Queue("a")]).await;
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move {
            let _h = l2
                .lock(&[Resource::Exchange("x"), Resource::Queue("a")])
                .await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        // a name on another stripe goes through while "a" is held
        let other = (0..100)
            .map(|i| format!("q{i}"))
            .find(|n| Resource::Queue(n).stripe() != Resource::Queue("a").stripe())
            .unwrap_or_default();
        let _h = tokio::time::timeout(
            Duration::from_secs(1),
            locks.lock(&[Resource::Queue(&other)]),
        )
        .await
        .expect("another name does not wait");
        drop(held);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("released")
            .expect("no panic");
    }
}
