//! Queues whose home is another node of the cluster (docs/design/cluster.md §6, §11
//! step 5).
//!
//! Every node materializes every durable queue's record, but only the queue's home node
//! (the node that declared it, named in the record) runs its actor and holds its
//! messages. The other nodes keep an entry that knows where the queue lives: it is
//! listed (`/api/queues` with its `node`), redeclared (passively or not: equivalence is
//! checked against the record), bound and unbound, since those are definitions of the
//! metadata group, and it is used through the home:
//!
//! - publishes routed to it go to the home in batches (`outbox.rs`), and their confirms
//!   wait for the home's answer;
//! - basic.get, queue.purge, queue.delete and the counts of queue.declare-ok are
//!   requests to the home ([`QueueEntry::remote_get`] and the others here); the acks,
//!   nacks and rejects of a message got so, and its channel's close, go back as notes;
//! - the home answers them in `broker/remote.rs`.
//!
//! - basic.consume adds a proxy consumer at the home ([`QueueEntry::remote_consume`],
//!   `broker/remote_consume.rs`), and basic.cancel removes it.
//!
//! A home that is down or unreachable: publishes are nacked, the rest answer 404
//! "home node ... is down or inaccessible", as RabbitMQ does.
//!
//! A quorum queue of which this node is no member is used the same way, through one of
//! its members (`outbox.rs` `Homes`), which serves it through its own member of the
//! queue's group.

mod outbox;
pub mod wire;

pub use outbox::Outbox;

use super::*;
use broker_cluster::net::NetError;
use broker_core::store::QueueDef;
use wire::{Note, OpReply, OpReq, OP_SERVICE};

