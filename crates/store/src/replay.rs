//! Crash recovery of the message index from the segment log.
//!
//! A publisher confirm waits only for the fsync of the segment that holds the record
//! (one fsync per group commit); the sled index is flushed in the background, a little
//! later. So at a crash the index may lack entries for confirmed messages. Each record
//! starts with an [`Envelope`] naming its queues, sequence and meta, and the store keeps
//! a replay position: every record before it had its index entries made durable by an
//! index flush. At start, the records from that position on are read back and any index
//! entry missing for a queue that still exists is put back.
//!
//! The cost is at-least-once, as with RabbitMQ after a crash: a message acked (or
//! purged) in the moments before the crash, after the last index flush, can come back.

use crate::index::{Envelope, Pointer};
use crate::segments::{self, Location};
use broker_core::store::{decode_definitions, message_key};
use std::collections::HashSet;
use std::path::Path;

/// Key (in sled's default tree) of the replay position: segment and offset, big-endian.
pub const REPLAY_FROM: &[u8] = b"replay-from";

/// Encodes a replay position.
pub fn encode_position(p: (u64, u64)) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&p.0.to_be_bytes());
    v[8..].copy_from_slice(&p.1.to_be_bytes());
    v
}

/// Decodes a replay position.
pub fn decode_position(v: &[u8]) -> Option<(u64, u64)> {
    if v.len() != 16 {
        return None;
    }
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&v[..8]);
    b.copy_from_slice(&v[8..]);
    Some((u64::from_be_bytes(a), u64::from_be_bytes(b)))
}

/// What a replay put back.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Records read from the log.
    pub records: usize,
    /// Index entries that were missing and were put back.
    pub restored: usize,
}

/// Which queues a replay restores entries for.
pub enum Queues<'a> {
    /// Every queue a record names. At start the definitions in sled may lag: in a
    /// cluster (even a cluster of one) a queue's record is written by the metadata
    /// group's apply, whose Raft log is fsynced but whose sled write is flushed later,
    /// and the group replays it only after the store is open. A record of a queue that
    /// sled does not know yet is a confirmed message all the same, so nothing is dropped
    /// here: the broker removes the entries of queues that really are gone once its
    /// definitions are complete (`remove_orphans`; queue ids are never reused).
    All,
    /// Only queues whose record is in this tree (a reopen while running: the
    /// definitions are current, and no orphan sweep follows).
    Defined(&'a sled::Tree),
}

/// Puts back the index entries of records from `from` on, for `queues`. Without a
/// replay position (a new store, or one written by a broker that flushed the index
/// before each confirm) there is nothing to replay.
pub fn replay(
    db: &sled::Db,
    queues: Queues<'_>,
    messages: &sled::Tree,
    dir: &Path,
) -> Result<Replayed, String> {
    let mut done = Replayed::default();
    let Some(from) = db
        .get(REPLAY_FROM)
        .map_err(|e| format!("cannot read the replay position: {e}"))?
        .and_then(|v| decode_position(&v))
    else {
        return Ok(done);
    };
    let live: Option<HashSet<u64>> = match queues {
        Queues::All => None,
        Queues::Defined(definitions) => Some(defined_queues(definitions)?),
    };
    let mut failed = None;
    segments::scan(dir, from, |at: Location, payload| {
        let Ok((Some(env), _)) = Envelope::split(payload) else {
            return;
        };
        // a compaction copy is never needed (see `Envelope::copy`)
        if env.copy {
            return;
        }
        done.records += 1;
        let value = Pointer {
            at,
            meta: env.meta,
            fanout: env.queues.len().max(1) as u32,
        }
        .encode();
        let wanted = |q: &&u64| live.as_ref().is_none_or(|l| l.contains(q));
        for q in env.queues.iter().filter(wanted) {
            let key = message_key(*q, env.seq);
            match messages.compare_and_swap(key, None as Option<&[u8]>, Some(&value[..])) {
                Ok(Ok(())) => done.restored += 1,
                Ok(Err(_)) => {} // the entry is there already
                Err(e) => failed = Some(e.to_string()),
            }
        }
    })?;
    if let Some(e) = failed {
        return Err(format!("cannot restore the message index: {e}"));
    }
    Ok(done)
}

