//! basic.consume on a classic queue of another node (docs/design/cluster.md §6).
//!
//! At the queue's home a consumer of another node is a proxy in the queue's consumer
//! list ([`Proxy`]): an actor with the consumer's tag, no-ack and exclusive flags,
//! priority, and a flow gate sized by the consuming channel's prefetch. The queue
//! delivers to it as to a local channel; the proxy sends the deliveries to the
//! consumer's node in order, one batch at a time, as calls ([`wire::CONSUMER_SERVICE`])
//! answered once the consumer's channel has written them: the gate's socket credit is
//! released only then, so what is in flight is bounded by the credit, and its prefetch
//! credit only when the ack comes back as a settle note ([`settled`]). The proxy is
//! known under the channel's proxy key, so the channel's close, and the loss of the link
//! to its node, remove it and requeue its unacked (broker/remote.rs).
//!
//! On the consumer's node a [`Registry`] maps each channel with such consumers to its
//! actor: deliveries go to it ([`RemoteDeliver`]), and a task cancels (basic.cancel) the
//! consumers of a home whose link went down, as RabbitMQ cancels the consumers of a
//! queue whose node is gone. Each consumer keeps the link's session it was registered
//! under, so a link that dropped and came back between two looks cancels it too (the
//! home requeued what it had sent, and forgot its proxy). Their unacked deliveries stay on the channel: acks of them
//! go to a home that ignores them (the ids carry its run's epoch), as RabbitMQ ignores
//! acks for a dead queue.

use crate::broker::flow::{ChannelGate, ConsumerGate};
use crate::broker::queue::remote_wire::{self as wire, Delivered, OpReply, ToConsumer};
use crate::broker::queue::{ConsumerCancelled, ConsumerHandle, DeliverBatch, QueueEntry};
use crate::broker::runtime::Runtime;
use actix::prelude::*;
use broker_cluster::net::Transport;
use broker_cluster::NodeId;
use broker_core::names::ChannelKey;
use broker_core::queue::Consumer;
use broker_core::{AmqpError, Message};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// How often the consumer's node looks at the links to the homes of its consumers (a
/// loss is not missed between looks: sessions are compared, not up or down).
const LINK_CHECK: Duration = Duration::from_millis(250);

/// Gates of proxies holding unacked deliveries, by (node, vhost, queue): per message
/// id, the proxy's channel key and gate (given back when the settle note comes).
pub type Gates = Arc<Mutex<HashMap<(NodeId, String, String), HashMap<u64, Held>>>>;

/// An unacked delivery of a proxy: its channel key and gate.
type Held = (ChannelKey, Arc<ConsumerGate>);

/// What [`OpReq::Consume`](wire::OpReq::Consume) asks for.
pub struct ConsumeReq {
    /// The queue's vhost.
    pub vhost: String,
    /// The queue.
    pub queue: String,
    /// The proxy key of the consuming channel.
    pub key: ChannelKey,
    /// Its connection number on its node.
    pub connection: u64,
    /// Consumer tag.
    pub tag: String,
    /// Settled on delivery.
    pub no_ack: bool,
    /// Exclusive consumer.
    pub exclusive: bool,
    /// `x-priority`.
    pub priority: i64,
    /// Per-consumer prefetch.
    pub prefetch: u32,
}

/// Adds a proxy consumer for channel `req.key` of node `from` to queue `q`.
pub async fn consume(
    rt: &Runtime,
    net: Transport,
    from: NodeId,
    q: Arc<QueueEntry>,
    req: ConsumeReq,
    gates: Gates,
) -> Result<OpReply, AmqpError> {
    let gate = Arc::new(ConsumerGate::new(
        req.prefetch,
        req.no_ack,
        Arc::new(ChannelGate::new(rt.node.consumers.clone())),
    ));
    let (tx, rx) = mpsc::unbounded_channel();
    let (connection, channel) = (req.connection, req.key.channel);
    let target = Target {
        net,
        to: from,
        vhost: req.vhost.clone(),
        queue: req.queue.clone(),
        connection,
        channel,
        tag: req.tag.clone(),
    };
    tokio::spawn(send_loop(target, rx));
    let proxy = Proxy {
        from,
        key: req.key,
        vhost: req.vhost,
        queue: req.queue,
        gates,
        tx,
    };
    let addr = Proxy::start_in_arbiter(&rt.node.next_arbiter(), |_| proxy);
    let consumer = Consumer {
        channel: req.key,
        tag: req.tag.into(),
        no_ack: req.no_ack,
        exclusive: req.exclusive,
        priority: req.priority,
        data: ConsumerHandle {
            deliver: addr.clone().recipient(),
            cancel: addr.recipient(),
            gate,
        },
    };
    q.consume(consumer, &Default::default())
        .await
        .map_err(|_| AmqpError::internal("queue unavailable"))??;
    Ok(OpReply::Count(0))
}

