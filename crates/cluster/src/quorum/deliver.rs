//! Deliveries to consumers on other nodes (docs/design/cluster.md §6): the leader's node
//! carries out a group's `Deliver` effects; those for a consumer whose channel is on
//! another node go there as one-way [`QQ_DELIVER_SERVICE`] messages, each a
//! [`DeliverBatch`] of one group's deliveries to that node, cut below the transport's
//! frame limit. The receiving node's [`DeliveryReceiver`] (the server's, later) hands
//! them to the consumers' channels.
//!
//! One-way messages from one peer arrive in order and are handled one at a time, so a
//! consumer sees its deliveries in the order the leader decided them. A batch lost with
//! its connection is not re-sent: its messages stay checked out until the consumer
//! settles what it got, its channel goes down, or a new leader returns them all.

use crate::net::{BoxFut, NetError, Service, ServiceId, Transport};
use crate::{GroupId, NodeId};
use broker_core::message::Message;
use broker_core::queue::MsgId;
use broker_core::quorum::{ConsumerId, Effect};
use broker_core::store::{decode_message, encode_message};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The transport service a node receives deliveries for its consumers on.
pub const QQ_DELIVER_SERVICE: ServiceId = 0x7171_0000_0002;

/// Bytes of a batch besides its deliveries' messages (postcard's lengths and ids are
/// smaller than this per delivery).
const PER_DELIVERY: usize = 64;

/// One delivery, as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteDelivery {
    /// To whom (the channel names the node).
    pub consumer: ConsumerId,
    /// The id the consumer settles it by.
    pub msg_id: MsgId,
    /// The message, as `broker_core::store::encode_message` writes it.
    #[serde(with = "serde_bytes")]
    pub message: Vec<u8>,
    /// Whether it was delivered before.
    pub redelivered: bool,
    /// Returns so far.
    pub delivery_count: u32,
}

impl RemoteDelivery {
    /// The delivery of a `Deliver` effect (`None` for other effects).
    pub fn from_effect(e: &Effect) -> Option<RemoteDelivery> {
        match e {
            Effect::Deliver {
                consumer,
                msg_id,
                message,
                redelivered,
                delivery_count,
            } => Some(RemoteDelivery {
                consumer: consumer.clone(),
                msg_id: *msg_id,
                message: encode_message(message),
                redelivered: *redelivered,
                delivery_count: *delivery_count,
            }),
            _ => None,
        }
    }

    /// The message.
    pub fn decode(&self) -> Result<Message, String> {
        decode_message(&self.message, 0).map_err(|e| e.0)
    }
}

/// Deliveries of one group to consumers on one node, in the order decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverBatch {
    /// The quorum queue's group.
    pub group: GroupId,
    /// The deliveries.
    pub deliveries: Vec<RemoteDelivery>,
}

/// The receiving end on the consumers' node.
pub trait DeliveryReceiver: Send + Sync + 'static {
    /// A batch from the leader on node `from`. Hand it on without blocking long: the
    /// next message from that node waits for this one.
    fn delivered(&self, from: NodeId, batch: DeliverBatch) -> BoxFut<()>;
}

struct DeliverService {
    receiver: Arc<dyn DeliveryReceiver>,
}

/// The service to register as [`QQ_DELIVER_SERVICE`] on every node with consumers.
pub fn deliver_service(receiver: Arc<dyn DeliveryReceiver>) -> Arc<dyn Service> {
    Arc::new(DeliverService { receiver })
}

impl Service for DeliverService {
    fn handle(&self, from: NodeId, payload: Bytes) -> BoxFut<Result<Bytes, String>> {
        let receiver = self.receiver.clone();
        Box::pin(async move {
            let batch: DeliverBatch = postcard::from_bytes(&payload)
                .map_err(|e| format!("undecodable quorum queue deliveries: {e}"))?;
            receiver.delivered(from, batch).await;
            Ok(Bytes::new())
        })
    }
}

/// Sends `deliveries` of `group` to node `node`, in order, as few one-way messages as
/// the frame limit allows. Waits while the peer's bulk lane is full; fails when the
/// link is down (the messages stay checked out) or a single delivery is above the
/// frame limit.
pub async fn send_deliveries(
    net: &Transport,
    node: NodeId,
    group: GroupId,
    deliveries: Vec<RemoteDelivery>,
) -> Result<(), NetError> {
    let max = net.max_frame();
    let mut batch = DeliverBatch {
        group,
        deliveries: Vec::new(),
    };
    let mut size = PER_DELIVERY;
    for d in deliveries {
        let n = d.message.len() + d.consumer.tag.len() + PER_DELIVERY;
        if !batch.deliveries.is_empty() && size + n > max {
            send(net, node, &batch).await?;
            batch.deliveries.clear();
            size = PER_DELIVERY;
        }
        size += n;
        batch.deliveries.push(d);
    }
    if !batch.deliveries.is_empty() {
        send(net, node, &batch).await?;
    }
    Ok(())
}

async fn send(net: &Transport, node: NodeId, batch: &DeliverBatch) -> Result<(), NetError> {
    let payload = postcard::to_allocvec(batch).map_err(|e| NetError::Remote {
        code: crate::net::ReplyError::Failed,
        text: format!("unencodable deliveries: {e}"),
    })?;
    net.send(node, QQ_DELIVER_SERVICE, Bytes::from(payload))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_core::quorum::ChanId;

    #[test]
    fn a_delivery_keeps_its_message() -> Result<(), String> {
        let m = Message {
            exchange: "x".into(),
            routing_key: "k".into(),
            properties: Default::default(),
            raw_properties: Bytes::from_static(&[0, 0]),
            body: Bytes::from_static(b"body"),
            persist_id: None,
            arrival_ms: 7,
        };
        let consumer = ConsumerId {
            chan: ChanId {
                node: 2,
                connection: 3,
                channel: 4,
            },
            tag: "t".into(),
        };
        let e = Effect::Deliver {
            consumer: consumer.clone(),
            msg_id: 9,
            message: Arc::new(m),
            redelivered: true,
            delivery_count: 1,
        };
        let d = RemoteDelivery::from_effect(&e).ok_or("not a delivery")?;
        let back = d.decode()?;
        assert_eq!(
            (back.body.as_ref(), &*back.routing_key),
            (&b"body"[..], "k")
        );
        assert_eq!((d.consumer, d.msg_id, d.redelivered), (consumer, 9, true));
        Ok(())
    }
}
