//! Spill files: order, contents, references, reclaimed space, damage.

use super::*;
use broker_core::Message;
use bytes::Bytes;

fn dir() -> (PathBuf, Arc<SpillDir>) {
    let p = std::env::temp_dir().join(format!(
        "spill-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let d = SpillDir::open(&p).unwrap();
    (p, d)
}

fn entry(id: u64, body: Vec<u8>, persist_id: Option<u64>) -> Entry {
    let body_len = body.len() as u32;
    Entry {
        id,
        msg: Slot::Loaded(Arc::new(Message {
            exchange: "ex".into(),
            routing_key: format!("rk{id}").into(),
            properties: Default::default(),
            raw_properties: Bytes::from_static(&[0, 0]),
            body: Bytes::from(body),
            persist_id,
            arrival_ms: 1000 + id,
        })),
        redelivered: id % 3 == 0,
        priority: 0,
        returns: (id % 5) as u32,
        body_len,
        expires_at: (id % 2 == 0).then_some(5000 + id),
    }
}

fn spill(d: &Arc<SpillDir>) -> Box<dyn Spill> {
    QueueSpills::new(d.clone(), "q").create().unwrap()
}

fn body_of(e: &Entry) -> Vec<u8> {
    e.msg.loaded().unwrap().body.to_vec()
}

#[test]
fn entries_come_back_in_order_with_their_fields_and_the_disk_is_reclaimed() {
    let (p, d) = dir();
    let mut s = spill(&d);
    for i in 0..5000u64 {
        s.push(entry(
            i,
            vec![(i % 251) as u8; 1000 + (i % 7) as usize],
            None,
        ))
        .unwrap();
    }
    assert_eq!(s.len(), 5000);
    let mut next = 0u64;
    while s.len() > 0 {
        let got = s.pop(700, usize::MAX);
        assert!(got.entries.len() <= 700 && !got.entries.is_empty());
        assert_eq!(got.lost, Lost::default());
        for e in got.entries {
            let want = entry(
                next,
                vec![(next % 251) as u8; 1000 + (next % 7) as usize],
                None,
            );
            assert_eq!(e.id, want.id);
            assert_eq!(body_of(&e), body_of(&want));
            assert_eq!(
                (e.redelivered, e.returns, e.expires_at),
                (want.redelivered, want.returns, want.expires_at)
            );
            let m = e.msg.loaded().unwrap();
            assert_eq!(
                (&*m.routing_key, m.arrival_ms, m.persist_id),
                (&*format!("rk{next}"), 1000 + next, None)
            );
            next += 1;
        }
    }
    assert_eq!(next, 5000);
    s.pop(1, usize::MAX);
    assert_eq!(d.bytes_on_disk(), 0, "an emptied spill takes no disk");
    drop(s);
    let _ = std::fs::remove_dir_all(p);
}

#[test]
fn segments_rotate_and_read_ones_are_deleted() {
    let (p, d) = dir();
    let mut s = spill(&d);
    let big = vec![7u8; 1 << 20];
    for i in 0..100u64 {
        s.push(entry(i, big.clone(), None)).unwrap();
    }
    let files = std::fs::read_dir(&p).unwrap().count();
    assert!(files >= 2, "100 MiB spans segments ({files} files)");
    let got = s.pop(80, usize::MAX);
    assert_eq!(got.entries.len(), 80);
    assert!(
        d.bytes_on_disk() < 40 << 20,
        "read segments are deleted: {}",
        d.bytes_on_disk()
    );
    let got = s.pop(100, 3 << 20);
    assert_eq!(got.entries.len(), 3, "stops at the byte limit");
    assert_eq!(got.entries[0].id, 80);
    drop(s);
    assert_eq!(
        std::fs::read_dir(&p).unwrap().count(),
        0,
        "a dropped spill removes its files"
    );
    let _ = std::fs::remove_dir_all(p);
}

#[test]
fn persisted_messages_spill_as_references_and_clear_returns_their_ids() {
    let (p, d) = dir();
    let mut s = spill(&d);
    s.push(entry(1, vec![1; 10], Some(41))).unwrap();
    s.push(entry(2, vec![2; 10], None)).unwrap();
    s.push(entry(3, vec![3; 10], Some(43))).unwrap();
    let got = s.pop(1, usize::MAX);
    match &got.entries[0].msg {
        Slot::Paged { persist_id, size } => assert_eq!((*persist_id, *size), (41, 12)),
        other => panic!("a reference comes back paged: {other:?}"),
    }
    assert_eq!(s.clear(), vec![43]);
    assert_eq!(s.len(), 0);
    let _ = std::fs::remove_dir_all(p);
}

#[test]
fn a_damaged_record_loses_the_rest_of_its_segment_and_says_how_much() {
    let (p, d) = dir();
    let mut s = spill(&d);
    for i in 0..600u64 {
        s.push(entry(i, vec![9; 1000], None)).unwrap();
    }
    // everything handed to the OS, then one byte of the 300th record flipped
    let got = s.pop(1, usize::MAX);
    assert_eq!(got.entries.len(), 1);
    let file = std::fs::read_dir(&p)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .unwrap();
    let len = f.metadata().unwrap().len();
    if len > 0 {
        f.write_all_at(&[0xff, 0xff, 0xff], len / 2).unwrap();
        let got = s.pop(1000, usize::MAX);
        assert!(got.lost.count > 0, "the damage was found");
        assert_eq!(got.entries.len() + got.lost.count, 599);
        assert_eq!(got.lost.body_bytes, got.lost.count * 1000);
        assert_eq!(s.len(), 0);
    }
    let _ = std::fs::remove_dir_all(p);
}

#[test]
fn peek_reads_entries_across_segments_without_taking_them() {
    let (p, d) = dir();
    let mut s = spill(&d);
    // bodies large enough that the spill spans several segments and chunks, one of
    // them larger than a read chunk
    for i in 0..300u64 {
        let len = if i == 150 { 3 * READ_CHUNK } else { 400_000 };
        s.push(entry(i, vec![(i % 251) as u8; len], None)).unwrap();
    }
    let popped = s.pop(10, usize::MAX);
    assert_eq!(popped.entries.len(), 10);
    let seen = s.peek(140, 20).unwrap();
    let ids: Vec<u64> = seen.iter().map(|e| e.id).collect();
    assert_eq!(ids, (150..170).collect::<Vec<u64>>());
    assert_eq!(body_of(&seen[0]).len(), 3 * READ_CHUNK);
    assert_eq!(body_of(&seen[1]), vec![151u8; 400_000]);
    assert!(seen[0].redelivered);
    assert_eq!(s.peek(289, 5).unwrap().len(), 1);
    assert!(s.peek(290, 5).unwrap().is_empty());
    // nothing was taken: popping gives the same entries, in order
    assert_eq!(s.len(), 290);
    let all = s.pop(usize::MAX, usize::MAX);
    let ids: Vec<u64> = all.entries.iter().map(|e| e.id).collect();
    assert_eq!(ids, (10..300).collect::<Vec<u64>>());
    drop(s);
    let _ = std::fs::remove_dir_all(p);
}
