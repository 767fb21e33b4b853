//! Message deduplication of one exchange or queue (LavinMQ's `x-message-deduplication`,
//! `broker_core::dedup`): the cache behind a mutex, the count of duplicates dropped, and
//! for a durable queue the write-through to the store that makes its cache survive a
//! restart.
//!
//! Checked on the publisher's thread in the one publish path (`publish.rs`): an
//! exchange's before routing (`client_route`), a queue's where the routed queues are
//! split (`Routed::new`). Entities without deduplication have no `Deduper` and pay one
//! `Option` check.

use crate::broker::node::now_ms;
use broker_core::dedup::cache::{Cache, Seen};
use broker_core::dedup::{self, DedupArgs, DedupStore};
use broker_wire::types::FieldTable;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Where a durable queue's cache is written: the store and the queue's store id.
pub type Persist = (Arc<dyn DedupStore>, u64);

/// One exchange's or queue's deduplication.
pub struct Deduper {
    args: DedupArgs,
    cache: Mutex<Cache>,
    /// Duplicates dropped since the entity was made (LavinMQ's `dedup` stat).
    dropped: AtomicU64,
    /// A durable queue's store and id: every new key is written through.
    persist: Option<Persist>,
}

impl Deduper {
    /// The deduplication `arguments` ask for (`None` when they ask for none, or are
    /// invalid: they were checked at declare, and stored ones that no longer pass are
    /// ignored with a warning). A durable queue's cache is loaded from `persist`.
    pub fn from_arguments(
        arguments: &FieldTable,
        kind: &str,
        name: &str,
        vhost: &str,
        persist: Option<Persist>,
    ) -> Option<Arc<Deduper>> {
        let args = match DedupArgs::parse(arguments, kind, name, vhost) {
            Ok(a) => a?,
            Err(e) => {
                tracing::warn!(%kind, %name, "deduplication arguments ignored: {}", e.reply_text());
                return None;
            }
        };
        let cache = match &persist {
            Some((store, id)) => load(store.as_ref(), *id, &args, name),
            None => Cache::new(args.cache_size as usize),
        };
        Some(Arc::new(Deduper {
            args,
            cache: Mutex::new(cache),
            dropped: AtomicU64::new(0),
            persist,
        }))
    }

    /// Whether a message with these headers is a duplicate (counted, and to be
    /// dropped); if it is not and has a key, the key is remembered (and written through
    /// for a durable queue: durable with the commit the publisher's confirm waits for).
    pub fn is_duplicate(&self, headers: Option<&FieldTable>) -> bool {
        let Some(key) = dedup::key_of(headers, &self.args.header) else {
            return false;
        };
        let ttl = dedup::message_ttl(headers).or(self.args.ttl_ms);
        let now = now_ms();
        let seen = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check(&key, ttl, now);
        let (seq, removed) = match seen {
            Seen::Duplicate => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            Seen::New { seq, removed } => (seq, removed),
        };
        if let Some((store, id)) = &self.persist {
            let expires = ttl.map(|t| now.saturating_add(t));
            let put = store.dedup_put(*id, seq, &dedup::encode_entry(&key, expires));
            if let Err(e) = put.and_then(|_| store.dedup_remove(*id, &removed)) {
                tracing::error!(queue_id = id, "cannot store a deduplication key: {e}");
            }
        }
        false
    }

    /// Duplicates dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A durable queue's cache as the store kept it: expired entries and those past the
/// size are removed there too.
fn load(store: &dyn DedupStore, id: u64, args: &DedupArgs, name: &str) -> Cache {
    let stored = match store.dedup_load(id) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(queue = %name, "cannot load the deduplication cache: {e}");
            Vec::new()
        }
    };
    let entries = stored
        .iter()
        .filter_map(|(seq, v)| dedup::decode_entry(v).map(|(k, e)| (*seq, k, e)))
        .collect();
    let (cache, dropped) = Cache::restore(args.cache_size as usize, entries, now_ms());
    if let Err(e) = store.dedup_remove(id, &dropped) {
        tracing::warn!(queue = %name, "cannot remove expired deduplication keys: {e}");
    }
    if !cache.is_empty() {
        tracing::info!(queue = %name, keys = cache.len(), "deduplication cache loaded");
    }
    cache
}