/// How long a request to a queue's home waits at most for the notes queued before it.
const NOTES_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl QueueEntry {
    /// Whether this node runs the queue (its actor and messages are here).
    pub fn is_local(&self) -> bool {
        self.home.is_none()
    }

    /// Whether a publish routed here may enqueue: every queue of this node, and a
    /// queue of other nodes through its home (a quorum queue: one of its members).
    pub fn takes_publishes(&self) -> bool {
        self.is_local() || self.remote.is_some()
    }

    /// The fence of what does not reach another node yet (`what`: the management API's
    /// get): 404 naming the queue's home node when it lives on another node, or
    /// RabbitMQ's 404 when that node is down.
    pub fn local_only(&self, what: &str) -> Result<(), AmqpError> {
        match &self.home {
            None => Ok(()),
            Some(home) if !self.home_up() => Err(self.home_down(home)),
            Some(home) => Err(AmqpError::not_found(format!(
                "queue '{}' in vhost '{}' is on node '{home}': connect to that node for {what} (not yet supported through another cluster node)",
                self.name, self.vhost_name
            ))),
        }
    }

    /// Whether the link to the queue's home (to any member of a quorum queue) is up
    /// (true for a local queue).
    pub fn home_up(&self) -> bool {
        match &self.remote {
            None => self.is_local(),
            Some(o) => o.homes.any_up(&o.cluster),
        }
    }

    /// The session of the link to the queue's home (for a quorum queue of which this
    /// node is no member: the member in use) ([`Transport::link_session`]):
    /// `None` while it is down or for a local queue.
    ///
    /// [`Transport::link_session`]: broker_cluster::net::Transport::link_session
    pub fn home_session(&self) -> Option<u64> {
        let o = self.remote.as_ref()?;
        o.cluster
            .transport()?
            .link_session(o.homes.pick(&o.cluster))
    }

    /// RabbitMQ's 404 for a durable queue whose node is down.
    fn home_down(&self, home: &str) -> AmqpError {
        AmqpError::not_found(format!(
            "home node '{home}' of durable queue '{}' in vhost '{}' is down or inaccessible",
            self.name, self.vhost_name
        ))
    }

    /// Sends a note to the queue's home (settles, a closed channel). Returns false for
    /// a local queue.
    pub(super) fn note_remote(&self, make: impl FnOnce(String, String) -> Note) -> bool {
        let Some(o) = &self.remote else {
            return false;
        };
        o.note(make(self.vhost_name.to_string(), self.name.to_string()));
        true
    }

    /// The queue's vhost and name, as requests carry them.
    fn names(&self) -> (String, String) {
        (self.vhost_name.to_string(), self.name.to_string())
    }

    /// Asks the queue's home; a home that is down or does not answer is RabbitMQ's 404.
    fn ask_home(
        &self,
        req: OpReq,
    ) -> impl std::future::Future<Output = Result<OpReply, AmqpError>> + 'static {
        let target = self.remote.as_ref().map(|o| {
            (
                o.cluster.clone(),
                o.homes.pick(&o.cluster),
                o.notes_sent(NOTES_WAIT),
            )
        });
        let down = self.home.as_deref().map(|h| self.home_down(h));
        async move {
            let (cluster, home, notes_sent) =
                target.ok_or_else(|| AmqpError::internal("not a remote queue"))?;
            let down = down.unwrap_or_else(|| AmqpError::internal("not a remote queue"));
            let payload = wire::encode(&req).map_err(AmqpError::internal)?;
            let net = cluster.transport().cloned().ok_or(down.clone())?;
            let reply = cluster
                .run(async move {
                    // after this channel's settles, as one node orders them
                    notes_sent.await;
                    net.call(home, OP_SERVICE, payload).await
                })
                .await
                .ok_or_else(|| AmqpError::internal("the cluster runtime is gone"))?;
            let reply = match reply {
                Ok(r) => r,
                Err(NetError::Remote { text, .. }) => return Err(AmqpError::internal(text)),
                Err(_) => return Err(down),
            };
            match wire::decode::<OpReply>(&reply).map_err(AmqpError::internal)? {
                OpReply::Failed { code, text } => Err(AmqpError::new(
                    broker_core::ReplyCode::from_code(code),
                    text,
                )),
                r => Ok(r),
            }
        }
    }

    /// basic.get at the queue's home for channel `key` of this node: the message's id
    /// there, whether it was delivered before, the message and the ready count after it.
    pub fn remote_get(
        &self,
        key: ChannelKey,
        no_ack: bool,
    ) -> impl std::future::Future<Output = Result<Option<RemoteGot>, AmqpError>> + 'static {
        let (vhost, queue) = self.names();
        let ask = self.ask_home(OpReq::Get {
            vhost,
            queue,
            connection: key.connection,
            channel: key.channel,
            no_ack,
        });
        async move {
            match ask.await? {
                OpReply::Got {
                    id,
                    redelivered,
                    remaining,
                    record,
                } => {
                    let mut m = broker_core::store::decode_message_shared(&record.into(), 0)
                        .map_err(|e| AmqpError::internal(e.to_string()))?;
                    m.persist_id = None;
                    Ok(Some((id, redelivered, Arc::new(m), remaining)))
                }
                _ => Ok(None),
            }
        }
    }

    /// The id of the queue's home node (the member in use, for a quorum queue), for a
    /// queue of another node.
    pub fn home_id(&self) -> Option<broker_cluster::NodeId> {
        self.remote.as_ref().map(|o| o.homes.pick(&o.cluster))
    }

    /// basic.consume at the queue's home for channel `key` of this node: the home adds
    /// a proxy consumer that sends the deliveries here (`broker/remote_consume.rs`).
    pub fn remote_consume(
        &self,
        key: ChannelKey,
        tag: &str,
        (no_ack, exclusive): (bool, bool),
        priority: i64,
        prefetch: u32,
    ) -> impl std::future::Future<Output = Result<(), AmqpError>> + 'static {
        let (vhost, queue) = self.names();
        let ask = self.ask_home(OpReq::Consume {
            vhost,
            queue,
            connection: key.connection,
            channel: key.channel,
            tag: tag.to_owned(),
            no_ack,
            exclusive,
            priority,
            prefetch,
        });
        async move { count(ask.await?).map(|_| ()) }
    }

    /// basic.cancel at the queue's home of a consumer of channel `key` of this node.
    pub fn remote_cancel(
        &self,
        key: ChannelKey,
        tag: &str,
    ) -> impl std::future::Future<Output = Result<(), AmqpError>> + 'static {
        let (vhost, queue) = self.names();
        let ask = self.ask_home(OpReq::Cancel {
            vhost,
            queue,
            connection: key.connection,
            channel: key.channel,
            tag: tag.to_owned(),
        });
        async move { count(ask.await?).map(|_| ()) }
    }

    /// queue.purge at the queue's home: how many ready messages went.
    pub fn remote_purge(
        &self,
    ) -> impl std::future::Future<Output = Result<u32, AmqpError>> + 'static {
        let (vhost, queue) = self.names();
        let ask = self.ask_home(OpReq::Purge { vhost, queue });
        async move { count(ask.await?) }
    }

    /// queue.delete's part in the queue at its home (if-unused, if-empty checked
    /// there): how many messages went with it.
    pub fn remote_delete(
        &self,
        if_unused: bool,
        if_empty: bool,
    ) -> impl std::future::Future<Output = Result<u32, AmqpError>> + 'static {
        let (vhost, queue) = self.names();
        let ask = self.ask_home(OpReq::Delete {
            vhost,
            queue,
            if_unused,
            if_empty,
        });
        async move { count(ask.await?) }
    }

    /// The ready messages and consumers queue.declare-ok reports, from the home.
    pub fn remote_stats(
        &self,
    ) -> impl std::future::Future<Output = Result<(u32, u32), AmqpError>> + 'static {
        let (vhost, queue) = self.names();
        let ask = self.ask_home(OpReq::Stats { vhost, queue });
        async move {
            match ask.await? {
                OpReply::Stats { ready, consumers } => Ok((ready, consumers)),
                r => Err(AmqpError::internal(format!("unexpected answer {r:?}"))),
            }
        }
    }
}

