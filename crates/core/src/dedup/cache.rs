//! The deduplication cache: keys seen lately, at most `capacity` of them, the oldest
//! evicted first (LavinMQ's `MemoryCache`: an insertion-ordered map), each with an
//! optional expiry. Expired keys count as unseen and are dropped when met.
//!
//! Every insert gets a sequence number, which orders the cache and names the entry in
//! the store (a durable queue's cache is written through, `DedupStore`): what an
//! insert evicts or finds expired comes back as the numbers to remove there.

use std::collections::{HashMap, VecDeque};

/// A dedup key: the header's value, encoded ([`super::key_of`]).
pub type Key = Box<[u8]>;

#[derive(Debug, Clone, Copy)]
struct Slot {
    seq: u64,
    /// Wall-clock ms after which the key counts as unseen; `None`: never.
    expires: Option<u64>,
}

/// What [`Cache::check`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// The key is in the cache and not expired: the message is a duplicate.
    Duplicate,
    /// The key was new (or expired) and is now in the cache as entry `seq`; `removed`
    /// are the entries it evicted or found expired.
    New {
        /// The new entry's number.
        seq: u64,
        /// Entries gone (evicted oldest first, or expired).
        removed: Vec<u64>,
    },
}

/// A bounded, insertion-ordered set of keys with expiry.
#[derive(Debug)]
pub struct Cache {
    capacity: usize,
    map: HashMap<Key, Slot>,
    /// Insertion order; entries whose key was re-inserted since are stale and skipped.
    order: VecDeque<(u64, Key)>,
    next_seq: u64,
}

impl Cache {
    /// An empty cache of at most `capacity` keys (at least one).
    pub fn new(capacity: usize) -> Cache {
        Cache {
            capacity: capacity.max(1),
            map: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 1,
        }
    }

    /// A cache rebuilt from stored entries `(seq, key, expires)` in any order: expired
    /// ones and the oldest past `capacity` are left out and returned, to be removed from
    /// the store. New entries number on from the highest stored one.
    pub fn restore(
        capacity: usize,
        mut entries: Vec<(u64, Key, Option<u64>)>,
        now_ms: u64,
    ) -> (Cache, Vec<u64>) {
        entries.sort_by_key(|e| e.0);
        let mut cache = Cache::new(capacity);
        let mut dropped = Vec::new();
        for (seq, key, expires) in entries {
            cache.next_seq = cache.next_seq.max(seq + 1);
            if expires.is_some_and(|e| e <= now_ms) {
                dropped.push(seq);
                continue;
            }
            if let Some(old) = cache.map.insert(key.clone(), Slot { seq, expires }) {
                dropped.push(old.seq);
            }
            cache.order.push_back((seq, key));
        }
        dropped.extend(cache.evict(0));
        cache.compact();
        (cache, dropped)
    }

    /// Whether `key` is a duplicate at `now_ms`; if not, it is inserted with the expiry
    /// `ttl_ms` from now (`None`: none), evicting the oldest keys past capacity.
    pub fn check(&mut self, key: &[u8], ttl_ms: Option<u64>, now_ms: u64) -> Seen {
        let mut removed = Vec::new();
        if let Some(slot) = self.map.get(key) {
            if slot.expires.is_none_or(|e| e > now_ms) {
                return Seen::Duplicate;
            }
            removed.push(slot.seq);
            self.map.remove(key);
        }
        removed.extend(self.evict(1));
        let seq = self.next_seq;
        self.next_seq += 1;
        let key: Key = key.into();
        let expires = ttl_ms.map(|t| now_ms.saturating_add(t));
        self.map.insert(key.clone(), Slot { seq, expires });
        self.order.push_back((seq, key));
        if self.order.len() > 2 * self.capacity + 16 {
            self.compact();
        }
        Seen::New { seq, removed }
    }

    /// Evicts the oldest keys until `room` more fit; returns their numbers.
    fn evict(&mut self, room: usize) -> Vec<u64> {
        let mut gone = Vec::new();
        while self.map.len() + room > self.capacity {
            let Some((seq, key)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&key).is_some_and(|s| s.seq == seq) {
                self.map.remove(&key);
                gone.push(seq);
            }
        }
        gone
    }

    /// Drops the order's stale entries (keys expired and inserted again), so it stays
    /// within a small multiple of the capacity.
    fn compact(&mut self) {
        let map = &self.map;
        self.order
            .retain(|(seq, key)| map.get(key).is_some_and(|s| s.seq == *seq));
    }

    /// Keys in the cache (expired ones not yet met included, as LavinMQ counts them).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the cache holds no key.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The most keys it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(c: &mut Cache, k: &str, ttl: Option<u64>, now: u64) -> bool {
        matches!(c.check(k.as_bytes(), ttl, now), Seen::New { .. })
    }

    #[test]
    fn a_key_seen_is_a_duplicate_until_it_expires() {
        let mut c = Cache::new(10);
        assert!(new(&mut c, "a", Some(100), 1000));
        assert_eq!(c.check(b"a", Some(100), 1099), Seen::Duplicate);
        // expired at 1100: unseen again, and the old entry is reported removed
        assert_eq!(
            c.check(b"a", None, 1100),
            Seen::New {
                seq: 2,
                removed: vec![1]
            }
        );
        // no TTL: never expires
        assert_eq!(c.check(b"a", None, u64::MAX - 1), Seen::Duplicate);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn the_oldest_key_is_evicted_past_capacity() {
        let mut c = Cache::new(2);
        assert!(new(&mut c, "1", None, 0));
        assert!(new(&mut c, "2", None, 0));
        assert_eq!(
            c.check(b"3", None, 0),
            Seen::New {
                seq: 3,
                removed: vec![1]
            }
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c.check(b"2", None, 0), Seen::Duplicate);
        assert_eq!(c.check(b"3", None, 0), Seen::Duplicate);
        // "1" was evicted: new again, evicting "2" (a duplicate hit does not refresh)
        assert!(new(&mut c, "1", None, 0));
        assert_eq!(c.check(b"3", None, 0), Seen::Duplicate);
        assert!(new(&mut c, "2", None, 0));
    }

    #[test]
    fn the_order_stays_bounded_when_keys_expire_and_come_back() {
        let mut c = Cache::new(4);
        for i in 0..10_000u64 {
            c.check(b"k", Some(1), i * 2);
            assert!(c.order.len() <= 2 * 4 + 16);
        }
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn capacity_bounds_many_keys() {
        let mut c = Cache::new(128);
        for i in 0..1000u32 {
            assert!(new(&mut c, &i.to_string(), None, 0));
        }
        assert_eq!(c.len(), 128);
        assert!(new(&mut c, "0", None, 0));
        assert_eq!(c.check(b"999", None, 0), Seen::Duplicate);
    }

    #[test]
    fn restore_keeps_the_newest_unexpired_in_order() {
        let e = |s: u64, k: &str, x: Option<u64>| (s, Key::from(k.as_bytes()), x);
        let (mut c, dropped) = Cache::restore(
            2,
            vec![
                e(4, "d", None),
                e(1, "a", None),
                e(2, "b", Some(50)),
                e(3, "c", Some(500)),
            ],
            100,
        );
        let mut dropped = dropped;
        dropped.sort();
        // "b" expired, "a" is the oldest past capacity
        assert_eq!(dropped, vec![1, 2]);
        assert_eq!(c.check(b"c", None, 100), Seen::Duplicate);
        assert_eq!(c.check(b"d", None, 100), Seen::Duplicate);
        assert_eq!(
            c.check(b"e", None, 100),
            Seen::New {
                seq: 5,
                removed: vec![3]
            }
        );
    }
}
