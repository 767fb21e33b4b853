//! The flusher: one thread that turns many publishes into one fsync (group commit) and
//! makes the index durable in the background, and a compactor thread beside it that
//! reclaims the space of mostly dead segments ([`crate::compact`]) off the actor threads.

use broker_core::store::{MessageStore, StoreError};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::store::INDEX_FLUSH;

/// How long the compactor rests when no segment needs compacting, or after a failed
/// round.
pub const COMPACT_IDLE: Duration = Duration::from_millis(500);

/// Upper bounds (seconds) of the flush-latency histogram's buckets.
pub const FLUSH_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0];

/// How long group-commit flushes take (fsync of segments and index), for /metrics.
pub struct Histogram {
    buckets: [std::sync::atomic::AtomicU64; 10],
    count: std::sync::atomic::AtomicU64,
    sum_us: std::sync::atomic::AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        #[allow(clippy::declare_interior_mutable_const)]
        const Z: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Histogram {
            buckets: [Z; 10],
            count: Z,
            sum_us: Z,
        }
    }

    fn observe(&self, d: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let secs = d.as_secs_f64();
        for (i, le) in FLUSH_BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    /// Cumulative bucket counts, total count, and the sum in seconds.
    pub fn snapshot(&self) -> ([u64; 10], u64, f64) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut b = [0u64; 10];
        for (i, x) in self.buckets.iter().enumerate() {
            b[i] = x.load(Relaxed);
        }
        (
            b,
            self.count.load(Relaxed),
            self.sum_us.load(Relaxed) as f64 / 1e6,
        )
    }
}

/// Flush latencies of this process.
pub static FLUSH_LATENCY: Histogram = Histogram::new();

/// A request for an fsync; the reply says whether it succeeded.
pub struct FlushRequest {
    /// The store's mark before the requester's inserts ([`MessageStore::mark`]).
    pub since: u64,
    /// Its mark after them.
    pub upto: u64,
    /// The index (and definitions) must be durable too, not only the records: a
    /// definition change waits for this instead of flushing sled on its own thread.
    pub index: bool,
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
    /// Starts the flusher thread for `store`, and the compactor thread (which stops
    /// with the flusher, and holds the store only for one round at a time).
    pub fn start(store: std::sync::Arc<dyn MessageStore>) -> Flusher {
        let (tx, rx) = mpsc::channel::<FlushRequest>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        start_compactor(std::sync::Arc::downgrade(&store), stop_rx);
        let spawned = thread::Builder::new()
            .name("store-flusher".into())
            .spawn(move || {
                let mut next_index_flush = Instant::now() + INDEX_FLUSH;
                loop {
                    let wait = next_index_flush.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(wait) {
                        Ok(first) => {
                            let mut batch = vec![first];
                            while let Ok(more) = rx.try_recv() {
                                batch.push(more);
                            }
                            let started = Instant::now();
                            let res = store.commit();
                            FLUSH_LATENCY.observe(started.elapsed());
                            if let Err(e) = &res {
                                tracing::error!(
                                    "store commit failed: {e}; the publishes it covered are nacked"
                                );
                            }
                            let index = if batch.iter().any(|r| r.index) {
                                let flushed = res.clone().and_then(|()| store.flush());
                                next_index_flush = Instant::now() + INDEX_FLUSH;
                                if let Err(e) = &flushed {
                                    tracing::error!("store index flush failed: {e}");
                                }
                                Some(flushed)
                            } else {
                                None
                            };
                            for r in batch {
                                let res = match (&index, r.index) {
                                    (Some(flushed), true) => flushed.clone(),
                                    _ => {
                                        res.clone().and_then(|()| store.check_lost(r.since, r.upto))
                                    }
                                };
                                (r.done)(res);
                            }
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            drop(stop_tx);
                            break;
                        }
                    }
                    if Instant::now() >= next_index_flush {
                        if store.needs_flush() {
                            if let Err(e) = store.flush() {
                                tracing::error!("background store flush failed: {e}");
                            }
                        }
                        next_index_flush = Instant::now() + INDEX_FLUSH;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the flusher thread: {e}");
        }
        Flusher { tx }
    }

    /// Asks for a commit covering the requester's inserts, made between the store marks
    /// `since` and `upto`; `done` runs once one that covers everything written before
    /// this call has finished, with an error if it failed or a failed write or fsync may
    /// have lost any of those inserts.
    pub fn request(
        &self,
        since: u64,
        upto: u64,
        done: impl FnOnce(Result<(), StoreError>) + Send + 'static,
    ) {
        self.send(FlushRequest {
            since,
            upto,
            index: false,
            done: Box::new(done),
        });
    }

    /// Makes everything written to the index and the definitions so far durable (one
    /// sled flush, shared with every request waiting at the time), on the flusher
    /// thread: a durable declare, delete or bind waits for this before its -ok, without
    /// stalling the actors of its worker thread as a `flush()` there would.
    pub async fn sync_index(&self) -> Result<(), StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(FlushRequest {
            since: 0,
            upto: 0,
            index: true,
            done: Box::new(move |res| {
                let _ = tx.send(res);
            }),
        });
        rx.await
            .unwrap_or_else(|_| Err(StoreError("flusher stopped".into())))
    }

    fn send(&self, r: FlushRequest) {
        if let Err(mpsc::SendError(r)) = self.tx.send(r) {
            (r.done)(Err(StoreError("flusher stopped".into())));
        }
    }
}

/// Runs compaction rounds ([`MessageStore::compact`]) while there is work, each followed
/// by a rest twice its length, and rests [`COMPACT_IDLE`] when there is none; stops when `stop` disconnects (the
/// flusher ended) or the store is gone.
fn start_compactor(store: std::sync::Weak<dyn MessageStore>, stop: mpsc::Receiver<()>) {
    let spawned = thread::Builder::new()
        .name("store-compactor".into())
        .spawn(move || loop {
            let began = std::time::Instant::now();
            let more = match store.upgrade().map(|s| s.compact()) {
                None => break,
                Some(Ok(more)) => more,
                Some(Err(e)) => {
                    tracing::warn!("segment compaction round failed: {e}");
                    false
                }
            };
            // background work: between rounds it rests twice as long as the round took,
            // so it takes at most a third of a core from the actors and the publishers
            // and consumers it shares the machine with
            let rest = if more {
                began.elapsed().saturating_mul(2).min(COMPACT_IDLE)
            } else {
                COMPACT_IDLE
            };
            match stop.recv_timeout(rest) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                _ => break,
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the compactor thread: {e}");
    }
}
