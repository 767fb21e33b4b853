//! Message ids handed to other nodes (remote classic queues, `remote.rs` and
//! `remote_consume.rs`): a queue's message id with this run's epoch above it, so a
//! settle sent to an earlier run of the home (before a restart) is ignored instead of
//! settling the message that now has that id.

/// Bits of a handed-out message id below the epoch.
const EPOCH_SHIFT: u32 = 48;

/// This run's epoch: 16 random bits, drawn once.
fn epoch() -> u64 {
    static EPOCH: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(|| rand::random::<u16>() as u64)
}

/// A queue's message id as another node gets it: this run's epoch above it.
pub(crate) fn tag(id: u64) -> u64 {
    epoch() << EPOCH_SHIFT | (id & ((1 << EPOCH_SHIFT) - 1))
}

/// The queue's message id of a handed-out one, if it was handed out by this run.
pub(crate) fn untag(id: u64) -> Option<u64> {
    (id >> EPOCH_SHIFT == epoch()).then_some(id & ((1 << EPOCH_SHIFT) - 1))
}
