//! The cluster layer (issue 16): every node runs Raft groups on openraft — group 0 holds
//! the replicated definitions (the metadata group), and each quorum queue is a group of
//! its own. This crate sits between `broker-store` (the only crate that touches files:
//! the Raft log shares its fsync round with the message store) and `broker-server`
//! (which materializes what the groups apply); it never names the server.
//!
//! The map is docs/design/cluster.md.

mod group;
pub mod log;
pub mod membership;
pub mod net;

use sha2::{Digest, Sha256};

pub mod meta;
pub mod quorum;

/// A node's Raft identity: derived from its name by every node alone (see [`node_id`]).
pub type NodeId = u64;

/// A Raft group on the node: 0 is the metadata group, then one per quorum queue.
pub type GroupId = u64;

/// The metadata group's id.
pub const META_GROUP: GroupId = 0;

/// What Raft knows of a member node: its cluster address (`--cluster-listen`).
pub type Node = openraft::BasicNode;

/// The Raft identity of the node named `name`: the first eight bytes of SHA-256 of the
/// name, so every node derives every other node's id from `--cluster-peers` alone. A
/// collision between two names is refused when a node joins.
pub fn node_id(name: &str) -> NodeId {
    let digest = Sha256::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_stable_and_distinct() {
        assert_eq!(node_id("rabbit@a"), node_id("rabbit@a"));
        assert_ne!(node_id("rabbit@a"), node_id("rabbit@b"));
    }
}
