//! openraft's own storage suite against `MetaSm` (with the tests' in-memory log): log
//! state, membership recovery, blank and membership entries, snapshot build and
//! transfer. It runs its own runtime, so this is a plain `#[test]`.

mod support;

use broker_cluster::meta::{MetaSm, MetaTc, StorageError};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageIOError};
use support::mem_log::MemLog;
use support::Node1;
use tempfile::TempDir;

struct Fresh;

fn failed(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_state_machine(AnyError::error(e.to_string())).into()
}

impl StoreBuilder<MetaTc, MemLog, MetaSm, TempDir> for Fresh {
    async fn build(&self) -> Result<(TempDir, MemLog, MetaSm), StorageError> {
        let dir = tempfile::tempdir().map_err(failed)?;
        let node = Node1::open(dir.path()).map_err(failed)?;
        Ok((dir, MemLog::default(), node.sm))
    }
}

#[test]
#[allow(clippy::result_large_err)] // the suite's own error type
fn openraft_storage_suite_passes() -> Result<(), StorageError> {
    Suite::test_all(Fresh)
}
