//! Tests of the segment files: reads, rotation, damage, replay scans, failed writes.

use super::*;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("segments-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn records_read_back_before_and_after_sync() {
    let d = tmp("rw");
    let s = Segments::open(&d, HashMap::new()).unwrap();
    let a = s.append(b"", b"hello", 1).unwrap();
    let b = s.append(b"", &vec![7u8; 100_000], 2).unwrap();
    assert_eq!(s.read(&a).unwrap(), b"hello");
    s.sync().unwrap();
    assert_eq!(s.read(&b).unwrap(), vec![7u8; 100_000]);
}

#[test]
fn full_segments_rotate_and_empty_ones_are_doomed() {
    let d = tmp("rotate");
    let s = Segments::open(&d, HashMap::new()).unwrap();
    let big = vec![1u8; (SEGMENT_MAX / 2) as usize];
    let a = s.append(b"", &big, 1).unwrap();
    let b = s.append(b"", &big, 1).unwrap();
    assert_ne!(
        a.segment, b.segment,
        "the second record starts a new segment"
    );
    s.release(a.segment, 1, 0);
    assert_eq!(s.take_doomed(), vec![a.segment]);
    s.delete(&[a.segment]);
    assert!(s.read(&a).unwrap_err().0.contains("missing"));
    // the current segment is never doomed, even when nothing points into it
    s.release(b.segment, 1, 0);
    assert!(s.take_doomed().is_empty());
    assert_eq!(s.read(&b).unwrap().len(), big.len());
}

#[test]
fn damage_is_detected() {
    let d = tmp("damage");
    let s = Segments::open(&d, HashMap::new()).unwrap();
    let a = s.append(b"pre", b"cious", 1).unwrap();
    s.sync().unwrap();
    let path = segment_path(&d, a.segment);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = (HEADER as usize) + b"precious".len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    assert!(s.read(&a).unwrap_err().0.contains("damaged"));
    std::fs::write(&path, &bytes[..4]).unwrap();
    assert!(s.read(&a).unwrap_err().0.contains("truncated"));
}

#[test]
fn reopening_deletes_unreferenced_segments_and_appends_to_a_new_one() {
    let d = tmp("reopen");
    let (a, b) = {
        let s = Segments::open(&d, HashMap::new()).unwrap();
        let big = vec![1u8; (SEGMENT_MAX / 2) as usize];
        let a = s.append(b"", &big, 1).unwrap();
        let b = s.append(b"", &big, 1).unwrap();
        s.sync().unwrap();
        (a, b)
    };
    let s = Segments::open(&d, HashMap::from([(b.segment, (1, 0))])).unwrap();
    assert!(s.read(&a).is_err(), "unreferenced segment removed");
    assert_eq!(s.read(&b).unwrap().len(), (SEGMENT_MAX / 2) as usize);
    let c = s.append(b"", b"new", 1).unwrap();
    assert!(c.segment > b.segment);
}

#[test]
fn scan_walks_records_from_a_position_and_stops_at_the_tail_or_damage() {
    let d = tmp("scan");
    let s = Segments::open(&d, HashMap::new()).unwrap();
    let a = s.append(b"p", b"one", 1).unwrap();
    let b = s.append(b"", b"two", 1).unwrap();
    let c = s.append(b"", b"three", 1).unwrap();
    s.sync().unwrap();
    let walk = |from| {
        let mut seen = Vec::new();
        scan(&d, from, |at, payload| seen.push((at, payload.to_vec()))).unwrap();
        seen
    };
    let all = walk((a.segment, 0));
    assert_eq!(
        all,
        vec![
            (a, b"pone".to_vec()),
            (b, b"two".to_vec()),
            (c, b"three".to_vec())
        ]
    );
    assert_eq!(walk((b.segment, b.offset)).len(), 2);
    assert!(walk((a.segment + 1, 0)).is_empty());
    // a damaged record ends the walk of its segment
    let path = segment_path(&d, b.segment);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(b.offset + HEADER) as usize] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(walk((a.segment, 0)), vec![(a, b"pone".to_vec())]);
}