impl QueueEntry {
    /// The counts the management API shows, from the queue's home (a quorum queue's
    /// member), within `wait`.
    pub fn remote_info(
        &self,
        wait: std::time::Duration,
    ) -> impl std::future::Future<Output = Result<wire::RemoteInfo, AmqpError>> + 'static {
        let (vhost, queue) = self.names();
        let ask = self.ask_home(OpReq::Info { vhost, queue });
        async move {
            match tokio::time::timeout(wait, ask).await {
                Ok(Ok(OpReply::Info(i))) => Ok(i),
                Ok(Ok(r)) => Err(AmqpError::internal(format!("unexpected answer {r:?}"))),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(AmqpError::internal(
                    "the queue's home did not answer in time",
                )),
            }
        }
    }
}

impl QueueEntry {
    /// A browse at the queue's home (a quorum queue's member): copies of ready
    /// messages from `offset`, the queue unchanged.
    pub fn remote_peek(
        &self,
        offset: usize,
        count: usize,
    ) -> impl std::future::Future<Output = Result<super::Peeked, AmqpError>> + 'static {
        let (vhost, queue) = self.names();
        let ask = self.ask_home(OpReq::Peek {
            vhost,
            queue,
            offset: offset as u64,
            count: u32::try_from(count).unwrap_or(u32::MAX),
        });
        async move {
            match ask.await? {
                OpReply::Peeked { total, items } => {
                    let mut out = Vec::with_capacity(items.len());
                    for d in items {
                        let mut m = broker_core::store::decode_message_shared(&d.record.into(), 0)
                            .map_err(|e| AmqpError::internal(e.to_string()))?;
                        m.persist_id = None;
                        out.push((d.redelivered, Arc::new(m)));
                    }
                    Ok(super::Peeked { total, items: out })
                }
                r => Err(AmqpError::internal(format!("unexpected answer {r:?}"))),
            }
        }
    }
}

/// What basic.get got at the home: the message's id there, whether it was delivered
/// before, the message, and the ready count after it.
pub type RemoteGot = (u64, bool, Arc<Message>, u32);

fn count(r: OpReply) -> Result<u32, AmqpError> {
    match r {
        OpReply::Count(n) => Ok(n),
        r => Err(AmqpError::internal(format!("unexpected answer {r:?}"))),
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
