//! The channel actor: one per open AMQP channel, living on its connection's thread. It
//! carries out the methods of its channel, routes publishes itself (from the exchanges'
//! binding snapshots, through a per-channel route cache) straight into queue mailboxes,
//! tracks delivery tags, acks, confirms and transactions, and writes its replies and
//! deliveries into the connection's shared write buffer.

mod basic;
mod catch_up;
mod declare;
mod deliver;
mod remote;
mod route;
mod schema;
mod send_message;
mod tx;
mod tx_outcome;

use crate::amqp::connection::{ChannelClosing, Connection, ConnectionFail, Flush, ResumeRead};
use crate::amqp::shared::{ConnShared, OUT_HIGH};
use crate::broker::flow::{ChannelGate, ConsumerGate};
use crate::broker::queue::{ConsumerCancelled, Deliver, DeliverBatch, QueueEntry};
use crate::broker::runtime::Storage;
use crate::broker::supervise::{Kind, Supervisable};
use crate::broker::vhost::VHost;
use actix::prelude::*;
use broker_core::channel::{Confirms, Unacked};
use broker_core::names::MAX_SHORTSTR;
use broker_core::names::{ChannelKey, DeliveryTag};
use broker_core::queue::MsgId;
use broker_core::store::GroupCommit;
use broker_core::AmqpError;
use broker_wire::assembly::{Command, Content};
use broker_wire::protocol::{basic as b, channel, AMQPClass};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use tracing::Span;

/// What settling a delivery tag needs.
pub(crate) struct Pending {
    pub queue: Arc<QueueEntry>,
    pub id: MsgId,
    /// The consumer's gate (None for basic.get).
    pub gate: Option<Arc<ConsumerGate>>,
}

/// A consumer on this channel.
pub(crate) struct ConsumerRec {
    pub queue: Arc<QueueEntry>,
    pub gate: Arc<ConsumerGate>,
}

/// How a buffered transactional settle ends.
#[derive(Clone, Copy)]
pub(crate) enum SettleKind {
    Ack,
    Requeue,
    Discard,
}

/// Work held back by tx.select until tx.commit.
#[derive(Default)]
pub(crate) struct TxBuffer {
    /// Publishes carried out at commit.
    pub publishes: Vec<(b::Publish, Content)>,
    /// Acks, nacks and rejects carried out at commit.
    pub settles: Vec<(DeliveryTag, Pending, SettleKind)>,
    /// Body and property bytes of `publishes` (held against [`TX_MAX_BYTES`]).
    pub bytes: usize,
}

/// Most publishes one transaction may hold uncommitted.
pub(crate) const TX_MAX_PUBLISHES: usize = 65_536;
/// Most message bytes one transaction may hold uncommitted: past either limit the
/// channel is closed with 406 and the transaction discarded, instead of the broker
/// buffering whatever a client sends without committing.
pub(crate) const TX_MAX_BYTES: usize = 64 << 20;

/// Routing decisions of this channel, valid while the vhost's topology version holds.
#[derive(Default)]
pub(crate) struct RouteCache {
    pub version: u64,
    pub by_exchange: HashMap<String, HashMap<String, Route>>,
    pub entries: usize,
    /// The route used last: a publisher that sends run after run to the same exchange
    /// and key finds it with two string compares instead of two hash lookups.
    pub last: Option<Route>,
}

/// One cached routing decision: the exchange and routing key it answers for (the last
/// route is matched by comparing them) and the queues.
#[derive(Clone)]
pub(crate) struct Route {
    pub exchange: Arc<str>,
    pub routing_key: Arc<str>,
    pub queues: Arc<[Arc<QueueEntry>]>,
    /// The exchange's schema, checked on every publish that takes this route.
    pub schema: Option<Arc<crate::broker::schemas::Attached>>,
}

