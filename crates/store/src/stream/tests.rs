use super::*;
use crate::segments::Segments;
use std::collections::HashMap;

fn streams(dir: &std::path::Path) -> Streams {
    let segs = Arc::new(Segments::open(&dir.join("segments"), HashMap::new()).unwrap());
    Streams::new(dir.join("streams"), segs)
}

/// A temporary directory, removed on drop.
struct Tmp(std::path::PathBuf);

impl Tmp {
    fn new(name: &str) -> Tmp {
        let d = std::env::temp_dir().join(format!("stream-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Tmp(d)
    }
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rec(i: u64) -> Vec<u8> {
    format!("message {i}").into_bytes()
}

fn read_all(log: &StreamLog, mut c: Cursor) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(ch) = log.read(&mut c).unwrap() {
        for (i, r) in ch.records.iter().enumerate() {
            out.push((ch.first_offset + i as u64, r.to_vec()));
        }
    }
    out
}

#[test]
fn readers_see_only_committed_chunks_in_order() {
    let dir = Tmp::new("1");
    let s = streams(dir.path());
    let log = s.open(1, Retention::default()).unwrap();
    for i in 0..10 {
        let (off, _) = s.append(&log, &rec(log.next_offset()), None).unwrap();
        assert_eq!(off, i);
    }
    assert_eq!(log.end_offset(), 0);
    assert!(read_all(&log, log.seek_offset(0).unwrap()).is_empty());
    s.commit().unwrap();
    assert_eq!(log.end_offset(), 10);
    for i in 10..25 {
        s.append(&log, &rec(log.next_offset()), None).unwrap();
        if i % 5 == 4 {
            s.commit().unwrap();
        }
    }
    let all = read_all(&log, log.seek_offset(0).unwrap());
    assert_eq!(all.len(), 25);
    for (i, (off, r)) in all.iter().enumerate() {
        assert_eq!(*off, i as u64);
        assert_eq!(r, &rec(i as u64));
    }
    // a seek into the middle of a chunk lands on the chunk's start
    let from12 = read_all(&log, log.seek_offset(12).unwrap());
    assert_eq!(from12[0].0, 10);
    // last: the last chunk
    let last = read_all(&log, log.seek_last_chunk().unwrap());
    assert_eq!(last.first().unwrap().0, 20);
    assert!(read_all(&log, log.seek_end()).is_empty());
}

#[test]
fn reopening_keeps_every_committed_message_and_drops_a_torn_tail() {
    let dir = Tmp::new("2");
    {
        let s = streams(dir.path());
        let log = s.open(7, Retention::default()).unwrap();
        for _ in 0..100 {
            s.append(&log, &rec(log.next_offset()), None).unwrap();
        }
        s.commit().unwrap();
    }
    // a torn chunk at the end (as a crash mid-write leaves it)
    let seg = dir.path().join("streams/7").join(format!("{:020}.seg", 0));
    let mut bytes = std::fs::read(&seg).unwrap();
    let good = bytes.len();
    bytes.extend_from_slice(&chunk::MAGIC.to_be_bytes());
    bytes.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0]);
    std::fs::write(&seg, &bytes).unwrap();
    let s = streams(dir.path());
    let log = s.open(7, Retention::default()).unwrap();
    assert_eq!(log.end_offset(), 100);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), good as u64);
    let (off, _) = s.append(&log, &rec(log.next_offset()), None).unwrap();
    assert_eq!(off, 100);
    s.commit().unwrap();
    let all = read_all(&log, log.seek_offset(0).unwrap());
    assert_eq!(all.len(), 101);
    assert_eq!(all[100], (100, rec(100)));
}

