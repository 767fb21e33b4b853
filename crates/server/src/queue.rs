//! The queue actor: one per queue, owning its [`QueueState`] and delivering to consumers'
//! channels. It runs under an actix supervisor: a panic in a handler is caught, the actor
//! stops, and the supervisor restarts it empty at the same address; its consumers get
//! basic.cancel and its in-memory messages are lost (see docs/architecture.md).

use crate::channel::{ChannelActor, ConsumerCancelled, Deliver};
use crate::flow::ConsumerGate;
use crate::runtime::Runtime;
use crate::vhost::VHost;
use actix::prelude::*;
use broker_core::message::Slot;
use broker_core::names::ChannelKey;
use broker_core::queue::{Consumer, Entry, MsgId, QueueState};
use broker_core::store::MessageStore;
use broker_core::{AmqpError, Message};
use broker_wire::types::FieldTable;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Ready messages of a durable queue whose bodies stay in memory; persistent messages
/// behind them are kept as placeholders and read back from the store on delivery.
pub const PAGE_WINDOW: usize = 4096;

/// Publishes a channel may have in a queue's mailbox before its connection stops reading
/// from the socket (credit flow, as RabbitMQ's channel-to-queue credit).
pub const QUEUE_CREDIT: usize = 2000;

/// What the vhost and channels know of a queue.
pub struct QueueEntry {
    /// Name within the vhost.
    pub name: Arc<str>,
    /// Survives restarts (once durability lands).
    pub durable: bool,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// The connection that owns an exclusive queue.
    pub exclusive_owner: Option<u64>,
    /// Declared arguments.
    pub arguments: FieldTable,
    /// The actor.
    pub addr: Addr<QueueActor>,
    /// Publishes sent to the actor and not yet taken in (backpressure).
    pub inflight: AtomicUsize,
    /// Set once the queue is deleted; a stale handle then drops what it is sent.
    pub deleted: AtomicBool,
    /// Id of a durable queue in the store (prefix of its message keys).
    pub store_id: Option<u64>,
}

impl QueueEntry {
    /// Whether connection `conn` may use this queue (405 RESOURCE_LOCKED if not).
    pub fn check_access(&self, conn: u64) -> Result<(), AmqpError> {
        match self.exclusive_owner {
            Some(owner) if owner != conn => Err(Self::locked(&self.name)),
            _ => Ok(()),
        }
    }

    /// The 405 RabbitMQ answers for an exclusive queue of another connection.
    pub fn locked(name: &str) -> AmqpError {
        AmqpError::resource_locked(format!(
            "cannot obtain exclusive access to locked queue '{name}' in vhost '/'. It could be \
             originally declared on another connection or the exclusive property value does \
             not match that of the original declaration."
        ))
    }

    /// Sends a published message to the queue.
    pub fn enqueue(&self, msg: Arc<Message>) {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        self.addr.do_send(Enqueue(msg));
    }

    /// Whether publishers to this queue should pause.
    pub fn is_hot(&self) -> bool {
        self.inflight.load(Ordering::Relaxed) > QUEUE_CREDIT
    }
}

/// Reads a durable queue's stored messages: the head of the queue into memory, past the
/// window only store ids and sizes (bodies are read back as consumers catch up). Logs
/// each message lost to a damaged record, and returns the messages with their
/// delivered flag, and how many were lost.
pub fn load_stored(
    store: &dyn MessageStore,
    qid: u64,
    queue: &str,
    vhost: &str,
) -> (Vec<(Slot, bool)>, usize) {
    let mut batch = Vec::new();
    let mut damaged = 0usize;
    let res = store.for_each_in_queue(qid, PAGE_WINDOW, &mut |m| {
        let slot = match m.record {
            None => Slot::Paged {
                persist_id: m.seq,
                size: m.size,
            },
            Some(Ok(record)) => match broker_core::store::decode_message(&record, m.seq) {
                Ok(msg) => Slot::Loaded(Arc::new(msg)),
                Err(e) => {
                    damaged += 1;
                    tracing::error!(queue = %queue, seq = m.seq, "damaged message record lost: {e}");
                    return;
                }
            },
            Some(Err(e)) => {
                damaged += 1;
                tracing::error!(queue = %queue, seq = m.seq, "message lost: {e}");
                return;
            }
        };
        batch.push((slot, m.delivered));
    });
    if let Err(e) = res {
        tracing::error!(
            queue,
            recovered = batch.len(),
            "cannot read all stored messages: {e}"
        );
    }
    if damaged > 0 {
        tracing::error!(
            queue = %queue,
            vhost = %vhost,
            lost = damaged,
            recovered = batch.len(),
            "queue lost messages whose stored records are damaged or missing"
        );
    }
    (batch, damaged)
}