/// The channel actor.
pub struct ChannelActor {
    /// What the connection sent and the channel has not carried out yet (see
    /// [`FromConn`]).
    pub(crate) backlog: std::collections::VecDeque<FromConn>,
    /// A [`RunBacklog`] is on its way.
    pub(crate) backlog_scheduled: bool,
    pub(crate) id: u16,
    pub(crate) key: ChannelKey,
    pub(crate) conn: Addr<Connection>,
    pub(crate) shared: Rc<ConnShared>,
    pub(crate) vhost: Arc<VHost>,
    pub(crate) span: Span,
    /// A channel error was sent; everything but close-ok is ignored.
    pub(crate) closing: bool,
    pub(crate) unacked: Unacked<Pending>,
    pub(crate) consumers: HashMap<Arc<str>, ConsumerRec>,
    pub(crate) gate: Arc<ChannelGate>,
    /// basic.qos prefetch for consumers created from now on (global=false).
    pub(crate) prefetch: u32,
    /// The last basic.qos was channel-wide (global=true) and set a limit: a stream
    /// consumer is then refused, as RabbitMQ refuses it.
    pub(crate) qos_global_last: bool,
    pub(crate) confirms: Option<Confirms>,
    pub(crate) confirm_flush_scheduled: bool,
    pub(crate) tx: Option<TxBuffer>,
    /// The tx.commit whose publishes are being routed (their queues' outcomes).
    pub(crate) tx_commit: Option<tx_outcome::TxCommit>,
    /// The last sequence number a transactional publish to a quorum or remote queue
    /// took (they name a publish in the queue's log, so they grow across commits).
    pub(crate) tx_seq: u64,
    pub(crate) routes: RouteCache,
    /// What the management API shows of this channel.
    pub(crate) stats: Arc<crate::broker::runtime::ChannelStats>,
    /// Permission checks already made: registry version, and per resource name the
    /// access kinds checked (bits) and those allowed (bits).
    pub(crate) perm_cache: (u64, HashMap<String, (u8, u8)>),
    /// The user's topic permissions in this vhost (`None`: it has none), as of the
    /// table's version.
    pub(crate) topic_cache: (u64, Option<crate::broker::topic_perms::UserTopics>),
    /// Queues this channel consumed from or got messages from; told when it closes.
    pub(crate) touched: HashMap<usize, Arc<QueueEntry>>,
    /// The last queue declared, which an empty queue name refers to.
    pub(crate) last_queue: Option<String>,
    /// The store, for persistent messages.
    pub(crate) store: Option<Storage>,
    /// The broker runtime (its access registry is consulted on permission-cache misses).
    pub(crate) runtime: Option<Arc<crate::broker::runtime::Runtime>>,
    /// Confirms waiting for an fsync.
    pub(crate) group: GroupCommit,
    /// The store's mark before the inserts the next commit request covers (a failed
    /// write or fsync after it nacks them): taken when a request is sent, or before the
    /// first insert when nothing waits for a commit.
    pub(crate) commit_mark: u64,
    /// A persistent message could not be stored (a transaction's commit then fails).
    pub(crate) store_failed: bool,
}

impl ChannelActor {
    /// A channel actor for channel `id` of a connection.
    pub fn new(
        id: u16,
        conn: Addr<Connection>,
        shared: Rc<ConnShared>,
        vhost: Arc<VHost>,
        runtime: Arc<crate::broker::runtime::Runtime>,
        parent: &Span,
    ) -> Self {
        let span = tracing::info_span!(parent: parent, "channel", id);
        let store = runtime.store.clone();
        let gate = Arc::new(ChannelGate::new(runtime.consumers.clone()));
        let runtime = Some(runtime);
        Self {
            runtime,
            id,
            key: ChannelKey {
                connection: shared.id,
                channel: id,
            },
            conn,
            shared,
            vhost,
            span,
            closing: false,
            unacked: Unacked::default(),
            consumers: HashMap::new(),
            gate,
            prefetch: 0,
            qos_global_last: false,
            confirms: None,
            confirm_flush_scheduled: false,
            backlog: Default::default(),
            backlog_scheduled: false,
            tx: None,
            tx_commit: None,
            tx_seq: 0,
            routes: RouteCache::default(),
            stats: Default::default(),
            perm_cache: (0, HashMap::new()),
            topic_cache: (u64::MAX, None),
            touched: HashMap::new(),
            last_queue: None,
            commit_mark: store.as_ref().map_or(0, |s| s.messages.mark()),
            store_failed: false,
            store,
            group: GroupCommit::default(),
        }
    }

    /// Appends a method frame and asks for a flush.
    pub(crate) fn send(&self, m: AMQPClass) {
        self.shared.method(self.id, &m);
        self.request_flush();
    }

    pub(crate) fn request_flush(&self) {
        if !self.shared.flush_requested.replace(true) {
            self.conn.do_send(Flush);
        }
    }

