//! openraft's own storage suite against `GroupLog` (on a real store's Raft WAL and
//! flusher) and the tests' in-memory state machine.

mod common;

use broker_cluster::log::GroupLog;
use common::sm::QueueStateMachine;
use common::{Node, Tc};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageError, StorageIOError};

/// Each build opens a fresh store in its own temporary directory; the guard keeps the
/// directory (and the node's log) alive for the test.
struct Builder;

type Guard = (
    tempfile::TempDir,
    std::sync::Arc<broker_cluster::log::NodeLog>,
);

impl StoreBuilder<Tc, GroupLog<Tc>, QueueStateMachine, Guard> for Builder {
    async fn build(&self) -> Result<(Guard, GroupLog<Tc>, QueueStateMachine), StorageError<u64>> {
        let io = |e: String| StorageError::from(StorageIOError::write_logs(AnyError::error(e)));
        let dir = tempfile::tempdir().map_err(|e| io(e.to_string()))?;
        let node = Node::open(dir.path()).map_err(io)?;
        let log = node.log.group::<Tc>(5)?;
        Ok(((dir, node.log), log, QueueStateMachine::default()))
    }
}

/// Called from a plain test: the suite makes its own tokio runtime.
#[test]
fn openraft_storage_suite() -> Result<(), Box<StorageError<u64>>> {
    Suite::test_all(Builder).map_err(Box::new)
}
