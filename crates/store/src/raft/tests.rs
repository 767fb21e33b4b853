// a failed step in a test is the test failing
#![allow(clippy::unwrap_used)]

use super::*;
use std::collections::HashMap;

/// A temporary directory, removed on drop.
struct Tmp(std::path::PathBuf);

impl Tmp {
    fn new(name: &str) -> Tmp {
        let d = std::env::temp_dir().join(format!("raftwal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Tmp(d)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open(dir: &Tmp, max: u64) -> (Arc<Segments>, RaftWal) {
    let segs = Arc::new(Segments::open(&dir.0.join("segments"), HashMap::new()).unwrap());
    let wal = RaftWal::open(&dir.0.join("raft"), segs.clone(), max).unwrap();
    (segs, wal)
}

fn entry(wal: &RaftWal, group: u64, index: u64, body: &str) -> Location {
    wal.append(group, Kind::Entry, index, body.as_bytes())
        .unwrap()
        .1
}

fn payload(wal: &RaftWal, at: &Location) -> String {
    String::from_utf8(wal.read(at).unwrap().payload).unwrap()
}

#[test]
fn records_are_readable_at_once_and_after_the_commit() {
    let dir = Tmp::new("read");
    let (segs, wal) = open(&dir, RAFT_SEGMENT_MAX);
    let since = segs.mark();
    let a = entry(&wal, 1, 0, "a0");
    let b = entry(&wal, 2, 0, "b0");
    let (upto, _) = wal.append(1, Kind::Vote, 0, b"v1").unwrap();
    assert_eq!(
        upto,
        since + 3,
        "appends are numbered in the store's sequence"
    );
    assert_eq!(payload(&wal, &a), "a0");
    let rb = wal.read(&b).unwrap();
    assert_eq!((rb.group, rb.kind, rb.index), (2, Kind::Entry, 0));
    wal.commit().unwrap();
    assert_eq!(payload(&wal, &a), "a0");
    assert_eq!(payload(&wal, &b), "b0");
    assert!(segs.check_lost(since, upto).is_ok());
    assert_eq!(wal.stats.rounds.load(Ordering::Relaxed), 1);
    assert_eq!(wal.stats.records.load(Ordering::Relaxed), 3);
    assert_eq!(wal.stats.shared_rounds.load(Ordering::Relaxed), 1);
}

#[test]
fn reopening_recovers_votes_entries_truncations_purges_and_drops() {
    let dir = Tmp::new("reopen");
    {
        let (_, wal) = open(&dir, RAFT_SEGMENT_MAX);
        for i in 0..10 {
            entry(&wal, 1, i, &format!("t1-{i}"));
        }
        wal.append(1, Kind::Vote, 0, b"term 1").unwrap();
        wal.append(1, Kind::TruncateFrom, 7, &[]).unwrap();
        entry(&wal, 1, 7, "t2-7");
        entry(&wal, 1, 8, "t2-8");
        wal.append(1, Kind::Vote, 0, b"term 2").unwrap();
        wal.append(1, Kind::PurgeUpto, 3, b"purged 3").unwrap();
        for i in 0..3 {
            entry(&wal, 2, i, "gone");
        }
        wal.drop_group(2).unwrap();
        entry(&wal, 3, 0, "three");
        wal.commit().unwrap();
    }
    let (_, wal) = open(&dir, RAFT_SEGMENT_MAX);
    let groups = wal.take_recovered();
    assert_eq!(groups.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
    let g = &groups[&1];
    assert_eq!(g.vote.as_deref(), Some(&b"term 2"[..]));
    assert_eq!(g.purged, Some((3, b"purged 3".to_vec())));
    let got: Vec<(u64, String)> = g
        .entries
        .iter()
        .map(|(i, at)| (*i, payload(&wal, at)))
        .collect();
    let want: Vec<(u64, String)> = vec![
        (4, "t1-4".into()),
        (5, "t1-5".into()),
        (6, "t1-6".into()),
        (7, "t2-7".into()),
        (8, "t2-8".into()),
    ];
    assert_eq!(got, want);
    assert_eq!(groups[&3].entries.len(), 1);
    assert!(wal.take_recovered().is_empty(), "given once");
}

#[test]
fn a_torn_tail_is_cut_and_earlier_records_kept() {
    use std::io::Write;
    let dir = Tmp::new("torn");
    let path = {
        let (_, wal) = open(&dir, RAFT_SEGMENT_MAX);
        entry(&wal, 4, 0, "kept");
        wal.append(4, Kind::Vote, 0, b"vote").unwrap();
        wal.commit().unwrap();
        segment_path(&dir.0.join("raft"), wal.segment_ids()[0])
    };
    let good = std::fs::metadata(&path).unwrap().len();
    // a record whose header promises more than was written, then a CRC-bad one
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(&[0, 0, 0, 40, 1, 2, 3, 4, 1, 0]).unwrap();
    drop(f);
    let (_, wal) = open(&dir, RAFT_SEGMENT_MAX);
    let g = &wal.take_recovered()[&4];
    assert_eq!(g.vote.as_deref(), Some(&b"vote"[..]));
    assert_eq!(payload(&wal, &g.entries[&0]), "kept");
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        good,
        "cut at the tear"
    );
}

#[test]
fn a_segment_goes_once_every_group_is_past_it_and_a_dropped_group_holds_nothing() {
    let dir = Tmp::new("reclaim");
    let (_, wal) = open(&dir, 400);
    wal.append(1, Kind::Vote, 0, b"vote of 1").unwrap();
    for i in 0..20 {
        entry(&wal, 1, i, "one one one one one");
        entry(&wal, 2, i, "two two two two two");
        entry(&wal, 3, i, "three three three");
    }
    wal.commit().unwrap();
    let first = wal.segment_ids();
    assert!(first.len() > 4, "rolled: {first:?}");
    // group 1 is past everything, group 2 half way, group 3 never set a floor
    wal.set_floor(1, 20);
    wal.set_floor(2, 10);
    wal.drop_group(3).unwrap();
    wal.commit().unwrap();
    let after = wal.segment_ids();
    assert!(after.len() < first.len(), "some went: {after:?}");
    assert!(
        after.len() > 1,
        "files with entries of group 2 from 10 on are kept"
    );
    wal.set_floor(2, 20);
    wal.commit().unwrap();
    // only the segment being written (with its checkpoints and the drop) is left
    let last = wal.segment_ids();
    assert_eq!(last.len(), 1, "{last:?}");
    let files = std::fs::read_dir(dir.0.join("raft")).unwrap().count();
    assert_eq!(files, 1);
    drop(wal);
    // the vote of group 1 survives its file: the new segment's head has it again
    let (_, wal) = open(&dir, 400);
    let groups = wal.take_recovered();
    assert_eq!(groups[&1].vote.as_deref(), Some(&b"vote of 1"[..]));
    assert!(!groups.contains_key(&3));
}

#[test]
fn a_truncation_keeps_its_file_while_an_older_file_holds_what_it_cut() {
    let mut segs = BTreeMap::new();
    let mut old = SegInfo::default();
    old.note(1, Kind::Entry, 10);
    let mut newer = SegInfo::default();
    newer.note(1, Kind::TruncateFrom, 8);
    newer.note(1, Kind::Entry, 9);
    segs.insert(1, old);
    segs.insert(2, newer);
    segs.insert(3, SegInfo::default());
    let none = HashSet::new();
    let floors = HashMap::from([(1, 9)]);
    assert!(record::reclaimable(&segs, 3, &floors, &none).is_empty());
    let floors = HashMap::from([(1, 11)]);
    assert_eq!(record::reclaimable(&segs, 3, &floors, &none), vec![1]);
    segs.remove(&1);
    assert_eq!(record::reclaimable(&segs, 3, &floors, &none), vec![2]);
}

#[test]
fn a_failed_write_fails_the_commits_it_covered_and_refuses_appends() {
    let dir = Tmp::new("fail");
    let (segs, wal) = open(&dir, 200);
    let since = segs.mark();
    entry(&wal, 1, 0, "before the failure");
    let upto = segs.mark();
    // the next segment cannot be created: a directory stands at its path
    let next = wal.segment_ids()[0] + 1;
    std::fs::create_dir(segment_path(&dir.0.join("raft"), next)).unwrap();
    let big = "x".repeat(300);
    assert!(wal.append(1, Kind::Entry, 1, big.as_bytes()).is_err());
    assert!(
        segs.check_lost(since, upto).is_err(),
        "the earlier append is lost"
    );
    assert!(wal.append(1, Kind::Entry, 1, b"small").is_err(), "refused");
    assert!(wal.commit().is_ok(), "the classic queues' commits go on");
}

#[test]
fn restarts_without_groups_leave_one_file() {
    let dir = Tmp::new("restarts");
    for _ in 0..3 {
        let (_, wal) = open(&dir, RAFT_SEGMENT_MAX);
        wal.commit().unwrap();
    }
    let files = std::fs::read_dir(dir.0.join("raft")).unwrap().count();
    assert_eq!(files, 1);
}