/// The gates of settled deliveries of proxies of node `from`, to give their prefetch
/// credit back with the settle ([`crate::broker::queue::SettleReleasing`]).
pub fn settled(
    gates: &Gates,
    from: NodeId,
    vhost: &str,
    queue: &str,
    ids: &[u64],
) -> Vec<Arc<ConsumerGate>> {
    let mut g = lock(gates);
    let Some(held) = g.get_mut(&(from, vhost.to_owned(), queue.to_owned())) else {
        return Vec::new();
    };
    ids.iter()
        .filter_map(|id| held.remove(id).map(|(_, gate)| gate))
        .collect()
}

/// Forgets the unacked deliveries of a closed channel (the queue requeues them).
pub fn channel_closed(gates: &Gates, from: NodeId, key: ChannelKey) {
    for ((node, _, _), held) in lock(gates).iter_mut() {
        if *node == from {
            held.retain(|_, (k, _)| *k != key);
        }
    }
}

/// Forgets everything of a node whose link went down.
pub fn node_down(gates: &Gates, node: NodeId) {
    lock(gates).retain(|(n, _, _), _| *n != node);
}

/// Where a proxy's deliveries go.
struct Target {
    net: Transport,
    to: NodeId,
    vhost: String,
    queue: String,
    connection: u64,
    channel: u16,
    tag: String,
}

/// What a proxy hands its sending task.
enum Out {
    /// Deliveries, and the credit units to release per gate once written.
    Batch(
        Vec<Delivered>,
        Vec<(Arc<ConsumerGate>, Arc<QueueEntry>, u32)>,
    ),
    /// The queue cancelled the consumer.
    Cancel,
}

/// Sends a proxy's deliveries in order, one call at a time. The queue gives the proxy
/// no more than its gate's credit, and the credit comes back after each call, so the
/// channel holds at most that much.
async fn send_loop(t: Target, mut rx: mpsc::UnboundedReceiver<Out>) {
    while let Some(out) = rx.recv().await {
        let (msg, release) = match out {
            Out::Batch(messages, release) => (
                ToConsumer::Deliver {
                    vhost: t.vhost.clone(),
                    queue: t.queue.clone(),
                    connection: t.connection,
                    channel: t.channel,
                    tag: t.tag.clone(),
                    messages,
                },
                release,
            ),
            Out::Cancel => (
                ToConsumer::Cancel {
                    connection: t.connection,
                    channel: t.channel,
                    tag: t.tag.clone(),
                },
                Vec::new(),
            ),
        };
        match wire::encode(&msg) {
            Ok(b) => {
                if let Err(e) = t.net.call(t.to, wire::CONSUMER_SERVICE, b).await {
                    // the link's loss requeues what the channel held (broker/remote.rs)
                    tracing::debug!("deliveries to a consumer of another node not sent: {e}");
                }
            }
            Err(e) => tracing::error!("{e}"),
        }
        for (g, q, n) in release {
            if g.written_n(n) {
                q.kick();
            }
        }
    }
}

/// A consumer of another node, in the queue's consumer list at the home.
struct Proxy {
    from: NodeId,
    key: ChannelKey,
    vhost: String,
    queue: String,
    gates: Gates,
    tx: mpsc::UnboundedSender<Out>,
}

impl Actor for Proxy {
    type Context = Context<Self>;
}

impl Handler<DeliverBatch> for Proxy {
    type Result = ();
    fn handle(&mut self, b: DeliverBatch, _: &mut Context<Self>) {
        let mut messages = Vec::with_capacity(b.0.len());
        let mut release: Vec<(Arc<ConsumerGate>, Arc<QueueEntry>, u32)> = Vec::new();
        {
            let mut gates = lock(&self.gates);
            let held = gates
                .entry((self.from, self.vhost.clone(), self.queue.clone()))
                .or_default();
            for d in b.0 {
                if !d.no_ack {
                    held.insert(d.entry.id, (self.key, d.gate.clone()));
                }
                messages.push(Delivered {
                    id: crate::broker::remote_ids::tag(d.entry.id),
                    redelivered: d.entry.redelivered,
                    record: broker_core::store::encode_message(&d.msg),
                });
                match release.last_mut() {
                    Some((g, _, n)) if Arc::ptr_eq(g, &d.gate) => *n += d.units,
                    _ => release.push((d.gate, d.queue, d.units)),
                }
            }
        }
        if let Err(mpsc::error::SendError(Out::Batch(_, release))) =
            self.tx.send(Out::Batch(messages, release))
        {
            for (g, q, n) in release {
                if g.written_n(n) {
                    q.kick();
                }
            }
        }
    }
}

impl Handler<ConsumerCancelled> for Proxy {
    type Result = ();
    fn handle(&mut self, _: ConsumerCancelled, _: &mut Context<Self>) {
        let _ = self.tx.send(Out::Cancel);
    }
}