#[test]
fn a_chunk_written_without_its_index_entry_is_found_again() {
    let dir = Tmp::new("3");
    {
        let s = streams(dir.path());
        let log = s.open(3, Retention::default()).unwrap();
        for _ in 0..3 {
            s.append(&log, &rec(log.next_offset()), None).unwrap();
            s.commit().unwrap();
        }
    }
    let idx = dir.path().join("streams/3").join(format!("{:020}.idx", 0));
    let len = std::fs::metadata(&idx).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&idx)
        .unwrap()
        .set_len(len - chunk::INDEX_ENTRY as u64)
        .unwrap();
    let s = streams(dir.path());
    let log = s.open(3, Retention::default()).unwrap();
    assert_eq!(log.end_offset(), 3);
    assert_eq!(read_all(&log, log.seek_offset(2).unwrap())[0].0, 2);
}

/// The current segment's index is not fsynced by commits: a crash can lose a page of
/// it anywhere (it reads back as zeroes) or keep a stale entry. Recovery rebuilds the
/// index from the first entry that does not follow on, so every message and every seek
/// is right again.
#[test]
fn an_index_with_lost_pages_in_the_middle_is_rebuilt_from_the_chunks() {
    let dir = Tmp::new("lost-idx");
    {
        let s = streams(dir.path());
        let log = s.open(4, Retention::default()).unwrap();
        for _ in 0..40 {
            for _ in 0..3 {
                s.append(&log, &rec(log.next_offset()), None).unwrap();
            }
            s.commit().unwrap();
        }
    }
    let idx = dir.path().join("streams/4").join(format!("{:020}.idx", 0));
    let original = std::fs::read(&idx).unwrap();
    assert_eq!(original.len(), 40 * chunk::INDEX_ENTRY);
    let mut bytes = original.clone();
    // entries 10..20 lost
    bytes[10 * chunk::INDEX_ENTRY..20 * chunk::INDEX_ENTRY].fill(0);
    std::fs::write(&idx, &bytes).unwrap();
    {
        let s = streams(dir.path());
        let log = s.open(4, Retention::default()).unwrap();
        assert_eq!(log.end_offset(), 120);
        assert_eq!(read_all(&log, log.seek_offset(31).unwrap())[0].0, 30);
    }
    assert_eq!(std::fs::read(&idx).unwrap(), original, "rebuilt as it was");
    // entry 30 names a place 64 bytes off: still in order, but no chunk starts there
    let mut bytes = std::fs::read(&idx).unwrap();
    bytes[30 * chunk::INDEX_ENTRY + 23] ^= 0x40;
    std::fs::write(&idx, &bytes).unwrap();
    let s = streams(dir.path());
    let log = s.open(4, Retention::default()).unwrap();
    assert_eq!(log.end_offset(), 120);
    let all = read_all(&log, log.seek_offset(0).unwrap());
    assert_eq!(all.len(), 120);
    assert!(all
        .iter()
        .enumerate()
        .all(|(i, m)| *m == (i as u64, rec(i as u64))));
    for o in [0, 31, 47, 59, 91, 119] {
        assert_eq!(
            read_all(&log, log.seek_offset(o).unwrap())[0].0,
            o / 3 * 3,
            "{o}"
        );
    }
    assert_eq!(std::fs::read(&idx).unwrap(), original, "rebuilt as it was");
    // and appends go on after the rebuilt end
    let (off, _) = s.append(&log, &rec(log.next_offset()), None).unwrap();
    assert_eq!(off, 120);
}

#[test]
fn segments_roll_and_retention_drops_whole_old_ones() {
    let dir = Tmp::new("4");
    let s = streams(dir.path());
    let r = Retention {
        max_bytes: Some(5_000),
        max_age_ms: None,
        segment_bytes: 1_000,
    };
    let log = s.open(2, r).unwrap();
    for _ in 0..200 {
        s.append(&log, &[7u8; 50], None).unwrap();
        s.commit().unwrap();
    }
    let (segs, bytes) = log.disk_use();
    assert!(segs > 1, "{segs}");
    assert!(bytes <= 5_000 + 1_200, "{bytes}");
    let first = log.first_offset();
    assert!(first > 0);
    let all = read_all(&log, log.seek_offset(0).unwrap());
    assert_eq!(all.first().unwrap().0, first);
    assert_eq!(all.last().unwrap().0, 199);
    assert_eq!(all.len() as u64, 200 - first);
    // reopened: the same first offset, the same end
    drop(log);
    let log = s.open(2, r).unwrap();
    assert_eq!(log.first_offset(), first);
    assert_eq!(log.end_offset(), 200);
}

