//! Forwarding a quorum queue command from a member that does not lead to the one that
//! does (docs/design/cluster.md §6): the proposer's node calls [`QQ_FORWARD_SERVICE`] on
//! the leader's node with the group id and the command; the handler finds the group in
//! the node's registry, runs `client_write` and answers the entry's log index with the
//! state machine's answer. The effects happen on the leader's node, so the proposer
//! does not wait for its own apply. The reply and its codec are every group's
//! (`crate::group::forward`).

use super::member::QuorumGroups;
use super::QqTc;
use crate::group::forward::{encode, ForwardReply};
use crate::net::{BoxFut, Service, ServiceId};
use crate::{GroupId, NodeId};
use broker_core::quorum::{QqCmd, QqResp};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The transport service a node answers forwarded quorum queue commands on.
pub const QQ_FORWARD_SERVICE: ServiceId = 0x7171_0000_0001;

/// What the messages are called in codec errors.
pub(crate) const WHAT: &str = "quorum queue";

/// A forwarded command, as received.
#[derive(Deserialize)]
struct ForwardReq {
    group: GroupId,
    cmd: QqCmd,
}

/// A forwarded command, as sent (the same encoding, without copying the command).
#[derive(Serialize)]
pub(crate) struct ForwardOut<'a> {
    pub(crate) group: GroupId,
    pub(crate) cmd: &'a QqCmd,
}

struct ForwardService {
    groups: QuorumGroups,
}

/// The service to register as [`QQ_FORWARD_SERVICE`] ([`super::QuorumNode::new`] does).
pub(crate) fn forward_service(groups: QuorumGroups) -> Arc<dyn Service> {
    Arc::new(ForwardService { groups })
}

impl Service for ForwardService {
    fn handle(&self, _from: NodeId, payload: Bytes) -> BoxFut<Result<Bytes, String>> {
        let groups = self.groups.clone();
        Box::pin(async move {
            let req: ForwardReq = postcard::from_bytes(&payload)
                .map_err(|e| format!("undecodable quorum queue command: {e}"))?;
            let Some(raft) = groups.get(req.group) else {
                return encode(&ForwardReply::<QqResp>::NoGroup, WHAT);
            };
            let reply = ForwardReply::<QqResp>::of::<QqTc>(raft.client_write(req.cmd).await)?;
            encode(&reply, WHAT)
        })
    }
}