/// Reads a paged-out message back from the store.
fn page_in(
    store: &Option<(Arc<dyn MessageStore>, u64)>,
    persist_id: u64,
) -> Result<Arc<Message>, String> {
    let (s, qid) = store.as_ref().ok_or("the queue has no store")?;
    let record = s
        .get(*qid, persist_id)
        .map_err(|e| e.to_string())?
        .ok_or("the stored message is gone")?;
    broker_core::store::decode_message(&record, persist_id)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// How long a queue waits before it records its delivered mark in the store (so that a
/// busy queue writes it a few times a second, not once per delivery).
const MARK_DELAY: Duration = Duration::from_millis(100);

/// How the queue reaches one consumer.
#[derive(Clone)]
pub struct ConsumerHandle {
    /// The consumer's channel.
    pub channel: Addr<ChannelActor>,
    /// Its flow gate.
    pub gate: Arc<ConsumerGate>,
}

/// The queue actor.
pub struct QueueActor {
    name: Arc<str>,
    me: Weak<QueueEntry>,
    vhost: Weak<VHost>,
    runtime: Weak<Runtime>,
    state: QueueState<ConsumerHandle>,
    deleted: bool,
    /// Highest store id delivered so far (see [`MessageStore::mark_delivered`]).
    delivered_upto: u64,
    /// The delivered mark last written to the store.
    delivered_written: u64,
    /// A write of the delivered mark is scheduled.
    mark_scheduled: bool,
}

impl QueueActor {
    /// Starts a queue actor for `me` on a worker, under a supervisor.
    pub fn spawn(
        arbiter: &ArbiterHandle,
        name: Arc<str>,
        me: Weak<QueueEntry>,
        vhost: Weak<VHost>,
        runtime: Weak<Runtime>,
    ) -> Addr<QueueActor> {
        Supervisor::start_in_arbiter(arbiter, move |_| QueueActor {
            name,
            me,
            vhost,
            runtime,
            state: QueueState::default(),
            deleted: false,
            delivered_upto: 0,
            delivered_written: 0,
            mark_scheduled: false,
        })
    }

    /// Runs `f` on the state, accounting memory and catching panics. A panic stops the
    /// actor; the supervisor restarts it.
    fn guarded<R>(
        &mut self,
        ctx: &mut Context<Self>,
        f: impl FnOnce(&mut Self, &mut Context<Self>) -> R,
    ) -> Option<R> {
        let before = self.state.bytes();
        let res = catch_unwind(AssertUnwindSafe(|| f(self, ctx)));
        if self.delivered_upto > self.delivered_written && !self.mark_scheduled {
            self.mark_scheduled = true;
            ctx.run_later(MARK_DELAY, |a, _| a.write_delivered_mark());
        }
        let after = self.state.bytes();
        if let Some(rt) = self.runtime.upgrade() {
            rt.memory.adjust(before, after);
        }
        match res {
            Ok(r) => Some(r),
            Err(_) => {
                tracing::error!(queue = %self.name, "queue actor panicked; restarting it");
                ctx.stop();
                None
            }
        }
    }

    /// Notes a delivery of a stored message (an ack-mode one: a no-ack delivery is
    /// removed from the store at once).
    fn note_delivered(&mut self, e: &Entry) {
        if let Some(pid) = e.msg.persist_id() {
            self.delivered_upto = self.delivered_upto.max(pid);
        }
    }

    fn write_delivered_mark(&mut self) {
        self.mark_scheduled = false;
        if self.deleted || self.delivered_upto <= self.delivered_written {
            return;
        }
        if let Some((s, qid)) = self.stored() {
            if let Err(e) = s.mark_delivered(qid, self.delivered_upto) {
                tracing::warn!(queue = %self.name, "cannot record deliveries in the store: {e}");
            }
        }
        self.delivered_written = self.delivered_upto;
    }

    /// The message store and this queue's id in it, if the queue is durable.
    fn stored(&self) -> Option<(Arc<dyn MessageStore>, u64)> {
        let id = self.me.upgrade()?.store_id?;
        let rt = self.runtime.upgrade()?;
        Some((rt.store.as_ref()?.messages.clone(), id))
    }

    /// Removes settled persistent messages from the store.
    fn forget(&self, entries: &[Entry]) {
        let Some((store, qid)) = self.stored() else {
            return;
        };
        for e in entries {
            if let Some(pid) = e.msg.persist_id() {
                if let Err(err) = store.remove(qid, pid) {
                    tracing::error!(queue = %self.name, "cannot remove stored message: {err}");
                }
            }
        }
    }

    /// Delivers while there are messages and consumers with room.
    fn drain(&mut self) {
        let Some(me) = self.me.upgrade() else { return };
        let store = self.stored();
        loop {
            let d = self.state.next_delivery(|c| c.data.gate.try_take());
            let Some(mut d) = d else { break };
            let msg = match &d.entry.msg {
                Slot::Loaded(m) => m.clone(),
                Slot::Paged { persist_id, .. } => match page_in(&store, *persist_id) {
                    Ok(m) => {
                        d.entry.msg = Slot::Loaded(m.clone());
                        m
                    }
                    Err(e) => {
                        tracing::error!(queue = %self.name, persist_id, "a stored message could not be read back and is lost: {e}");
                        d.consumer.data.gate.undo();
                        let entry = d.entry.clone();
                        drop(d);
                        self.state.discard(&[entry.id]);
                        self.forget(std::slice::from_ref(&entry));
                        continue;
                    }
                },
            };
            let no_ack = d.consumer.no_ack;
            if !no_ack {
                if let Some(pid) = d.entry.msg.persist_id() {
                    self.delivered_upto = self.delivered_upto.max(pid);
                }
            } else if let (Some((s, qid)), Some(pid)) = (&store, d.entry.msg.persist_id()) {
                let _ = s.remove(*qid, pid);
            }
            d.consumer.data.channel.do_send(Deliver {
                queue: me.clone(),
                consumer_tag: d.consumer.tag.clone(),
                no_ack: d.consumer.no_ack,
                entry: d.entry,
                msg,
                gate: d.consumer.data.gate.clone(),
            });
        }
    }

    fn maybe_auto_delete(&mut self) {
        if self.state.had_consumer() && self.state.consumer_count() == 0 && !self.deleted {
            if let Some(me) = self.me.upgrade() {
                if me.auto_delete {
                    self.deleted = true;
                    if let Some(v) = self.vhost.upgrade() {
                        let name = self.name.clone();
                        actix::spawn(async move { v.forget_queue(&name).await });
                    }
                }
            }
        }
    }

    fn cancel_all_consumers(&mut self) {
        for c in self.state.consumers() {
            c.data.channel.do_send(ConsumerCancelled {
                consumer_tag: c.tag.clone(),
            });
        }
    }
}

impl Actor for QueueActor {
    type Context = Context<Self>;
}

impl Supervised for QueueActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.cancel_all_consumers();
        let before = self.state.bytes();
        self.state = self.state.emptied();
        // a durable queue takes its persistent messages back from the store, as after a
        // broker restart (with redelivered set for those it had delivered)
        if let Some((store, qid)) = self.stored() {
            let vhost = self
                .vhost
                .upgrade()
                .map(|v| v.name.clone())
                .unwrap_or_default();
            let (batch, _) = load_stored(&*store, qid, &self.name, &vhost);
            tracing::warn!(queue = %self.name, recovered = batch.len(), "restarted queue reloaded its stored messages");
            for (slot, delivered) in batch {
                self.state.publish_recovered(slot, delivered);
            }
        }
        if let Some(rt) = self.runtime.upgrade() {
            rt.memory.adjust(before, self.state.bytes());
        }
    }
}