#[test]
fn a_reader_follows_the_stream_across_segments() {
    let dir = Tmp::new("5");
    let s = streams(dir.path());
    let r = Retention {
        segment_bytes: 500,
        ..Retention::default()
    };
    let log = s.open(4, r).unwrap();
    let mut c = log.seek_offset(0).unwrap();
    let mut got = Vec::new();
    for i in 0..60u64 {
        s.append(&log, &[i as u8; 40], None).unwrap();
        s.commit().unwrap();
        while let Some(ch) = log.read(&mut c).unwrap() {
            got.extend((0..ch.records.len() as u64).map(|k| ch.first_offset + k));
        }
    }
    assert_eq!(got, (0..60).collect::<Vec<_>>());
    assert!(log.disk_use().0 > 3);
}

#[test]
fn seeking_by_time_lands_on_the_first_chunk_at_or_after_it() {
    let dir = Tmp::new("6");
    let s = streams(dir.path());
    let log = s.open(5, Retention::default()).unwrap();
    s.append(&log, &rec(log.next_offset()), None).unwrap();
    s.commit().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    std::thread::sleep(std::time::Duration::from_millis(5));
    s.append(&log, &rec(log.next_offset()), None).unwrap();
    s.commit().unwrap();
    let got = read_all(&log, log.seek_time(t).unwrap());
    assert_eq!(got.first().unwrap().0, 1);
    assert_eq!(read_all(&log, log.seek_time(0).unwrap()).len(), 2);
    assert!(read_all(&log, log.seek_time(t + 60_000).unwrap()).is_empty());
}

#[test]
fn removing_a_stream_deletes_its_files_and_refuses_appends() {
    let dir = Tmp::new("7");
    let s = streams(dir.path());
    let log = s.open(9, Retention::default()).unwrap();
    s.append(&log, &rec(log.next_offset()), None).unwrap();
    s.commit().unwrap();
    s.remove(&log);
    assert!(!dir.path().join("streams/9").exists());
    assert!(s.append(&log, &rec(log.next_offset()), None).is_err());
}

#[test]
fn a_filtered_reader_skips_chunks_without_its_values() {
    let dir = Tmp::new("filter");
    let s = streams(dir.path());
    let log = s.open(11, Retention::default()).unwrap();
    for (i, v) in [Some("ca"), Some("ny"), None, Some("ca")]
        .iter()
        .enumerate()
    {
        s.append(&log, &rec(i as u64), v.map(str::as_bytes))
            .unwrap();
        s.commit().unwrap();
    }
    let mut c = log.seek_offset(0).unwrap();
    let mut kept = Vec::new();
    let wanted = |sum: &chunk::Summary| sum.may_contain(b"ca");
    while let Some(ch) = log.read_filtered(&mut c, &wanted).unwrap() {
        assert_eq!(ch.count, 1);
        if !ch.records.is_empty() {
            kept.push(ch.first_offset);
        }
    }
    assert_eq!(kept, vec![0, 3]);
    let mut c = log.seek_offset(0).unwrap();
    let unfiltered = |sum: &chunk::Summary| sum.unfiltered;
    let mut kept = Vec::new();
    while let Some(ch) = log.read_filtered(&mut c, &unfiltered).unwrap() {
        if !ch.records.is_empty() {
            kept.push(ch.first_offset);
        }
    }
    assert_eq!(kept, vec![2]);
}
