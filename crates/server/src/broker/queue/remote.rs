//! Queues whose home is another node of the cluster (docs/design/cluster.md §6, §11).
//!
//! Every node materializes every durable queue's record, but only the queue's home node
//! (the node that declared it, named in the record) runs its actor and holds its
//! messages. The other nodes keep an entry that knows where the queue lives: it is
//! listed (`/api/queues` with its `node`), redeclared (passively or not: equivalence is
//! checked against the record), bound and unbound, since those are definitions of the
//! metadata group. Using it through this node is the next step (remote classic queues,
//! step 5): until then everything that needs the queue itself is fenced here, in one
//! place: publishes route nothing to it ([`QueueEntry::takes_publishes`]), and consume,
//! get, purge and delete answer 404 naming the home node ([`QueueEntry::local_only`]).
//! Its actor address is one with no actor behind it, so a message sent past the fence
//! fails (`MailboxError::Closed`) instead of reaching anything. The entry itself is made
//! by `VHost::create_remote_queue` (vhost.rs: a queue never names its vhost).

use super::*;
use broker_core::store::QueueDef;

impl QueueEntry {
    /// Whether this node runs the queue (its actor and messages are here).
    pub fn is_local(&self) -> bool {
        self.home.is_none()
    }

    /// Whether a publish routed here may enqueue: not for a queue of another node,
    /// which the message skips until remote publishes exist (step 5).
    pub fn takes_publishes(&self) -> bool {
        self.is_local()
    }

    /// The fence of the operations that need the queue itself (basic.consume,
    /// basic.get, queue.purge, queue.delete): 404 naming the queue's home node when it
    /// lives on another node.
    pub fn local_only(&self) -> Result<(), AmqpError> {
        match &self.home {
            None => Ok(()),
            Some(home) => Err(AmqpError::not_found(format!(
                "queue '{}' in vhost '{}' is on node '{home}': connect to that node to use it (queues on other cluster nodes are not reachable through this node yet)",
                self.name, self.vhost_name
            ))),
        }
    }
}

/// The node a queue record belongs to, if it is not this one: only with
/// `--cluster-peers` (a cluster of one runs every queue it has, whatever name its
/// records carry, so renaming a single node loses nothing), and a record without a home
/// (written before clusters) belongs to the node reading it.
///
/// A quorum queue with members runs on each of them (its Raft group's members); a node
/// that is not one lists it with the first member as its home.
pub fn remote_home(node: &Node, def: &QueueDef) -> Option<Arc<str>> {
    node.config.cluster.as_ref()?;
    if let Some(first) = def.members.first() {
        let me = crate::broker::node::node_name();
        return (!def.members.iter().any(|m| m == me)).then(|| first.as_str().into());
    }
    let home = def.home.as_deref()?;
    (home != crate::broker::node::node_name()).then(|| home.into())
}