/// A published message.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Enqueue(pub Arc<Message>);

/// Subscribes a consumer.
#[derive(Message)]
#[rtype(result = "Result<(), AmqpError>")]
pub struct Consume(pub Consumer<ConsumerHandle>);

/// Unsubscribes a consumer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Cancel {
    /// Its channel.
    pub channel: ChannelKey,
    /// Its tag.
    pub tag: Arc<str>,
}

/// basic.get.
#[derive(Message)]
#[rtype(result = "Option<(Entry, Arc<Message>, u32)>")]
pub struct Get {
    /// The asking channel.
    pub channel: ChannelKey,
    /// Whether the message is settled on delivery.
    pub no_ack: bool,
}

/// Settles deliveries.
#[derive(Message)]
#[rtype(result = "()")]
pub enum Settle {
    /// basic.ack.
    Ack(Vec<MsgId>),
    /// nack/reject with requeue, recover, or a closed channel: back with redelivered set.
    Requeue(Vec<MsgId>),
    /// nack/reject without requeue: dropped (dead-lettered once that lands).
    Discard(Vec<MsgId>),
}

/// Deliveries that never reached the client (their consumer was cancelled first): put
/// back unchanged.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Restore {
    /// The deliveries.
    pub entries: Vec<Entry>,
    /// Whether they were no-ack deliveries (not tracked as unacked).
    pub no_ack: bool,
}

