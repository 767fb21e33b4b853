//! The home node's side of its classic queues used from other nodes
//! (docs/design/cluster.md §6): the services `broker/queue/remote/` calls. A member
//! of a quorum queue is the home of the nodes that are no member of it: it serves
//! their requests through its member as it serves its own clients (publishes:
//! `remote_quorum.rs`).
//!
//! - Publish batches ([`wire::PUBLISH_SERVICE`]): each message goes through the publish
//!   path's own split and store (`publish.rs`: a full reject-publish queue refuses it,
//!   a persistent one is written for a durable queue) and into the queue's inbox; the
//!   answer waits for the fsync that covers the batch, so the publisher's confirm on
//!   the other node follows the commit. A queue over its credit holds the batch back
//!   (the sender's inbox then fills and its publishers pause, as they would here).
//! - Requests ([`wire::OP_SERVICE`]): basic.get, queue.purge, queue.delete's part in
//!   the queue, and declare-ok's counts, answered with RabbitMQ's codes and texts.
//! - Notes ([`wire::NOTE_SERVICE`]): settles of messages got from another node, and
//!   the close of its channel. A message got without no-ack is held at the home under
//!   the asking channel's proxy key ([`wire::proxy_key`]); when the link to that node
//!   goes (its node stopped, froze or was cut off: the transport's link timeout), every
//!   such channel counts as closed, so the messages come back to the queue, as RabbitMQ
//!   requeues a dead channel's. What is held is tagged with the link's session when it
//!   was taken, so a link that dropped and came back between two looks is a loss too
//!   (deliveries sent on the dropped connection never reached the node).
//!   The ids handed out carry this run's epoch ([`tag`]): a settle sent to an earlier
//!   run of the node (the message came back redelivered when it restarted) is ignored
//!   rather than settling whatever the restarted queue numbers so.

use crate::broker::publish::Routed;
use crate::broker::queue::remote_wire::{
    self as wire, Note, OpReply, OpReq, PublishReply, RemoteInfo,
};
use crate::broker::queue::{self, QueueEntry};
use crate::broker::remote_consume::{self, Gates};
use crate::broker::remote_ids::{tag, untag};
use crate::broker::runtime::Runtime;
use broker_cluster::net::{BoxFut, Service, Transport};
use broker_cluster::NodeId;
use broker_core::names::ChannelKey;
use broker_core::AmqpError;
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How long a publish batch waits at most for a queue over its credit to take in what
/// it has before the batch goes in anyway (the queue is then slow, not stuck).
const CREDIT_WAIT: Duration = Duration::from_secs(5);

/// How often the links of nodes holding messages got from here are looked at.
const LINK_CHECK: Duration = Duration::from_millis(250);

/// Channels of other nodes holding unacked messages of queues here, by node.
type Held = Arc<Mutex<HashMap<NodeId, NodeHeld>>>;

/// The (vhost, queue, proxy key) of a channel of another node holding messages here.
type HeldChannel = (String, String, ChannelKey);

/// What the channels of one node hold here, and the session of the link to that node
/// ([`Transport::link_session`]) they took it under.
struct NodeHeld {
    session: Option<u64>,
    channels: HashSet<HeldChannel>,
}

/// Takes out what node `n`'s channels hold if the link to it is not in the session they
/// took it under (it went down since, maybe up again), and forgets the gates of its
/// proxies: the caller requeues (`requeue`). Called under the `Held` lock, so a request
/// of the node's new session cannot slip its gates in between.
fn take_lost(
    h: &mut HashMap<NodeId, NodeHeld>,
    gates: &Gates,
    n: NodeId,
    now: Option<u64>,
) -> Option<HashSet<HeldChannel>> {
    let lost = h.get(&n).is_some_and(|e| now.is_none() || e.session != now);
    if !lost {
        return None;
    }
    remote_consume::node_down(gates, n);
    h.remove(&n).map(|e| e.channels)
}

/// Closes the lost channels at their queues: their unacked messages come back.
fn requeue(rt: &Runtime, lost: HashSet<HeldChannel>) {
    for (vhost, queue, key) in lost {
        if let Ok(q) = local_queue(rt, &vhost, &queue) {
            q.channel_closed(key);
        }
    }
}