    pub(crate) fn touch(&mut self, q: &Arc<QueueEntry>) {
        self.touched
            .entry(Arc::as_ptr(q) as usize)
            .or_insert_with(|| q.clone());
    }

    /// Closes this channel with a channel error, or hands a connection error up.
    pub(crate) fn fail(&mut self, e: AmqpError, _ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        if e.is_connection_error() {
            self.conn.do_send(ConnectionFail(e));
            return;
        }
        self.close_channel(e);
    }

    /// channel.close with `e` (whatever its class), then what every close does: release
    /// what the channel holds and have the connection await close-ok.
    fn close_channel(&mut self, e: AmqpError) {
        {
            let _s = self.span.enter();
            tracing::warn!(code = e.code.code(), text = %e.reply_text(), "closing channel");
        }
        self.send(AMQPClass::Channel(channel::AMQPMethod::Close(
            channel::Close {
                reply_code: e.code.code(),
                reply_text: e.reply_text().into(),
                class_id: e.class_id,
                method_id: e.method_id,
            },
        )));
        self.closing = true;
        self.cleanup();
        self.conn.do_send(ChannelClosing(self.id));
    }

    /// Releases everything the channel holds: queues requeue its unacked deliveries and
    /// drop its consumers.
    pub(crate) fn cleanup(&mut self) {
        if self.consumers.values().any(|c| !c.queue.is_local()) {
            crate::broker::remote_consume::registry().forget(self.key);
        }
        self.consumers.clear();
        let _ = self.unacked.take_all();
        self.tx = None;
        for (_, q) in self.touched.drain() {
            q.channel_closed(self.key);
        }
    }

    /// Runs `fut` while holding back this channel's mailbox (methods stay in order), then
    /// `then` with its result; an error closes the channel (or connection).
    pub(crate) fn wait_then<T: 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        method: (u16, u16),
        fut: impl Future<Output = Result<T, AmqpError>> + 'static,
        then: impl FnOnce(&mut Self, T, &mut Context<Self>) + 'static,
    ) {
        ctx.wait(fut.into_actor(self).map(move |res, act, ctx| {
            if act.closing {
                return;
            }
            match res {
                // a panic in `then` is the supervisor's, as anywhere else in the actor
                Ok(v) => then(act, v, ctx),
                Err(e) => act.fail(e.on(method.0, method.1), ctx),
            }
        }));
    }

    fn dispatch(&mut self, cmd: Command, ctx: &mut Context<Self>) -> Result<(), AmqpError> {
        match cmd {
            Command::Publish(p, content) if self.publishes_to_unknown(&p) => {
                self.publish_after_catch_up(p, content, ctx);
                Ok(())
            }
            Command::Publish(p, content) => self
                .basic_publish(p, content, ctx)
                .map_err(|e| e.on(60, 40)),
            Command::Method(m) if self.names_unknown(&m) => {
                self.method_after_catch_up(*m, ctx);
                Ok(())
            }
            Command::Method(m) => self.dispatch_method(*m, ctx),
        }
    }

    /// Runs a method (its errors name it).
    fn dispatch_method(&mut self, m: AMQPClass, ctx: &mut Context<Self>) -> Result<(), AmqpError> {
        let cm = (m.get_amqp_class_id(), m.get_amqp_method_id());
        let res = match m {
            AMQPClass::Channel(channel::AMQPMethod::Flow(f)) => {
                if f.active {
                    self.send(AMQPClass::Channel(channel::AMQPMethod::FlowOk(
                        channel::FlowOk { active: true },
                    )));
                    Ok(())
                } else {
                    Err(AmqpError::not_implemented("active=false"))
                }
            }
            AMQPClass::Channel(channel::AMQPMethod::FlowOk(_)) => Ok(()),
            AMQPClass::Access(broker_wire::protocol::access::AMQPMethod::Request(_)) => {
                self.send(AMQPClass::Access(
                    broker_wire::protocol::access::AMQPMethod::RequestOk(
                        broker_wire::protocol::access::RequestOk {},
                    ),
                ));
                Ok(())
            }
            AMQPClass::Exchange(m) => self.exchange_method(m, ctx),
            AMQPClass::Queue(m) => self.queue_method(m, ctx),
            AMQPClass::Basic(m) => self.basic_method(m, ctx),
            AMQPClass::Confirm(m) => self.confirm_method(m),
            AMQPClass::Tx(m) => self.tx_method(m, ctx),
            _ => Err(AmqpError::command_invalid(
                "method not allowed on a channel",
            )),
        };
        res.map_err(|e| e.on(cm.0, cm.1))
    }
}

