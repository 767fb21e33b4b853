//! What the cluster log tests share: a type config, a small in-memory state machine
//! (after the spike's toy queue), an in-process network (the `Raft` handles themselves,
//! with kill) and a node's store, flusher and `NodeLog` in a temporary directory.

// not every test file uses every helper; openraft's errors are large by design
#![allow(dead_code, clippy::result_large_err)]

pub mod net;
pub mod sm;

use broker_cluster::log::{GroupLog, NodeLog};
use broker_cluster::GroupId;
use broker_store::{Flusher, SledStore};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// A replicated command of the toy queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cmd {
    /// The leader stamps the time: replicas never read their own clock.
    Enqueue {
        body: Vec<u8>,
        ts_ms: u64,
    },
    Settle {
        id: u64,
    },
}

/// What applying a command answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resp {
    None,
    Enqueued { id: u64 },
    Settled { found: bool },
}

openraft::declare_raft_types!(
    /// The type configuration of the test groups.
    pub Tc:
        D = Cmd,
        R = Resp,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<Tc>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<Tc>;
pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// One node's store, flusher and Raft log.
pub struct Node {
    pub store: Weak<SledStore>,
    pub log: Arc<NodeLog>,
    pub recovered: Vec<GroupId>,
}

impl Node {
    /// Opens the store in `dir` with its flusher, and the node's log on them.
    pub fn open(dir: &Path) -> Result<Node, String> {
        // sled lets go of its directory lock a moment after `close` saw the store
        // released, so the reopen waits for it
        let store = Arc::new(SledStore::open_waiting(dir, Duration::from_secs(5))?);
        let flusher = Flusher::start(store.clone());
        let (log, recovered) = NodeLog::open(&store, flusher);
        Ok(Node {
            store: Arc::downgrade(&store),
            log,
            recovered,
        })
    }

    /// Group `g`'s log storage.
    pub fn group(&self, g: GroupId) -> Result<GroupLog<Tc>, openraft::StorageError<u64>> {
        self.log.group::<Tc>(g)
    }

    /// Stops the node: drops its log, then waits until the flusher thread has let go
    /// of the store (it does when the last flusher handle is gone), so that the same
    /// data dir can be opened again.
    pub fn close(self) {
        let store = self.store;
        drop(self.log);
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.strong_count() > 0 {
            assert!(Instant::now() < deadline, "the store was not released");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Raft timings short enough for tests.
pub fn config() -> Result<Arc<openraft::Config>, openraft::ConfigError> {
    let c = openraft::Config {
        cluster_name: "test".into(),
        heartbeat_interval: 50,
        election_timeout_min: 200,
        election_timeout_max: 400,
        ..Default::default()
    };
    c.validate().map(Arc::new)
}
