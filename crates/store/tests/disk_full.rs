//! A full disk is survived without a restart: on a small tmpfs made for the test, the
//! publishes whose writes fail are refused or fail their commit, sled's sticky error is
//! cleared by reopening it, and once space is freed the store works again; nothing
//! committed is lost across a reopen. Skipped (with a message) where tmpfs cannot be
//! mounted.

use broker_core::message::Meta;
use broker_core::store::{DefinitionStore, MessageStore, QueueDef};
use broker_store::SledStore;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Mount(PathBuf);

impl Mount {
    fn new(name: &str, size: &str) -> Option<Mount> {
        let dir = std::env::temp_dir().join(format!("diskfull-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs at {} (needs root)",
                dir.display()
            );
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        Some(Mount(dir))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Writes a file until the filesystem is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![7u8; 64 << 10];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

fn open(dir: &Path) -> SledStore {
    SledStore::open_waiting(dir, std::time::Duration::from_secs(5)).unwrap()
}

fn record(seq: u64) -> Vec<u8> {
    let mut r = vec![1u8];
    r.extend((0..64 * 1024).map(|i| (seq + i) as u8));
    r
}

/// Inserts and commits one message; `Ok` only if it is durable.
fn publish(s: &SledStore, seq: u64) -> Result<(), String> {
    let since = s.mark();
    s.insert(&[1], seq, &record(seq), Meta::default())
        .map_err(|e| e.0)?;
    s.commit()
        .and_then(|()| s.check_lost(since, s.mark()))
        .map_err(|e| e.0)
}

#[test]
fn a_full_disk_fails_publishes_then_the_store_recovers_without_a_restart() {
    let Some(mount) = Mount::new("store", "24m") else {
        return;
    };
    let dir = mount.0.join("data");
    let ballast = mount.0.join("ballast");
    let mut confirmed = Vec::new();
    {
        let s = open(&dir);
        let def = QueueDef {
            vhost: "/".into(),
            name: "q".into(),
            id: 1,
            auto_delete: false,
            arguments: Default::default(),
            home: None,
            members: Vec::new(),
        };
        s.put_definition(&QueueDef::key("/", "q"), &def.encode())
            .unwrap();
        for seq in 1..=20 {
            publish(&s, seq).unwrap();
            confirmed.push(seq);
        }
        s.flush().unwrap();
        fill(&ballast);
        // an ack, then an index flush: sled's own write fails, and sled refuses every
        // write from then on until it is reopened
        s.remove(1, 1).unwrap();
        confirmed.retain(|&q| q != 1);
        // (sled may find room in a log page it has already; more changes fill it)
        let mut junk = 0u32;
        let e = 'full: loop {
            if let Err(e) = s.flush() {
                break e;
            }
            assert!(junk < 20_000, "sled never failed on a full disk");
            for _ in 0..500 {
                junk += 1;
                let key = format!("junk{junk}");
                // sled writes its log from its own threads when a buffer fills
                if let Err(e) = s.stage_definition(key.as_bytes(), &[9u8; 1024]) {
                    break 'full e;
                }
            }
        };
        eprintln!("flush on a full disk: {e}");
        // publishes fail (refused, or their commit fails), never succeed; acks go on
        for seq in 21..=40 {
            assert!(
                publish(&s, seq).is_err(),
                "publish {seq} succeeded on a full disk"
            );
        }
        s.remove(1, 2).unwrap();
        confirmed.retain(|&q| q != 2);
        assert!(publish(&s, 1000).is_err());
        // space is freed: the store recovers by itself within its backoff
        std::fs::remove_file(&ballast).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Err(e) = s.flush() {
            assert!(Instant::now() < deadline, "the store did not recover: {e}");
            std::thread::sleep(Duration::from_millis(50));
        }
        for seq in 2000..2010 {
            publish(&s, seq).unwrap();
            confirmed.push(seq);
        }
        s.flush().unwrap();
        let seen = stored_intact(&s);
        for seq in &confirmed {
            assert!(seen.contains(seq), "confirmed {seq} is missing");
        }
        assert!(
            !seen.contains(&1) && !seen.contains(&2),
            "the acks made while the disk was full stay"
        );
    }
    // and after a restart, every confirmed message is there
    let s = open(&dir);
    let seen = stored_intact(&s);
    for seq in &confirmed {
        assert!(
            seen.contains(seq),
            "confirmed {seq} is missing after a restart"
        );
    }
    assert!(!seen.contains(&1) && !seen.contains(&2));
    drop(s);
}

/// The seqs stored in queue 1, each record checked intact.
fn stored_intact(s: &SledStore) -> Vec<u64> {
    let mut seen = Vec::new();
    s.for_each_in_queue(1, usize::MAX, &mut |m| {
        assert_eq!(m.record.unwrap().unwrap(), record(m.seq));
        seen.push(m.seq)
    })
    .unwrap();
    seen
}
