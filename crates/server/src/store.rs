//! The sled store: definitions and persistent messages in two trees of one sled database
//! in the data dir, and a flusher thread that turns many publishes into one fsync.

use broker_core::store::{
    delivered_key, message_key, DefinitionStore, MessageStore, StoreError, StoredMessage,
};
use std::path::Path;
use std::sync::mpsc;
use std::thread;

fn err(e: sled::Error) -> StoreError {
    StoreError(e.to_string())
}

/// Definitions and messages in sled.
pub struct SledStore {
    db: sled::Db,
    definitions: sled::Tree,
    messages: sled::Tree,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. A directory locked by another broker is a
    /// clear error.
    pub fn open(dir: &Path) -> Result<SledStore, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create data dir {}: {e}", dir.display()))?;
        let path = dir.join("store");
        let db = sled::Config::new()
            .path(&path)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(ref io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("lock") =>
                {
                    format!(
                        "data dir {} is in use by another broker process ({e})",
                        dir.display()
                    )
                }
                sled::Error::Corruption { .. } => {
                    format!("the store in {} is damaged: {e}", path.display())
                }
                other => format!("cannot open the store in {}: {other}", path.display()),
            })?;
        let definitions = db.open_tree("definitions").map_err(|e| e.to_string())?;
        let messages = db.open_tree("messages").map_err(|e| e.to_string())?;
        Ok(SledStore {
            db,
            definitions,
            messages,
        })
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

impl DefinitionStore for SledStore {
    fn put_definition(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.definitions.insert(key, value).map_err(err)?;
        self.db.flush().map_err(err)?;
        Ok(())
    }

    fn delete_definition(&self, key: &[u8]) -> Result<(), StoreError> {
        self.definitions.remove(key).map_err(err)?;
        self.db.flush().map_err(err)?;
        Ok(())
    }

    fn definitions(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.definitions
            .iter()
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(err))
            .collect()
    }

    fn next_id(&self) -> Result<u64, StoreError> {
        // +1 so that 0 is never an id
        self.db.generate_id().map(|i| i + 1).map_err(err)
    }
}

impl MessageStore for SledStore {
    fn insert(&self, queue: u64, seq: u64, record: &[u8]) -> Result<(), StoreError> {
        self.messages
            .insert(message_key(queue, seq), record)
            .map(|_| ())
            .map_err(err)
    }

    fn mark_delivered(&self, queue: u64, seq: u64) -> Result<(), StoreError> {
        self.messages
            .insert(delivered_key(queue, seq), &[])
            .map(|_| ())
            .map_err(err)
    }

    fn remove(&self, queue: u64, seq: u64) -> Result<(), StoreError> {
        self.messages.remove(message_key(queue, seq)).map_err(err)?;
        self.messages
            .remove(delivered_key(queue, seq))
            .map_err(err)?;
        Ok(())
    }

    fn remove_queue(&self, queue: u64) -> Result<usize, StoreError> {
        let mut n = 0;
        for k in self.messages.scan_prefix(queue.to_be_bytes()).keys() {
            let k = k.map_err(err)?;
            self.messages.remove(k).map_err(err)?;
            n += 1;
        }
        Ok(n)
    }

    fn for_each_in_queue(
        &self,
        queue: u64,
        f: &mut dyn FnMut(StoredMessage),
    ) -> Result<(), StoreError> {
        // a record's delivered marker sorts right after it, so hold one record back
        let mut pending: Option<StoredMessage> = None;
        for kv in self.messages.scan_prefix(queue.to_be_bytes()) {
            let (k, v) = kv.map_err(err)?;
            if k.len() < 16 {
                continue;
            }
            let mut s = [0u8; 8];
            s.copy_from_slice(&k[8..16]);
            let seq = u64::from_be_bytes(s);
            if k.len() == 16 {
                if let Some(p) = pending.take() {
                    f(p);
                }
                pending = Some(StoredMessage {
                    seq,
                    record: v.to_vec(),
                    delivered: false,
                });
            } else if let Some(p) = pending.as_mut() {
                if p.seq == seq {
                    p.delivered = true;
                }
            }
        }
        if let Some(p) = pending.take() {
            f(p);
        }
        Ok(())
    }

    fn get(&self, queue: u64, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .messages
            .get(message_key(queue, seq))
            .map_err(err)?
            .map(|v| v.to_vec()))
    }

    fn queue_ids(&self) -> Result<Vec<u64>, StoreError> {
        let mut ids = Vec::new();
        let mut next: Option<u64> = Some(0);
        while let Some(from) = next {
            let Some(kv) = self.messages.range(from.to_be_bytes()..).next() else {
                break;
            };
            let (k, _) = kv.map_err(err)?;
            if k.len() < 8 {
                break;
            }
            let mut q = [0u8; 8];
            q.copy_from_slice(&k[..8]);
            let id = u64::from_be_bytes(q);
            ids.push(id);
            next = id.checked_add(1);
        }
        Ok(ids)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(err)
    }
}

/// A request for an fsync; the reply says whether it succeeded.
pub struct FlushRequest {
    /// Called with the outcome, on the flusher thread.
    pub done: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
}

/// Group commit: one thread that flushes the store for every request that arrived before
/// the flush began. Requests are cheap; flushes are shared.
#[derive(Clone)]
pub struct Flusher {
    tx: mpsc::Sender<FlushRequest>,
}

impl Flusher {
    /// Starts the flusher thread for `store`.
    pub fn start(store: std::sync::Arc<dyn MessageStore>) -> Flusher {
        let (tx, rx) = mpsc::channel::<FlushRequest>();
        let spawned = thread::Builder::new()
            .name("store-flusher".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                    let res = MessageStore::flush(&*store);
                    if let Err(e) = &res {
                        tracing::error!(
                            "store flush failed: {e}; the publishes it covered are nacked"
                        );
                    }
                    for r in batch {
                        (r.done)(res.clone());
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the flusher thread: {e}");
        }
        Flusher { tx }
    }

    /// Asks for a flush; `done` runs once one that covers everything written before this
    /// call has finished.
    pub fn request(&self, done: impl FnOnce(Result<(), StoreError>) + Send + 'static) {
        if let Err(mpsc::SendError(r)) = self.tx.send(FlushRequest {
            done: Box::new(done),
        }) {
            (r.done)(Err(StoreError("flusher stopped".into())));
        }
    }
}
