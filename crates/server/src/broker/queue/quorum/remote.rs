//! The leader's effects for consumers on other nodes, gathered over one batch of
//! effects and sent in the order decided: consecutive deliveries (or cancels) for one
//! node travel together (`replicated.rs` sends them).

use super::replicated::Outbound;
use broker_cluster::quorum::RemoteDelivery;
use broker_core::quorum::{ConsumerId, Effect};
use tokio::sync::mpsc;

/// What one batch of effects sends to other nodes.
#[derive(Default)]
pub(super) struct Remote {
    out: Vec<Outbound>,
}

impl Remote {
    /// A delivery to a consumer on another node.
    pub(super) fn deliver(&mut self, e: &Effect) {
        let Some(d) = RemoteDelivery::from_effect(e) else {
            return;
        };
        let node = d.consumer.chan.node;
        match self.out.last_mut() {
            Some(Outbound::Deliveries(n, v)) if *n == node => v.push(d),
            _ => self.out.push(Outbound::Deliveries(node, vec![d])),
        }
    }

    /// A cancel of a consumer on another node.
    pub(super) fn cancel(&mut self, c: ConsumerId) {
        let node = c.chan.node;
        match self.out.last_mut() {
            Some(Outbound::Cancels(n, v)) if *n == node => v.push(c),
            _ => self.out.push(Outbound::Cancels(node, vec![c])),
        }
    }

    /// Hands everything to the group's outbound sender.
    pub(super) fn send(self, to: &mpsc::UnboundedSender<Outbound>) {
        for o in self.out {
            // the sender ends with the group: nothing to send to then
            let _ = to.send(o);
        }
    }
}