impl Supervisable for ChannelActor {
    const KIND: Kind = Kind::Channel;
}

/// After a panic anywhere in the channel (`broker/supervise.rs`): the channel ends with
/// channel.close 541 INTERNAL_ERROR to its client (the connection and its other channels
/// carry on), its unacked deliveries go back to their queues and its consumers are
/// removed. What the connection had handed it still counts down (so the connection's
/// reading is not held back by commands that will never run) and a close or shutdown
/// already waiting is still carried out.
impl Supervised for ChannelActor {
    fn restarting(&mut self, ctx: &mut Context<Self>) {
        if !self.closing {
            self.close_channel(AmqpError::internal("internal error"));
            self.request_flush();
        }
        // the timer that would have carried on with the backlog went with the panic
        self.backlog_scheduled = false;
        self.run_backlog(ctx);
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::broker::fault::Fault> for ChannelActor {
    type Result = ();
    fn handle(&mut self, f: crate::broker::fault::Fault, ctx: &mut Context<Self>) {
        crate::broker::fault::inject(f.at, ctx);
    }
}

impl Actor for ChannelActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        if let Some(rt) = &self.runtime {
            rt.channel_info
                .insert((self.key.connection, self.key.channel), self.stats.clone());
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(rt) = &self.runtime {
            rt.channel_info
                .remove(&(self.key.connection, self.key.channel));
        }
    }
}

impl ChannelActor {
    /// Publishes the unacked count to the management view.
    pub(crate) fn count_unacked(&self) {
        self.stats.unacked.store(
            self.unacked.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// Input from the connection.
#[derive(Message)]
#[rtype(result = "()")]
pub enum Incoming {
    /// The complete commands of one read from the socket, in order.
    Batch(Vec<Command>),
    /// A channel error found while assembling (message too large).
    Fail(AmqpError),
}

/// What the connection asked of the channel, in the order it asked. A method that waits
/// for another actor (`ctx.wait`) holds back the rest of its batch as well as later
/// messages: what is left stays here until the wait is over.
pub(crate) enum FromConn {
    Command(Command),
    Fail(AmqpError),
    ClientClose,
    Shutdown,
}

impl Handler<Incoming> for ChannelActor {
    type Result = ();
    fn handle(&mut self, msg: Incoming, ctx: &mut Context<Self>) {
        match msg {
            Incoming::Batch(cmds) => self.backlog.extend(cmds.into_iter().map(FromConn::Command)),
            Incoming::Fail(e) => self.backlog.push_back(FromConn::Fail(e)),
        }
        self.run_backlog(ctx);
    }
}

/// Carries on with the backlog after a wait.
#[derive(Message)]
#[rtype(result = "()")]
struct RunBacklog;

impl Handler<RunBacklog> for ChannelActor {
    type Result = ();
    fn handle(&mut self, _: RunBacklog, ctx: &mut Context<Self>) {
        self.backlog_scheduled = false;
        self.run_backlog(ctx);
    }
}

impl ChannelActor {
    /// Works through what the connection sent, in order, until a method waits.
    fn run_backlog(&mut self, ctx: &mut Context<Self>) {
        let _s = self.span.clone().entered();
        while !ctx.waiting() {
            let Some(item) = self.backlog.pop_front() else {
                return;
            };
            match item {
                FromConn::Command(cmd) => self.incoming(cmd, ctx),
                FromConn::Fail(e) => self.fail(e, ctx),
                FromConn::ClientClose => {
                    self.cleanup();
                    self.send(AMQPClass::Channel(channel::AMQPMethod::CloseOk(
                        channel::CloseOk {},
                    )));
                    ctx.stop();
                }
                FromConn::Shutdown => {
                    self.cleanup();
                    ctx.stop();
                }
            }
        }
        if !self.backlog.is_empty() && !self.backlog_scheduled {
            self.backlog_scheduled = true;
            ctx.notify(RunBacklog);
        }
    }

    /// One command from the connection.
    fn incoming(&mut self, cmd: Command, ctx: &mut Context<Self>) {
        let pending = self.shared.pending_commands.get().saturating_sub(1);
        self.shared.pending_commands.set(pending);
        if pending <= self.shared.pending_limit() / 2 && self.shared.read_paused.get() {
            self.shared.read_paused.set(false);
            self.conn.do_send(ResumeRead);
        }
        if self.closing {
            return;
        }
        if let Err(e) = self.dispatch(cmd, ctx) {
            self.fail(e, ctx);
        }
    }
}

/// The client closed the channel: clean up, reply close-ok, stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClientClose;

impl Handler<ClientClose> for ChannelActor {
    type Result = ();
    fn handle(&mut self, _: ClientClose, ctx: &mut Context<Self>) {
        self.backlog.push_back(FromConn::ClientClose);
        self.run_backlog(ctx);
    }
}

/// The connection is going away (or got close-ok): clean up and stop silently.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for ChannelActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        self.backlog.push_back(FromConn::Shutdown);
        self.run_backlog(ctx);
    }
}

/// Sends the publisher confirms gathered since the last flush.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FlushConfirms;

impl Handler<FlushConfirms> for ChannelActor {
    type Result = ();
    fn handle(&mut self, _: FlushConfirms, _ctx: &mut Context<Self>) {
        self.confirm_flush_scheduled = false;
        if self.closing {
            return;
        }
        let Some(c) = self.confirms.as_mut() else {
            return;
        };
        for f in c.drain() {
            let m = if f.ack {
                b::AMQPMethod::Ack(b::Ack {
                    delivery_tag: f.tag,
                    multiple: f.multiple,
                })
            } else {
                b::AMQPMethod::Nack(b::Nack {
                    delivery_tag: f.tag,
                    multiple: f.multiple,
                    requeue: false,
                })
            };
            self.shared.method(self.id, &AMQPClass::Basic(m));
        }
        self.request_flush();
    }
}

/// The fsync requested for this channel's persistent publishes finished.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StoreFlushed(pub bool);

impl Handler<crate::broker::queue::QuorumConfirmed> for ChannelActor {
    type Result = ();
    fn handle(&mut self, m: crate::broker::queue::QuorumConfirmed, ctx: &mut Context<Self>) {
        if let Some(c) = self.confirms.as_mut() {
            for (seq, ok) in m.0 {
                c.settle(seq, ok);
            }
        }
        self.schedule_confirms(ctx);
    }
}

impl Handler<StoreFlushed> for ChannelActor {
    type Result = ();
    fn handle(&mut self, m: StoreFlushed, ctx: &mut Context<Self>) {
        let covered = self.group.finished();
        if let Some(c) = self.confirms.as_mut() {
            for seq in covered {
                c.settle(seq, m.0);
            }
        }
        self.schedule_confirms(ctx);
        self.request_store_flush(ctx);
    }
}

impl ChannelActor {
    /// Refuses with 403 ACCESS_REFUSED unless the connection's user may do `kind` to the
    /// resource `name` (`what` is "queue" or "exchange"). Checks are cached per name
    /// until a permission changes, so a publish costs a hash lookup, not a regex.
    pub(crate) fn allowed(
        &mut self,
        kind: broker_core::auth::Access,
        what: &str,
        name: &str,
    ) -> Result<(), AmqpError> {
        use broker_core::auth::Access;
        let Some(rt) = self.runtime.as_ref() else {
            return Ok(());
        };
        let bit = match kind {
            Access::Configure => 1u8,
            Access::Write => 2,
            Access::Read => 4,
        };
        let version = rt.registry.version();
        if self.perm_cache.0 != version {
            self.perm_cache = (version, HashMap::new());
        }
        let ok = match self.perm_cache.1.get(name) {
            Some((known, yes)) if known & bit != 0 => yes & bit != 0,
            _ => {
                let user = self.shared.user.borrow().clone();
                let ok = rt.registry.allows(&self.vhost.name, &user, kind, name);
                let e = self.perm_cache.1.entry(name.to_owned()).or_insert((0, 0));
                e.0 |= bit;
                if ok {
                    e.1 |= bit;
                }
                ok
            }
        };
        if ok {
            Ok(())
        } else {
            let user = self.shared.user.borrow().clone();
            Err(AmqpError::access_refused(broker_core::auth::refused_text(
                what,
                name,
                &self.vhost.name,
                &user,
            )))
        }
    }
}