/// Records that a channel of node `from` holds messages of a queue here (before it is
/// given any), under the link's session now; what the node held under an earlier one
/// is requeued first.
fn hold(
    rt: &Runtime,
    (held, gates, net): (&Held, &Gates, &Transport),
    from: NodeId,
    ch: HeldChannel,
) {
    let now = net.link_session(from);
    let lost = {
        let mut h = lock(held);
        let lost = take_lost(&mut h, gates, from, now);
        h.entry(from)
            .or_insert_with(|| NodeHeld {
                session: now,
                channels: HashSet::new(),
            })
            .channels
            .insert(ch);
        lost
    };
    if let Some(lost) = lost {
        requeue(rt, lost);
    }
}

/// Registers the services on `net` and starts the task that requeues the messages of
/// nodes whose link went down; runs on the cluster runtime.
pub fn register(net: &Transport, rt: Weak<Runtime>) {
    let held: Held = Default::default();
    let gates: Gates = Default::default();
    let home = |kind| {
        Arc::new(Home {
            rt: rt.clone(),
            held: held.clone(),
            gates: gates.clone(),
            net: net.clone(),
            kind,
        })
    };
    net.add_service(wire::PUBLISH_SERVICE, home(Kind::Publish));
    net.add_service(wire::OP_SERVICE, home(Kind::Op));
    net.add_service(wire::NOTE_SERVICE, home(Kind::Note));
    net.add_service(wire::CONSUMER_SERVICE, home(Kind::Consumer));
    tokio::spawn(watch_links(net.clone(), rt.clone(), held, gates));
    tokio::spawn(remote_consume::watch_homes(net.clone()));
}

/// Which service a [`Home`] answers.
#[derive(Clone, Copy)]
enum Kind {
    Publish,
    Op,
    Note,
    /// Deliveries to consumers of this node (`remote_consume.rs`).
    Consumer,
}

/// One of the services, with what they share.
struct Home {
    rt: Weak<Runtime>,
    held: Held,
    gates: Gates,
    net: Transport,
    kind: Kind,
}

impl Service for Home {
    fn handle(&self, from: NodeId, payload: Bytes) -> BoxFut<Result<Bytes, String>> {
        let (rt, held, kind) = (self.rt.clone(), self.held.clone(), self.kind);
        let (gates, net) = (self.gates.clone(), self.net.clone());
        Box::pin(async move {
            if let Kind::Consumer = kind {
                return remote_consume::to_consumer(payload).await;
            }
            let rt = rt.upgrade().ok_or("the broker is stopping")?;
            match kind {
                Kind::Publish => wire::encode(&take_publishes(&rt, &payload).await),
                Kind::Op => {
                    let req: OpReq = wire::decode(&payload)?;
                    let reply = match op(&rt, from, req, (&held, &gates, net)).await {
                        Ok(r) => r,
                        Err(e) => OpReply::Failed {
                            code: e.code.code(),
                            text: e.text,
                        },
                    };
                    wire::encode(&reply)
                }
                Kind::Note => {
                    note(&rt, from, wire::decode(&payload)?, (&held, &gates));
                    Ok(Bytes::new())
                }
                Kind::Consumer => Ok(Bytes::new()),
            }
        })
    }
}

/// The local queue `name` of `vhost`, or RabbitMQ's 404.
fn local_queue(rt: &Runtime, vhost: &str, name: &str) -> Result<Arc<QueueEntry>, AmqpError> {
    rt.vhost(vhost)
        .and_then(|v| v.queue(name))
        .filter(|q| q.is_local() && !q.deleted.load(std::sync::atomic::Ordering::Acquire))
        .ok_or_else(|| AmqpError::not_found(format!("no queue '{name}' in vhost '{vhost}'")))
}

/// [`local_queue`], looked for again once this node applied what the metadata group
/// committed when it is not found: a node that declared the queue a moment ago may ask
/// before this one applied the record.
async fn caught_up_queue(
    rt: &Runtime,
    vhost: &str,
    name: &str,
) -> Result<Arc<QueueEntry>, AmqpError> {
    let found = local_queue(rt, vhost, name);
    match (found, rt.vhost(vhost)) {
        (Err(_), Some(v)) if v.catch_up().await => local_queue(rt, vhost, name),
        (found, _) => found,
    }
}