#[test]
fn a_failed_write_fails_every_commit_of_what_it_lost_and_is_retried_in_place() {
    let d = tmp("fail");
    let s = Segments::open(&d, HashMap::new()).unwrap();
    let m0 = s.mark();
    let a = s.append(b"", b"a", 1).unwrap();
    s.append(b"", b"b", 1).unwrap();
    let m1 = s.mark();
    s.sync().unwrap();
    assert!(s.check_lost(m0, m1).is_ok());
    // c waits in the buffer; then the disk refuses writes (a read-only handle)
    let c = s.append(b"", b"c", 1).unwrap();
    let m2 = s.mark();
    let good = {
        let mut w = lock(&s.writer);
        std::mem::replace(
            &mut w.file,
            Arc::new(File::open(segment_path(&d, a.segment)).unwrap()),
        )
    };
    assert!(s.sync().is_err());
    // while the write fails, appends are refused (their publishes are nacked), and
    // what is buffered still reads back
    assert!(s.append(b"", b"d", 1).is_err());
    assert_eq!(s.mark(), m2);
    assert_eq!(s.read(&c).unwrap(), b"c");
    // space is back: the next append writes the buffer out in place, in the same segment
    lock(&s.writer).file = good;
    let dd = s.append(b"", b"d", 1).unwrap();
    assert_eq!(dd.segment, a.segment);
    s.sync().unwrap();
    assert!(
        s.check_lost(m1, m2).is_err(),
        "c's commit failed: it stays failed"
    );
    assert!(s.check_lost(m0, m1).is_ok(), "a and b were on disk before");
    assert!(s.check_lost(m2, s.mark()).is_ok(), "d is on disk");
    assert_eq!(s.read(&dd).unwrap(), b"d");
    assert_eq!(s.read(&c).unwrap(), b"c");
    assert_eq!(s.read(&a).unwrap(), b"a");
}

#[test]
fn merging_lost_ranges_only_widens_them() {
    let d = tmp("merge");
    let s = Segments::open(&d, HashMap::new()).unwrap();
    {
        let mut w = lock(&s.writer);
        // two failures whose ranges are not in order of their ends
        w.appended = 10;
        w.lose();
        w.appended = 5;
        w.lose();
        for i in 0..63 {
            w.synced = 100 + 2 * i;
            w.appended = 101 + 2 * i;
            w.lose();
        }
        assert_eq!(w.lost.len(), 64);
    }
    assert!(
        s.check_lost(7, 9).is_err(),
        "(5, 10] is still lost after the merge"
    );
    assert!(s.check_lost(10, 100).is_ok());
}

#[test]
fn a_new_segment_and_a_removal_reach_the_directory_before_they_count() {
    let d = tmp("dirsync");
    let s = Segments::open(&d, HashMap::new()).unwrap();
    // the first segment's entry is synced with the first commit
    s.append(b"", b"x", 1).unwrap();
    s.sync().unwrap();
    assert_eq!(s.dir_syncs(), 1);
    // no new file: a commit syncs the files only
    s.append(b"", b"y", 1).unwrap();
    s.sync().unwrap();
    assert_eq!(s.dir_syncs(), 1);
    // a rotation creates a file: the next commit syncs the directory first
    let big = vec![1u8; (SEGMENT_MAX / 2) as usize];
    let a = s.append(b"", &big, 1).unwrap();
    let b = s.append(b"", &big, 1).unwrap();
    assert_ne!(a.segment, b.segment);
    s.sync().unwrap();
    assert_eq!(s.dir_syncs(), 2);
    // removing a segment syncs the directory too
    s.release(a.segment, 3, 0);
    s.delete(&s.take_doomed());
    assert_eq!(s.dir_syncs(), 3);
}