/// The store ids of the queues whose records are in `definitions`.
fn defined_queues(definitions: &sled::Tree) -> Result<HashSet<u64>, String> {
    let records = definitions
        .iter()
        .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read definitions: {e}"))?;
    Ok(decode_definitions(records)
        .0
        .queues
        .iter()
        .map(|q| q.id)
        .collect())
}

#[cfg(test)]
mod tests {
    use crate::store::SledStore;
    use broker_core::message::Meta;
    use broker_core::store::{DefinitionStore, MessageStore, QueueDef};

    fn define(s: &SledStore, name: &str, id: u64) {
        let def = QueueDef {
            vhost: "/".into(),
            name: name.into(),
            id,
            auto_delete: false,
            arguments: Default::default(),
            home: None,
            members: Vec::new(),
        };
        s.put_definition(&QueueDef::key("/", name), &def.encode())
            .unwrap();
    }

    /// Reopens the store in this process, waiting for the dropped one's lock.
    fn reopen(dir: &std::path::Path) -> SledStore {
        SledStore::open_waiting(dir, std::time::Duration::from_secs(5)).unwrap()
    }

    fn seqs(s: &SledStore, queue: u64) -> Vec<(u64, Vec<u8>)> {
        let mut v = Vec::new();
        s.for_each_in_queue(queue, usize::MAX, &mut |m| {
            v.push((m.seq, m.record.unwrap().unwrap()))
        })
        .unwrap();
        v
    }

    #[test]
    fn committed_records_come_back_when_the_index_lost_them() {
        let dir = std::env::temp_dir().join(format!("replay-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let meta = Meta {
            size: 5,
            body_len: 5,
            priority: 2,
            arrival_ms: 77,
            ttl_ms: None,
        };
        {
            let s = SledStore::open(&dir).unwrap();
            define(&s, "a", 1);
            define(&s, "b", 2);
            // flushed with the index: before the replay position
            s.insert(&[1], 10, b"\x01old", meta).unwrap();
            s.flush().unwrap();
            // committed only: past the replay position
            s.insert(&[1, 2], 11, b"\x01fan", meta).unwrap();
            s.insert(&[3], 12, b"\x01gone", meta).unwrap();
            s.insert(&[2], 13, b"\x01kept", meta).unwrap();
            s.commit().unwrap();
            // what a crash before the next index flush looks like: the index lacks
            // entries, which reach the disk only with this flush of sled alone
            for (q, seq) in [(1, 10), (1, 11), (2, 11), (3, 12)] {
                s.index()
                    .remove(broker_core::store::message_key(q, seq))
                    .unwrap();
            }
            s.index().flush().unwrap();
        }
        let s = reopen(&dir);
        // seq 10 was removed before the replay position: it stays removed; the rest is
        // back, with its meta, in order; queue 3 has no record (yet: in a cluster its
        // record may come with the metadata group's log replay) and its message is back
        // too, for the broker's orphan sweep to decide
        assert_eq!(seqs(&s, 1), vec![(11, b"\x01fan".to_vec())]);
        assert_eq!(
            seqs(&s, 2),
            vec![(11, b"\x01fan".to_vec()), (13, b"\x01kept".to_vec())]
        );
        assert_eq!(seqs(&s, 3), vec![(12, b"\x01gone".to_vec())]);
        let mut metas = Vec::new();
        s.for_each_in_queue(2, 0, &mut |m| metas.push(m.meta))
            .unwrap();
        assert_eq!(metas, vec![meta, meta]);
        // an index entry whose place holds another message's record is an error
        let value = s
            .index()
            .get(broker_core::store::message_key(2, 13))
            .unwrap()
            .unwrap();
        s.index()
            .insert(broker_core::store::message_key(2, 99), value)
            .unwrap();
        let err = s.get(2, 99).unwrap_err();
        assert!(err.0.contains("belongs to another message"), "{err}");
        s.index()
            .remove(broker_core::store::message_key(2, 99))
            .unwrap();
        // a second start replays nothing more
        drop(s);
        let s = reopen(&dir);
        assert_eq!(seqs(&s, 2).len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