/// Enqueues a publish batch; answers once the persistent ones are fsynced.
async fn take_publishes(rt: &Runtime, payload: &Bytes) -> PublishReply {
    let (head, msgs) = match wire::decode_publish(payload) {
        Ok(b) => b,
        Err(e) => return PublishReply::Failed(e),
    };
    let q = match caught_up_queue(rt, &head.vhost, &head.queue).await {
        Ok(q) if q.quorum => {
            // this node is a member: its shell commits them (`remote_quorum.rs`)
            let refused = crate::broker::remote_quorum::take(rt, &q, msgs).await;
            return PublishReply::Taken { refused };
        }
        Ok(q) => q,
        Err(e) => return PublishReply::Failed(e.text),
    };
    let deadline = tokio::time::Instant::now() + CREDIT_WAIT;
    while q.over_credit() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let store = rt.node.store.as_ref();
    let since = store.map_or(0, |s| s.messages.mark());
    let mut refused = Vec::new();
    let mut stored = false;
    let one: Arc<[Arc<QueueEntry>]> = Arc::from(vec![q.clone()]);
    for (i, mut msg) in msgs.into_iter().enumerate() {
        msg.persist_id = None;
        msg.arrival_ms = crate::broker::runtime::now_ms();
        let routed = Routed::new(
            one.clone(),
            msg.properties.headers().as_ref(),
            msg.body.len(),
        );
        if routed.refused() {
            refused.push(i as u32);
        }
        match routed.store(store, &mut msg) {
            Ok(s) => stored |= s,
            Err(e) => {
                tracing::error!(queue = %q.name, "cannot store a message from another node: {e}");
                refused.push(i as u32);
                continue;
            }
        }
        routed.deliver(&Arc::new(msg), |_| {});
    }
    if let (true, Some(s)) = (stored, store) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        s.flusher.request(since, s.messages.mark(), move |res| {
            let _ = tx.send(res);
        });
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return PublishReply::Failed(format!("store commit failed: {e}")),
            Err(_) => return PublishReply::Failed("the flusher stopped".into()),
        }
    }
    PublishReply::Taken { refused }
}

/// Answers a request of node `from`.
async fn op(
    rt: &Runtime,
    from: NodeId,
    req: OpReq,
    (held, gates, net): (&Held, &Gates, Transport),
) -> Result<OpReply, AmqpError> {
    let gone = |_| AmqpError::internal("queue unavailable");
    match req {
        OpReq::Get {
            vhost,
            queue,
            connection,
            channel,
            no_ack,
        } => {
            let q = caught_up_queue(rt, &vhost, &queue).await?;
            let key = wire::proxy_key(from, connection, channel);
            if !no_ack {
                hold(rt, (held, gates, &net), from, (vhost, queue, key));
            }
            let got = q.get(key, no_ack).await.map_err(gone)?;
            Ok(match got {
                None => OpReply::Empty,
                Some((entry, msg, remaining)) => OpReply::Got {
                    id: tag(entry.id),
                    redelivered: entry.redelivered,
                    remaining,
                    record: broker_core::store::encode_message(&msg),
                },
            })
        }
        OpReq::Consume {
            vhost,
            queue,
            connection,
            channel,
            tag,
            no_ack,
            exclusive,
            priority,
            prefetch,
        } => {
            let q = caught_up_queue(rt, &vhost, &queue).await?;
            let key = wire::proxy_key(from, connection, channel);
            hold(
                rt,
                (held, gates, &net),
                from,
                (vhost.clone(), queue.clone(), key),
            );
            let req = remote_consume::ConsumeReq {
                vhost,
                queue,
                key,
                connection,
                tag,
                no_ack,
                exclusive,
                priority,
                prefetch,
            };
            remote_consume::consume(rt, net, from, q, req, gates.clone()).await
        }
        OpReq::Cancel {
            vhost,
            queue,
            connection,
            channel,
            tag,
        } => {
            let q = caught_up_queue(rt, &vhost, &queue).await?;
            let key = wire::proxy_key(from, connection, channel);
            q.cancel(key, tag.into()).await.map_err(gone)?;
            Ok(OpReply::Count(0))
        }
        OpReq::Purge { vhost, queue } => {
            let q = caught_up_queue(rt, &vhost, &queue).await?;
            Ok(OpReply::Count(q.purge().await.map_err(gone)?))
        }
        OpReq::Delete {
            vhost,
            queue,
            if_unused,
            if_empty,
        } => match caught_up_queue(rt, &vhost, &queue).await {
            Ok(q) => Ok(OpReply::Count(
                q.delete(if_unused, if_empty).await.map_err(gone)??,
            )),
            // deleting a queue that is gone already succeeds, as in RabbitMQ
            Err(_) => Ok(OpReply::Count(0)),
        },
        OpReq::Stats { vhost, queue } => {
            let q = caught_up_queue(rt, &vhost, &queue).await?;
            let (ready, consumers, _) = q
                .addr
                .send(queue::Stats { declare: true })
                .await
                .map_err(gone)?;
            Ok(OpReply::Stats { ready, consumers })
        }
        OpReq::Peek {
            vhost,
            queue,
            offset,
            count,
        } => {
            let q = caught_up_queue(rt, &vhost, &queue).await?;
            let offset = usize::try_from(offset).unwrap_or(usize::MAX);
            let p = q.peek(offset, count as usize).await?;
            Ok(OpReply::Peeked {
                total: p.total,
                items: p
                    .items
                    .iter()
                    .map(|(redelivered, m)| wire::Delivered {
                        id: 0,
                        redelivered: *redelivered,
                        record: broker_core::store::encode_message(m),
                    })
                    .collect(),
            })
        }
        OpReq::Info { vhost, queue } => {
            let q = caught_up_queue(rt, &vhost, &queue).await?;
            let i = q.info().await.map_err(gone)?;
            Ok(OpReply::Info(RemoteInfo {
                ready: i.ready,
                unacked: i.unacked,
                bytes: i.bytes,
                consumers: i.consumers.len() as u64,
                leader: i.leader,
                delayed: i.delayed,
            }))
        }
    }
}