/// A channel closed: drop its consumers and requeue its unacked deliveries.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChannelClosed(pub ChannelKey);

/// A consumer got room again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Kick;

/// Counts for declare-ok and listings: (ready, consumers, unacked).
#[derive(Message)]
#[rtype(result = "(u32, u32, u32)")]
pub struct Stats;

/// queue.purge.
#[derive(Message)]
#[rtype(result = "u32")]
pub struct Purge;

/// queue.delete: checks the conditions, cancels consumers, replies the message count.
#[derive(Message)]
#[rtype(result = "Result<u32, AmqpError>")]
pub struct DeleteQueue {
    /// Refuse if there are consumers.
    pub if_unused: bool,
    /// Refuse if there are ready messages.
    pub if_empty: bool,
}

impl Handler<Enqueue> for QueueActor {
    type Result = ();
    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) {
        if let Some(me) = self.me.upgrade() {
            me.inflight.fetch_sub(1, Ordering::Relaxed);
        }
        if self.deleted {
            return;
        }
        self.guarded(ctx, |a, _| {
            let page = msg.0.persist_id.is_some()
                && a.state.ready_count() >= PAGE_WINDOW
                && a.stored().is_some();
            a.state.publish(msg.0);
            if page {
                if let Some(e) = a.state.last_ready_mut() {
                    e.msg = e.msg.page_out();
                }
            }
            a.drain();
        });
    }
}

impl Handler<Consume> for QueueActor {
    type Result = Result<(), AmqpError>;
    fn handle(&mut self, msg: Consume, ctx: &mut Context<Self>) -> Self::Result {
        if self.deleted {
            return Err(AmqpError::not_found(format!(
                "no queue '{}' in vhost '/'",
                self.name
            )));
        }
        let name = self.name.clone();
        self.guarded(ctx, |a, _| {
            a.state.add_consumer(msg.0, &name)?;
            a.drain();
            Ok(())
        })
        .unwrap_or_else(|| Err(AmqpError::internal("queue failed")))
    }
}

impl Handler<Cancel> for QueueActor {
    type Result = ();
    fn handle(&mut self, msg: Cancel, ctx: &mut Context<Self>) {
        self.guarded(ctx, |a, _| {
            if a.state.remove_consumer(msg.channel, &msg.tag).is_some() {
                a.maybe_auto_delete();
            }
        });
    }
}

impl Handler<Get> for QueueActor {
    type Result = Option<(Entry, Arc<Message>, u32)>;
    fn handle(&mut self, msg: Get, ctx: &mut Context<Self>) -> Self::Result {
        if self.deleted {
            return None;
        }
        self.guarded(ctx, |a, _| {
            let (e, m) = loop {
                let mut e = a.state.get(msg.channel, msg.no_ack)?;
                let persist_id = match &e.msg {
                    Slot::Loaded(m) => {
                        let m = m.clone();
                        break (e, m);
                    }
                    Slot::Paged { persist_id, .. } => *persist_id,
                };
                match page_in(&a.stored(), persist_id) {
                    Ok(m) => {
                        e.msg = Slot::Loaded(m.clone());
                        break (e, m);
                    }
                    Err(err) => {
                        tracing::error!(queue = %a.name, persist_id, "a stored message could not be read back and is lost: {err}");
                        if !msg.no_ack {
                            a.state.discard(&[e.id]);
                        }
                        a.forget(std::slice::from_ref(&e));
                    }
                }
            };
            if msg.no_ack {
                a.forget(std::slice::from_ref(&e));
            } else {
                a.note_delivered(&e);
            }
            Some((e, m, a.state.ready_count() as u32))
        })
        .flatten()
    }
}

