//! What a store keeps for a replicated state machine over its definitions (the cluster's
//! metadata group, issue 16): atomic batches of definition writes that also record how
//! far the Raft log has been applied, and whole-keyspace snapshots. The store only moves
//! these bytes; what they mean (log ids, membership) is the cluster crate's business.

/// Keys under this prefix hold the replicated state ([`ReplicatedState`]), never a
/// definition: a store hides them from `definitions()`, and the metadata group refuses
/// commands that name them. `0xff` is not valid UTF-8, so no name-based key starts so.
pub const RESERVED_PREFIX: &[u8] = b"\xffraft\0";

/// The key of the last applied log id.
pub const APPLIED_KEY: &[u8] = b"\xffraft\0applied";

/// The key of the last applied membership.
pub const MEMBERSHIP_KEY: &[u8] = b"\xffraft\0membership";

/// A definition record: key and value.
pub type Record = (Vec<u8>, Vec<u8>);

/// Whether `key` is one of the replicated state's own keys.
pub fn is_reserved(key: &[u8]) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

/// How far the state machine has applied, stored beside the definitions it wrote so that
/// both survive (or are lost) together: the encoded last applied log id and membership.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicatedState {
    /// The encoded last applied log id (`None` before the first entry).
    pub applied: Option<Vec<u8>>,
    /// The encoded last applied membership (`None` until one is applied).
    pub membership: Option<Vec<u8>>,
}

/// One atomic change: definition writes in order (`None` removes the key) and the
/// replicated state after them. Written without waiting for the disk: the Raft log is the
/// durability point, and the store's index flush catches up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefinitionBatch {
    /// Key, and its new value or `None` for a removal; later writes win.
    pub writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// The new last applied log id.
    pub applied: Vec<u8>,
    /// The new membership, when the entry changed it (otherwise the stored one stays).
    pub membership: Option<Vec<u8>>,
}

/// Every definition record and the replicated state, read together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefinitionSnapshot {
    /// Every definition record in key order (reserved keys excluded).
    pub records: Vec<Record>,
    /// The replicated state the records correspond to.
    pub state: ReplicatedState,
}
