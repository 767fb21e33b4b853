//! The metadata group (group 0): a small etcd over the definitions store. Every command
//! is a guarded transaction over the definitions keyspace ([`MetaCmd::Txn`]): the server
//! decides against its local view (the applied state), proposes the writes with guards
//! saying what it saw, and on [`MetaResp::Conflict`] waits for the apply to reach it and
//! decides again. Apply ([`MetaSm`]) only reads and writes the store's keys, so every
//! replica holds the same bytes; what changed is handed to a [`Materialize`] observer
//! that updates the server's registries and actors. The Raft log is the durability
//! point; sled is the state machine's cache, with the applied log id in the same batch.
//!
//! Design: docs/design/cluster.md §2.

mod alone;
mod cmd;
mod forward;
mod handle;
mod sm;
mod txn;

use std::io::Cursor;

pub use alone::{meta_config, start_alone, Alone};
pub use cmd::{Change, Guard, Key, MetaCmd, MetaResp, Op};
pub use forward::{forward_service, META_FORWARD_SERVICE};
pub use handle::{MetaHandle, ProposeError, PROPOSE_TIMEOUT};
pub use sm::{Materialize, MetaSm, NoMaterialize};

openraft::declare_raft_types!(
    /// The metadata group's types: guarded transactions in, their outcome out.
    pub MetaTc:
        D = MetaCmd,
        R = MetaResp,
        NodeId = crate::NodeId,
        Node = crate::Node,
        Entry = openraft::Entry<MetaTc>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A metadata group member.
pub type MetaRaft = openraft::Raft<MetaTc>;

/// A log entry of the metadata group.
pub type MetaEntry = openraft::Entry<MetaTc>;

/// A log id (term, leader, index).
pub type LogId = openraft::LogId<crate::NodeId>;

/// The membership as the state machine stores it (with the log id that set it).
pub type StoredMembership = openraft::StoredMembership<crate::NodeId, crate::Node>;

/// A storage failure reported to openraft (which stops the group: apply must not fail
/// for local reasons, or replicas diverge).
pub type StorageError = openraft::StorageError<crate::NodeId>;