impl Handler<Settle> for QueueActor {
    type Result = ();
    fn handle(&mut self, msg: Settle, ctx: &mut Context<Self>) {
        self.guarded(ctx, |a, _| {
            match msg {
                Settle::Ack(ids) => {
                    let done = a.state.ack(&ids);
                    a.forget(&done);
                }
                Settle::Requeue(ids) => {
                    a.state.requeue(&ids, true);
                }
                Settle::Discard(ids) => {
                    let done = a.state.discard(&ids);
                    a.forget(&done);
                }
            }
            a.drain();
        });
    }
}

impl Handler<Restore> for QueueActor {
    type Result = ();
    fn handle(&mut self, msg: Restore, ctx: &mut Context<Self>) {
        self.guarded(ctx, |a, _| {
            a.state.restore(msg.entries, msg.no_ack);
            a.drain();
        });
    }
}

impl Handler<ChannelClosed> for QueueActor {
    type Result = ();
    fn handle(&mut self, msg: ChannelClosed, ctx: &mut Context<Self>) {
        self.guarded(ctx, |a, _| {
            if a.state.channel_closed(msg.0) > 0 {
                a.maybe_auto_delete();
            }
            a.drain();
        });
    }
}

impl Handler<Kick> for QueueActor {
    type Result = ();
    fn handle(&mut self, _: Kick, ctx: &mut Context<Self>) {
        self.guarded(ctx, |a, _| a.drain());
    }
}

impl Handler<Stats> for QueueActor {
    type Result = MessageResult<Stats>;
    fn handle(&mut self, _: Stats, _: &mut Context<Self>) -> Self::Result {
        MessageResult((
            self.state.ready_count() as u32,
            self.state.consumer_count() as u32,
            self.state.unacked_count() as u32,
        ))
    }
}

impl Handler<Purge> for QueueActor {
    type Result = u32;
    fn handle(&mut self, _: Purge, ctx: &mut Context<Self>) -> u32 {
        self.guarded(ctx, |a, _| {
            let gone = a.state.purge();
            a.forget(&gone);
            gone.len() as u32
        })
        .unwrap_or(0)
    }
}

impl Handler<DeleteQueue> for QueueActor {
    type Result = Result<u32, AmqpError>;
    fn handle(&mut self, msg: DeleteQueue, ctx: &mut Context<Self>) -> Self::Result {
        let name = self.name.clone();
        self.guarded(ctx, |a, _| {
            a.state.check_delete(msg.if_unused, msg.if_empty, &name)?;
            let n = a.state.ready_count() as u32;
            a.cancel_all_consumers();
            a.deleted = true;
            // `guarded` accounts the bytes released here
            a.state = QueueState::default();
            Ok(n)
        })
        .unwrap_or_else(|| Err(AmqpError::internal("queue failed")))
    }
}

/// Messages recovered from the store at start, in order, with their delivered flag.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Recover(pub Vec<(Slot, bool)>);

impl Handler<Recover> for QueueActor {
    type Result = ();
    fn handle(&mut self, msg: Recover, ctx: &mut Context<Self>) {
        self.guarded(ctx, |a, _| {
            for (m, delivered) in msg.0 {
                a.state.publish_recovered(m, delivered);
            }
            a.drain();
        });
    }
}

/// Records the delivered mark at once (at shutdown, so a clean stop loses none).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SaveDeliveredMark;

impl Handler<SaveDeliveredMark> for QueueActor {
    type Result = ();
    fn handle(&mut self, _: SaveDeliveredMark, _: &mut Context<Self>) {
        self.write_delivered_mark();
    }
}

/// Test hook: makes the queue actor panic inside a handler, as a bug would.
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

