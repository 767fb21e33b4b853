//! Forwarding a metadata proposal from a follower to the leader (docs/design/cluster.md
//! §2): the follower calls the [`META_FORWARD_SERVICE`] on the leader's node, which runs
//! `client_write` and answers the entry's log index with its answer; the follower then
//! waits until its own state machine has applied that index, so its caller's next read
//! sees the entry (and, on `Conflict`, the entry that won). The reply and its codec are
//! every group's (`crate::group::forward`).
//!
//! A forwarded command whose answer is lost (the leader fails after committing, the
//! connection drops) is sent again to the next leader and may apply twice: the guards
//! make that safe (the second copy answers `Conflict`, and the proposer decides again
//! from a state that holds its own first copy).

use super::cmd::{MetaCmd, MetaResp};
use super::{MetaRaft, MetaTc};
use crate::group::forward::{encode, ForwardReply};
use crate::net::{BoxFut, Service, ServiceId};
use crate::NodeId;
use bytes::Bytes;

/// The transport service a metadata leader answers forwarded proposals on.
pub const META_FORWARD_SERVICE: ServiceId = 0x6d65_7461_0001;

/// What the messages are called in codec errors.
pub(crate) const WHAT: &str = "metadata";

/// The leader's side: `client_write` of a forwarded command.
pub(crate) struct ForwardService {
    raft: MetaRaft,
}

/// The service to register as [`META_FORWARD_SERVICE`] on every node of the group (the
/// current leader answers; the others say who leads).
pub fn forward_service(raft: MetaRaft) -> std::sync::Arc<dyn Service> {
    std::sync::Arc::new(ForwardService { raft })
}

impl Service for ForwardService {
    fn handle(&self, _from: NodeId, payload: Bytes) -> BoxFut<Result<Bytes, String>> {
        let raft = self.raft.clone();
        Box::pin(async move {
            let cmd: MetaCmd = postcard::from_bytes(&payload)
                .map_err(|e| format!("undecodable metadata command: {e}"))?;
            if cmd.reserved_key().is_some() {
                return Err("metadata command names a reserved key".into());
            }
            let reply = ForwardReply::<MetaResp>::of::<MetaTc>(raft.client_write(cmd).await)?;
            encode(&reply, WHAT)
        })
    }
}
