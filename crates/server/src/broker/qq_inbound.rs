//! What reaches this node for its quorum queue consumers from a group's leader on
//! another node (docs/design/cluster.md §3, §6): deliveries (`QQ_DELIVER_SERVICE`, the
//! crate's) and consumer cancels ([`QQ_CANCEL_SERVICE`], this module's: a new leader's
//! `LeaderChanged` cancels every consumer, wherever its channel is). Both are one-way
//! messages, in order per peer; each is handed to the member of its group on this node
//! (registered in `ClusterNode::qq_local` by the queue's shell while it runs). A message
//! for a group that does not run here (deleted meanwhile) is dropped: its deliveries
//! stay checked out until the next `LeaderChanged` or this node's `Down`.

use super::cluster::{ClusterNode, QqInbound};
use broker_cluster::net::{BoxFut, NetError, Service, ServiceId, Transport};
use broker_cluster::quorum::{DeliverBatch, DeliveryReceiver};
use broker_cluster::{GroupId, NodeId};
use broker_core::quorum::ConsumerId;
use bytes::Bytes;
use std::sync::{Arc, Weak};

/// The transport service consumer cancels for this node's channels arrive on.
pub const QQ_CANCEL_SERVICE: ServiceId = 0x7171_0000_0003;

/// Hands an arrival to group `group`'s member on this node, if it runs here.
fn hand(node: &Weak<ClusterNode>, group: GroupId, what: QqInbound) {
    let Some(node) = node.upgrade() else {
        return;
    };
    let f = node
        .qq_local
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&group)
        .cloned();
    match f {
        Some(f) => f(what),
        None => tracing::debug!(group, "quorum queue message for a group not running here"),
    }
}

struct Receiver(Weak<ClusterNode>);

impl DeliveryReceiver for Receiver {
    fn delivered(&self, _from: NodeId, batch: DeliverBatch) -> BoxFut<()> {
        hand(
            &self.0,
            batch.group,
            QqInbound::Deliveries(batch.deliveries),
        );
        Box::pin(async {})
    }
}

struct Cancels(Weak<ClusterNode>);

impl Service for Cancels {
    fn handle(&self, _from: NodeId, payload: Bytes) -> BoxFut<Result<Bytes, String>> {
        let r = serde_json::from_slice::<(GroupId, Vec<ConsumerId>)>(&payload)
            .map_err(|e| format!("undecodable quorum queue cancel: {e}"))
            .map(|(group, consumers)| hand(&self.0, group, QqInbound::Cancelled(consumers)))
            .map(|_| Bytes::new());
        Box::pin(async move { r })
    }
}

/// Registers the receiving ends on the transport (once, when the node starts).
pub fn register(net: &Transport, node: &Arc<ClusterNode>) {
    let weak = Arc::downgrade(node);
    net.add_service(
        broker_cluster::quorum::QQ_DELIVER_SERVICE,
        broker_cluster::quorum::deliver_service(Arc::new(Receiver(weak.clone()))),
    );
    net.add_service(QQ_CANCEL_SERVICE, Arc::new(Cancels(weak)));
}

/// Tells node `to` that group `group` cancelled these consumers of its channels.
pub async fn send_cancels(
    net: &Transport,
    to: NodeId,
    group: GroupId,
    consumers: Vec<ConsumerId>,
) -> Result<(), NetError> {
    let payload = serde_json::to_vec(&(group, consumers)).map_err(|e| NetError::Remote {
        code: broker_cluster::net::ReplyError::Failed,
        text: format!("unencodable quorum queue cancel: {e}"),
    })?;
    net.send(to, QQ_CANCEL_SERVICE, Bytes::from(payload)).await
}