#[cfg(test)]
impl Handler<Crash> for QueueActor {
    type Result = ();
    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        self.guarded(ctx, |_, _| panic!("injected failure"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cli, Config};
    use crate::vhost::QueueSpec;
    use bytes::Bytes;
    use clap::Parser;

    fn msg() -> Arc<Message> {
        Arc::new(Message {
            exchange: "".into(),
            routing_key: "q".into(),
            properties: Default::default(),
            raw_properties: Bytes::from_static(&[0, 0]),
            body: Bytes::from_static(b"x"),
            persist_id: None,
        })
    }

    /// A queue actor that panics is restarted empty at the same address; another queue on
    /// the same worker thread is untouched, and the broker goes on.
    #[test]
    fn a_failing_queue_does_not_take_others_down() {
        let sys = actix::System::new();
        sys.block_on(async {
            let config = Config::load(Cli::parse_from(["broker"])).unwrap();
            let arbiter = actix::Arbiter::new();
            let rt = Runtime::new(config, vec![arbiter.handle()], None);
            let v = rt.vhost("/").unwrap();
            let spec = || QueueSpec {
                durable: false,
                exclusive_owner: None,
                auto_delete: false,
                arguments: FieldTable::default(),
            };
            let a = v.declare_queue("a", spec(), 1).unwrap();
            let b = v.declare_queue("b", spec(), 1).unwrap();
            for _ in 0..3 {
                a.enqueue(msg());
                b.enqueue(msg());
            }
            assert_eq!(a.addr.send(Stats).await.unwrap().0, 3);
            a.addr.do_send(Crash);
            // the same address answers again, restarted with an empty state
            let mut restarted = false;
            for _ in 0..100 {
                if let Ok((0, _, _)) = a.addr.send(Stats).await {
                    restarted = true;
                    break;
                }
                actix_rt::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert!(restarted);
            assert_eq!(b.addr.send(Stats).await.unwrap().0, 3);
            a.enqueue(msg());
            assert_eq!(a.addr.send(Stats).await.unwrap().0, 1);
            assert_eq!(rt.memory.used(), 4 * msg().size());
            // deleting a queue releases exactly its bytes
            b.addr
                .send(DeleteQueue {
                    if_unused: false,
                    if_empty: false,
                })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(rt.memory.used(), msg().size());
            arbiter.stop();
        });
    }

    /// A durable queue whose actor fails takes its persistent messages back from the
    /// store at once (transient ones are lost with the actor's memory).
    #[test]
    fn a_restarted_durable_queue_reloads_its_stored_messages() {
        let dir = std::env::temp_dir().join(format!("queue-restart-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(crate::store::SledStore::open(&dir).unwrap());
        let storage = crate::runtime::Storage {
            definitions: store.clone(),
            messages: store.clone(),
            flusher: crate::store::Flusher::start(store.clone()),
        };
        let sys = actix::System::new();
        sys.block_on(async {
            let config = Config::load(Cli::parse_from(["broker"])).unwrap();
            let arbiter = actix::Arbiter::new();
            let rt = Runtime::new(config, vec![arbiter.handle()], Some(storage));
            let v = rt.vhost("/").unwrap();
            let spec = QueueSpec {
                durable: true,
                exclusive_owner: None,
                auto_delete: false,
                arguments: FieldTable::default(),
            };
            let q = v.declare_queue("d", spec, 1).unwrap();
            let qid = q.store_id.unwrap();
            for seq in 100..103u64 {
                let m = Message {
                    persist_id: Some(seq),
                    ..Arc::try_unwrap(msg()).unwrap()
                };
                let record = broker_core::store::encode_message(&m);
                store.insert(&[qid], seq, &record, m.size() as u32).unwrap();
                q.enqueue(Arc::new(m));
            }
            q.enqueue(msg());
            assert_eq!(q.addr.send(Stats).await.unwrap().0, 4);
            q.addr.do_send(Crash);
            let mut reloaded = false;
            for _ in 0..100 {
                actix_rt::time::sleep(std::time::Duration::from_millis(10)).await;
                if let Ok((3, _, _)) = q.addr.send(Stats).await {
                    reloaded = true;
                    break;
                }
            }
            assert!(reloaded, "the three stored messages are back");
            let got = q
                .addr
                .send(Get {
                    channel: ChannelKey {
                        connection: 1,
                        channel: 1,
                    },
                    no_ack: true,
                })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got.1.persist_id, Some(100));
            assert_eq!(&got.1.body[..], b"x");
            arbiter.stop();
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
