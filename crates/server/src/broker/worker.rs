//! An ordered background thread for store-bound work that must not hold up an actor's
//! thread: jobs run one after another, in the order they were handed in.
//!
//! Used by the waiting rooms of delayed exchanges (`broker/delayed.rs`): when their
//! messages fall due, reading them back, storing them for their target queues and
//! removing them from the room costs a few store operations each. Done on the room's
//! actor, those operations delayed its next timer and every actor sharing its thread;
//! done here, the room's actor only takes the due messages out of its state, and the
//! work runs on its own thread, on whichever core is free.
//!
//! The thread starts at the first job. Jobs wait in an unbounded channel: what waits is
//! what the rooms already held (the messages move from a room's state to the job), so
//! the channel holds no more than the rooms did.

use std::sync::mpsc::{channel, Sender};
use std::sync::OnceLock;

/// A job: runs once, on the worker's thread.
type Job = Box<dyn FnOnce() + Send>;

/// The worker: a thread started on first use, and the sending end of its jobs.
#[derive(Default)]
pub struct OrderedWorker {
    /// The jobs' channel, once the thread runs (`None` inside if it could not start).
    jobs: OnceLock<Option<Sender<Job>>>,
}

impl OrderedWorker {
    /// Runs `job` after every job handed in before it. If the thread cannot be started
    /// (the process is out of threads), the job runs here, on the caller's thread.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        let jobs = self.jobs.get_or_init(|| {
            let (tx, rx) = channel::<Job>();
            let started = std::thread::Builder::new()
                .name("delayed-forward".into())
                .spawn(move || {
                    for job in rx {
                        // a job that panics loses its own work (a durable room's messages
                        // are still stored, and come back at the next start), not the
                        // thread and the jobs after it
                        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                            tracing::error!(
                                "a delayed-message job panicked; its messages were not forwarded"
                            );
                        }
                    }
                });
            match started {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::error!("cannot start the delayed-message thread: {e}");
                    None
                }
            }
        });
        let job: Job = Box::new(job);
        let refused = match jobs {
            Some(tx) => tx.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        if let Some(job) = refused {
            job();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn jobs_run_in_the_order_they_were_given_on_another_thread() {
        let w = OrderedWorker::default();
        let (tx, rx) = mpsc::channel();
        let here = std::thread::current().id();
        for i in 0..100 {
            let tx = tx.clone();
            w.run(move || {
                tx.send((i, std::thread::current().id() != here)).ok();
            });
        }
        let got: Vec<(i32, bool)> = rx.iter().take(100).collect();
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            (0..100).collect::<Vec<_>>()
        );
        assert!(got.iter().all(|g| g.1));
    }
}
