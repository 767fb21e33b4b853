//! Compaction keeps the segment files near the live data, and neither compaction nor a
//! crash in the middle of it loses a live record or brings back a removed one.

use broker_core::message::Meta;
use broker_core::store::{DefinitionStore, MessageStore, QueueDef};
use broker_store::segments::SEGMENT_MAX;
use broker_store::SledStore;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("compaction-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Opens the store, waiting for a dropped one's sled threads to let go of its lock.
fn open(dir: &Path) -> SledStore {
    SledStore::open_waiting(dir, std::time::Duration::from_secs(5)).unwrap()
}

fn define(s: &SledStore, id: u64) {
    let def = QueueDef {
        vhost: "/".into(),
        name: format!("q{id}"),
        id,
        auto_delete: false,
        arguments: Default::default(),
        home: None,
        members: Vec::new(),
    };
    s.put_definition(&QueueDef::key("/", &def.name), &def.encode())
        .unwrap();
}

/// A distinct record per sequence: 16 KiB, so that a segment holds about 1,000.
fn record(seq: u64) -> Vec<u8> {
    let mut r = vec![1u8];
    r.extend((0..16 * 1024).map(|i| (seq.wrapping_mul(31) + i) as u8));
    r
}

fn meta() -> Meta {
    Meta {
        size: 16 * 1024,
        body_len: 16 * 1024,
        ..Meta::default()
    }
}

/// Runs compaction to its end, with the index flushes that let old segments go.
fn compact_all(s: &SledStore) {
    s.flush().unwrap();
    while s.compact().unwrap() {}
    s.flush().unwrap();
}

/// Every expected record reads back intact, and nothing else is in the queues.
fn check(s: &SledStore, live: &BTreeMap<(u64, u64), ()>) {
    for q in [1, 2] {
        let mut seen = Vec::new();
        s.for_each_in_queue(q, usize::MAX, &mut |m| {
            assert_eq!(
                m.record.unwrap().unwrap(),
                record(m.seq),
                "record {} of queue {q}",
                m.seq
            );
            seen.push(m.seq);
        })
        .unwrap();
        let want: Vec<u64> = live.keys().filter(|k| k.0 == q).map(|k| k.1).collect();
        assert_eq!(seen, want, "queue {q}");
    }
}

/// Inserts 8 segments' worth, half of them routed to both queues, and removes all but
/// every 16th entry, so that every segment keeps a few live records.
fn fill(s: &SledStore, live: &mut BTreeMap<(u64, u64), ()>, from: u64, n: u64) {
    for seq in from..from + n {
        let queues: &[u64] = if seq % 2 == 0 { &[1, 2] } else { &[1] };
        s.insert(queues, seq, &record(seq), meta()).unwrap();
        for q in queues {
            live.insert((*q, seq), ());
        }
    }
    s.commit().unwrap();
    for seq in from..from + n {
        if seq % 16 != 0 {
            for q in [1, 2] {
                s.remove(q, seq).unwrap();
                live.remove(&(q, seq));
            }
        }
    }
}

fn live_bytes(live: &BTreeMap<(u64, u64), ()>) -> u64 {
    // each record once, however many queues share it
    let seqs: std::collections::BTreeSet<u64> = live.keys().map(|k| k.1).collect();
    seqs.len() as u64 * record(0).len() as u64
}

#[test]
fn disk_use_stays_within_three_times_the_live_data_and_everything_reads_back() {
    let dir = tmp("bound");
    let mut live = BTreeMap::new();
    {
        let s = open(&dir);
        define(&s, 1);
        define(&s, 2);
        for round in 0..4 {
            fill(&s, &mut live, 1 + round * 8000, 8000);
            compact_all(&s);
            let (disk, _) = s.segment_bytes();
            let bound = 3 * live_bytes(&live) + SEGMENT_MAX;
            assert!(
                disk <= bound,
                "round {round}: {disk} bytes of segments for {} live (bound {bound})",
                live_bytes(&live)
            );
            check(&s, &live);
        }
        // without compaction the 4 rounds would hold 32 segments
        assert!(s.segment_bytes().0 < 8 * SEGMENT_MAX);
    }
    let s = open(&dir);
    check(&s, &live);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Copies the data dir as a crash would leave it (the process gone, the page cache
/// kept): what sled and the segments had written, without a final flush.
fn crash_copy(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).unwrap();
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &dest).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_crash_during_compaction_loses_nothing_live_and_brings_back_nothing_flushed_away() {
    let dir = tmp("crash");
    let copy = tmp("crash-copy");
    let mut live = BTreeMap::new();
    let s = open(&dir);
    define(&s, 1);
    define(&s, 2);
    fill(&s, &mut live, 1, 6000);
    // the removals are durable: those entries must never come back
    s.flush().unwrap();
    // the entries are switched to their copies, and no index flush follows
    let mut rounds = 0;
    while s.compact().unwrap() {
        rounds += 1;
    }
    assert!(rounds > 0, "something was compacted");
    // a removal after the last flush may come back (at-least-once), never a lost one
    let late = *live.keys().next().unwrap();
    s.remove(late.0, late.1).unwrap();
    crash_copy(&dir, &copy);
    {
        let c = open(&copy);
        let mut allowed = live.clone();
        allowed.insert(late, ());
        check(&c, &allowed);
    }
    // and after the flush that lets the old segments go, the same from the new copies
    s.flush().unwrap();
    live.remove(&late);
    crash_copy(&dir, &copy);
    {
        let c = open(&copy);
        check(&c, &live);
    }
    drop(s);
    let s = open(&dir);
    check(&s, &live);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&copy);
}
