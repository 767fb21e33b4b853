//! What every Raft group on the node shares, whatever its commands: the metadata group
//! (`crate::meta`) and the quorum queue groups (`crate::quorum`) run the same shell
//! around their own state machines. Forwarding a command to the leader's node
//! (`forward.rs`: the reply and its codec), proposing until a leader commits or the
//! timeout ends it (`propose.rs`: the retry loop that follows leader changes), and the
//! state machine's snapshot bookkeeping (`snapshot.rs`) are written once here, generic
//! over the group's openraft type configuration, so a fix to one reaches both.

pub(crate) mod forward;
pub(crate) mod propose;
pub(crate) mod snapshot;