/// Deliveries from a queue of another node to a consumer of this channel.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoteDeliver {
    /// The queue entry (of another node).
    pub queue: Arc<QueueEntry>,
    /// The consumer.
    pub tag: Arc<str>,
    /// Whether it is no-ack.
    pub no_ack: bool,
    /// Each message's id at the home, redelivered flag, and the message.
    pub messages: Vec<(u64, bool, Arc<Message>)>,
    /// Answered (or dropped) once they are in the connection's write buffer and it is
    /// below its high mark: the home's credit comes back only then.
    pub written: tokio::sync::oneshot::Sender<()>,
}

/// A consumer of this node on a queue of another.
struct Remote {
    tag: Arc<str>,
    home: NodeId,
    /// The link's session to the home when the consumer was registered.
    session: Option<u64>,
    queue: Arc<QueueEntry>,
    no_ack: bool,
}

/// A channel of this node with consumers on queues of other nodes.
struct Reg {
    deliver: Recipient<RemoteDeliver>,
    cancel: Recipient<ConsumerCancelled>,
    consumers: Vec<Remote>,
}

/// The channels of this node consuming from queues of other nodes.
#[derive(Default)]
pub struct Registry(Mutex<HashMap<ChannelKey, Reg>>);

/// This node's registry.
pub fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::default)
}

impl Registry {
    /// Registers consumer `tag` of channel `key` on `queue` (home `home`), before
    /// basic.consume goes to the home (its deliveries may come before the answer).
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &self,
        key: ChannelKey,
        deliver: Recipient<RemoteDeliver>,
        cancel: Recipient<ConsumerCancelled>,
        tag: Arc<str>,
        home: NodeId,
        queue: Arc<QueueEntry>,
        no_ack: bool,
    ) {
        let session = queue.home_session();
        lock(&self.0)
            .entry(key)
            .or_insert_with(|| Reg {
                deliver,
                cancel,
                consumers: Vec::new(),
            })
            .consumers
            .push(Remote {
                tag,
                home,
                session,
                queue,
                no_ack,
            });
    }

    /// Consumer `tag` of channel `key` is gone.
    pub fn remove(&self, key: ChannelKey, tag: &str) {
        let mut r = lock(&self.0);
        if let Some(reg) = r.get_mut(&key) {
            reg.consumers.retain(|c| &*c.tag != tag);
            if reg.consumers.is_empty() {
                r.remove(&key);
            }
        }
    }

    /// Channel `key` closed.
    pub fn forget(&self, key: ChannelKey) {
        lock(&self.0).remove(&key);
    }
}

/// Takes a home's deliveries or cancel for a consumer of this node; answers once the
/// channel has them.
pub async fn to_consumer(payload: Bytes) -> Result<Bytes, String> {
    match wire::decode::<ToConsumer>(&payload)? {
        ToConsumer::Deliver {
            connection,
            channel,
            tag,
            messages,
            ..
        } => {
            let key = ChannelKey {
                connection,
                channel,
            };
            let found = lock(&registry().0).get(&key).and_then(|r| {
                let c = r.consumers.iter().find(|c| *c.tag == *tag)?;
                Some((r.deliver.clone(), c.queue.clone(), c.tag.clone(), c.no_ack))
            });
            // no such consumer: its channel closed, and the home requeues what it holds
            let Some((deliver, queue, tag, no_ack)) = found else {
                return Ok(Bytes::new());
            };
            let mut msgs = Vec::with_capacity(messages.len());
            for d in messages {
                let mut m = broker_core::store::decode_message_shared(&d.record.into(), 0)
                    .map_err(|e| e.to_string())?;
                m.persist_id = None;
                msgs.push((d.id, d.redelivered, Arc::new(m)));
            }
            let (written, done) = tokio::sync::oneshot::channel();
            deliver.do_send(RemoteDeliver {
                queue,
                tag,
                no_ack,
                messages: msgs,
                written,
            });
            // an error: the channel is gone (its close requeues at the home)
            let _ = done.await;
        }
        ToConsumer::Cancel {
            connection,
            channel,
            tag,
        } => {
            let key = ChannelKey {
                connection,
                channel,
            };
            let cancel = lock(&registry().0).get(&key).map(|r| r.cancel.clone());
            registry().remove(key, &tag);
            if let Some(c) = cancel {
                c.do_send(ConsumerCancelled {
                    consumer_tag: tag.into(),
                });
            }
        }
    }
    Ok(Bytes::new())
}

/// Cancels the consumers of homes whose link is down, or is on another connection than
/// the one they were registered under (basic.cancel to the client).
pub async fn watch_homes(net: Transport) {
    loop {
        tokio::time::sleep(LINK_CHECK).await;
        let mut gone = Vec::new();
        {
            let mut r = lock(&registry().0);
            for reg in r.values_mut() {
                reg.consumers.retain(|c| {
                    let now = net.link_session(c.home);
                    let up = now.is_some() && now == c.session;
                    if !up {
                        gone.push((reg.cancel.clone(), c.tag.clone()));
                    }
                    up
                });
            }
            r.retain(|_, reg| !reg.consumers.is_empty());
        }
        for (cancel, consumer_tag) in gone {
            cancel.do_send(ConsumerCancelled { consumer_tag });
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