/// Carries out a note of node `from`.
fn note(rt: &Runtime, from: NodeId, n: Note, (held, gates): (&Held, &Gates)) {
    match n {
        Note::Settle {
            vhost,
            queue,
            kind,
            ids,
        } => {
            let ids: Vec<u64> = ids.into_iter().filter_map(untag).collect();
            // a proxy's prefetch credit comes back in the queue's handling of the
            // settle: released here, a delivery pass of the queue in between could
            // give the next message before a requeued one is back
            let release = remote_consume::settled(gates, from, &vhost, &queue, &ids);
            match (local_queue(rt, &vhost, &queue), ids.is_empty()) {
                (Ok(q), false) => q.addr.do_send(queue::SettleReleasing {
                    settle: match kind {
                        0 => queue::Settle::Ack(ids),
                        1 => queue::Settle::Requeue(ids),
                        3 => queue::Settle::GiveBack(ids),
                        _ => queue::Settle::Discard(ids),
                    },
                    release,
                }),
                _ => release.iter().for_each(|g| {
                    g.settled();
                }),
            }
        }
        Note::ChannelClosed {
            vhost,
            queue,
            connection,
            channel,
        } => {
            let key = wire::proxy_key(from, connection, channel);
            remote_consume::channel_closed(gates, from, key);
            if let Some(e) = lock(held).get_mut(&from) {
                e.channels.remove(&(vhost.clone(), queue.clone(), key));
            }
            if let Ok(q) = local_queue(rt, &vhost, &queue) {
                q.channel_closed(key);
            }
        }
    }
}

/// Requeues what the channels of a node hold once its link is down, or went down and
/// came back, since they took it.
async fn watch_links(net: Transport, rt: Weak<Runtime>, held: Held, gates: Gates) {
    loop {
        tokio::time::sleep(LINK_CHECK).await;
        let Some(rt) = rt.upgrade() else {
            return;
        };
        let lost: Vec<_> = {
            let mut h = lock(&held);
            let nodes: Vec<NodeId> = h.keys().copied().collect();
            nodes
                .into_iter()
                .filter_map(|n| take_lost(&mut h, &gates, n, net.link_session(n)))
                .collect()
        };
        for l in lost {
            requeue(&rt, l);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
