//! The quorum queue shell (issue 16, docs/design/cluster.md §3): a quorum queue's actor
//! hands every operation over to its [`QuorumShell`], which turns it into a command of
//! the queue's Raft group (`broker_cluster::quorum`) and carries out what the group's
//! state machine decides (its effects) on this node, the group's leader.
//!
//! A publish: the channel puts the message in the queue's inbox with a [`Ticket`]; the
//! actor takes the inbox in as one `Enqueue` entry while no other is being written (the
//! rest gather in the inbox meanwhile, and its credit pauses publishers); the entry is
//! appended to the node's Raft WAL, fsynced by the store's flusher round, committed and
//! applied; then each ticket is answered ([`QuorumConfirmed`]: a nack for a publish the
//! state machine rejected). Deliveries are `Effect::Deliver`s sent through the channel's
//! usual `DeliverBatch` path; the state machine's replicated credit (the prefetch)
//! decides them, so the consumer's gate only counts them.
//!
//! Commands reach the group through one proposer task per group on the cluster runtime,
//! in the order the actor proposes them (publishes gathered in the inbox are proposed
//! before any other command, so a channel's publish and its basic.get stay in order).

mod handlers;
mod proposer;
mod remote;
mod replicated;
mod round;

pub use replicated::QuorumDeleted;
use replicated::QuorumInbound;

use super::{ConsumerHandle, QueueActor, Ticket};
use crate::broker::cluster::ClusterNode;
use crate::broker::node::now_ms;
use actix::prelude::*;
use broker_cluster::quorum::{Alone, EffectSink, QqRaft, QuorumGroup};
use broker_cluster::{GroupId, Node};
use broker_core::names::ChannelKey;
use broker_core::queue::MsgId;
use broker_core::quorum::{ChanId, ConsumerId, Effect, Publish, QqCmd, QqOp, QqResp};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// The outcome of publishes a quorum queue committed (or failed to): confirm sequence
/// numbers of one channel, ack (true) or nack.
#[derive(Message)]
#[rtype(result = "()")]
pub struct QuorumConfirmed(pub Vec<(u64, bool)>);

/// The outcomes of tickets, for a task (not an actor) that waits for them: a move of
/// messages, a batch from another node. Tickets name the recipient; the task reads the
/// batches of outcomes from the receiver (started on `arbiter`, it ends when the last
/// ticket holding the recipient is gone).
pub fn outcome_channel(
    arbiter: &actix::ArbiterHandle,
) -> (
    Recipient<QuorumConfirmed>,
    mpsc::UnboundedReceiver<Vec<(u64, bool)>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sink = OutcomeSink::start_in_arbiter(arbiter, |_| OutcomeSink(tx));
    (sink.recipient(), rx)
}

/// Hands each [`QuorumConfirmed`] to the task of [`outcome_channel`].
struct OutcomeSink(mpsc::UnboundedSender<Vec<(u64, bool)>>);

impl Actor for OutcomeSink {
    type Context = Context<Self>;
}

impl Handler<QuorumConfirmed> for OutcomeSink {
    type Result = ();
    fn handle(&mut self, m: QuorumConfirmed, _: &mut Context<Self>) {
        // the task may have given up waiting
        let _ = self.0.send(m.0);
    }
}

/// Wakes the actor: its group applied entries whose effects wait in the buffer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct QuorumEffects;

/// The outcomes of one channel's publishes in a batch, and where they go.
type ChannelOutcomes = (ChanId, Recipient<QuorumConfirmed>, Vec<(u64, bool)>);

/// A command's answer, or why there is none (the group stopped, this node does not lead).
pub(super) type Answer = Result<QqResp, String>;

/// A proposal for the group's proposer task.
pub(super) type Proposal = (QqCmd, oneshot::Sender<Answer>);

/// Where the group's apply task leaves effects for the actor (shared; the actor drains
/// it before it looks at a command's answer, so an answer never overtakes its effects).
pub(super) struct EffectBuffer {
    effects: Mutex<Vec<Effect>>,
    /// A wake-up is on its way to the actor.
    woken: AtomicBool,
    /// Entries below this index were applied by an earlier process: their effects are
    /// not carried out again.
    skip_below: AtomicU64,
    actor: Addr<QueueActor>,
}

impl EffectSink for EffectBuffer {
    fn effects(&self, index: u64, effects: Vec<Effect>) {
        if index < self.skip_below.load(Ordering::Acquire) {
            return;
        }
        self.effects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(effects);
        if !self.woken.swap(true, Ordering::AcqRel) {
            self.actor.do_send(QuorumEffects);
        }
    }

    fn opened(&self, last: Option<u64>) {
        self.skip_below
            .store(last.map_or(0, |l| l + 1), Ordering::Release);
    }
}

impl EffectBuffer {
    fn take(&self) -> Vec<Effect> {
        self.woken.store(false, Ordering::Release);
        std::mem::take(&mut *self.effects.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A consumer of this queue on this node.
struct Local {
    key: ChannelKey,
    tag: Arc<str>,
    handle: ConsumerHandle,
    no_ack: bool,
    exclusive: bool,
    priority: i64,
}

/// A quorum queue's part of its actor.
pub struct QuorumShell {
    cluster: Arc<ClusterNode>,
    gid: GroupId,
    group: Option<QuorumGroup>,
    proposer: Option<mpsc::UnboundedSender<Proposal>>,
    buffer: Option<Arc<EffectBuffer>>,
    /// An `Enqueue` is being written (the inbox gathers the next one meanwhile).
    writing: bool,
    /// Publishes the state machine rejected whose tickets are not answered yet.
    rejected: HashSet<(ChanId, u64)>,
    consumers: HashMap<ConsumerId, Local>,
    /// Which channel each delivery awaiting a settle went to (the channel settles by id).
    delivered: HashMap<MsgId, ChanId>,
    /// Deliveries that found their consumer cancelled here meanwhile (the group decided
    /// them before it applied the cancel): given back with a `Return` on their channel
    /// after this turn, as rabbit_fifo's client returns deliveries for a consumer it no
    /// longer has. Until then they are checked out to a channel that never saw them.
    orphaned: Vec<(ChanId, MsgId)>,
    /// The tick timer: when it fires, and its handle.
    tick: Option<(u64, SpawnHandle)>,
    /// When a client last used the queue (for the x-expires tick).
    last_used: u64,
    /// The member nodes from the queue's record (empty: a group of one on this node).
    members: Vec<String>,
    /// A replicated group: deliveries and cancels for consumers on other nodes, sent in
    /// order (`replicated.rs`). `None` for a group of one.
    outbound: Option<mpsc::UnboundedSender<replicated::Outbound>>,
    /// This node's leadership of a replicated group, as last reported.
    leadership: Option<broker_cluster::quorum::Leadership>,
}

impl QuorumShell {
    /// The group on this node, once it is open.
    pub(crate) fn group(&self) -> Option<&QuorumGroup> {
        self.group.as_ref()
    }

    /// The shell of group `gid` on `cluster` (opened when the actor starts), whose
    /// members are the nodes `members` names (empty or one: a group of one here).
    pub fn new(cluster: Arc<ClusterNode>, gid: GroupId, members: Vec<String>) -> QuorumShell {
        QuorumShell {
            cluster,
            gid,
            group: None,
            proposer: None,
            buffer: None,
            writing: false,
            rejected: HashSet::new(),
            consumers: HashMap::new(),
            delivered: HashMap::new(),
            orphaned: Vec::new(),
            tick: None,
            last_used: now_ms(),
            members,
            outbound: None,
            leadership: None,
        }
    }

    /// Whether the group has members on other nodes (started over the transport).
    fn replicated(&self) -> bool {
        self.members.len() > 1 && self.cluster.quorum().is_some()
    }

    /// The name of the node this node knows to lead the group (a group of one: this).
    pub(super) fn leader_name(&self) -> Option<String> {
        if !self.replicated() {
            return Some(self.cluster.name.clone());
        }
        let leader = self.leadership.and_then(|l| l.leader)?;
        self.members
            .iter()
            .find(|m| broker_cluster::node_id(m) == leader)
            .cloned()
    }

    /// This node's name for a channel.
    fn chan(&self, key: ChannelKey) -> ChanId {
        ChanId {
            node: self.cluster.id,
            connection: key.connection,
            channel: key.channel,
        }
    }

    /// Sends a command to the group; the answer comes on the receiver.
    fn propose(&self, op: QqOp) -> oneshot::Receiver<Answer> {
        let (tx, rx) = oneshot::channel();
        let cmd = QqCmd {
            ts_ms: now_ms(),
            op,
        };
        match &self.proposer {
            Some(p) => {
                if let Err(mpsc::error::SendError((_, tx))) = p.send((cmd, tx)) {
                    let _ = tx.send(Err("the queue's group stopped".into()));
                }
            }
            None => {
                let _ = tx.send(Err("the queue's group is not running".into()));
            }
        }
        rx
    }
}

/// Hands the group's commands to its Raft in the order they were proposed, each
/// answered once applied.
async fn run_proposer(raft: QqRaft, mut rx: mpsc::UnboundedReceiver<Proposal>) {
    while let Some((cmd, tx)) = rx.recv().await {
        match raft.client_write_ff(cmd).await {
            Ok(answer) => {
                tokio::spawn(async move {
                    let r = match answer.await {
                        Ok(Ok(w)) => Ok(w.data),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("the queue's group stopped".to_owned()),
                    };
                    let _ = tx.send(r);
                });
            }
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
            }
        }
    }
}

/// The answer of a command, in the actor: awaits the receiver.
async fn answer(rx: oneshot::Receiver<Answer>) -> Answer {
    rx.await
        .unwrap_or_else(|_| Err("the queue's group stopped".into()))
}

impl QueueActor {
    /// Opens the queue's group (on the cluster runtime) before the actor takes any
    /// message; after a restart, proposes `LeaderChanged` (deliveries of the old
    /// process come back, its consumers are gone) and forgets the old process's
    /// channels, then brings the replicated settings up to date.
    pub(super) fn quorum_open(&mut self, ctx: &mut Context<Self>) {
        let Some(shell) = self.quorum.as_mut() else {
            return;
        };
        let buffer = Arc::new(EffectBuffer {
            effects: Mutex::new(Vec::new()),
            woken: AtomicBool::new(false),
            skip_below: AtomicU64::new(0),
            actor: ctx.address(),
        });
        shell.buffer = Some(buffer.clone());
        let cluster = shell.cluster.clone();
        let gid = shell.gid;
        if shell.replicated() {
            let open = replicated::start(cluster.clone(), gid, shell.members.clone(), buffer);
            Self::quorum_open_on(cluster, open, ctx);
            return;
        }
        let open = {
            let cluster = cluster.clone();
            async move {
                let members = [(cluster.id, Node::new(cluster.name.clone()))].into();
                let group = QuorumGroup::start(
                    gid,
                    cluster.id,
                    members,
                    &cluster.log,
                    cluster.snapshots.clone(),
                    buffer,
                    Alone,
                )
                .await?;
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(run_proposer(group.raft.clone(), rx));
                Ok::<_, String>((group, tx, None))
            }
        };
        Self::quorum_open_on(cluster, open, ctx);
    }

    /// Runs `open` (the group's start) on the cluster runtime; the actor takes no other
    /// message until it is done and `quorum_opened` has its outcome.
    fn quorum_open_on(
        cluster: Arc<ClusterNode>,
        open: impl std::future::Future<Output = Result<replicated::Started, String>> + Send + 'static,
        ctx: &mut Context<Self>,
    ) {
        let fut = async move {
            cluster
                .run(open)
                .await
                .unwrap_or_else(|| Err("the cluster runtime is gone".into()))
        };
        ctx.wait(actix::fut::wrap_future(fut).map(|res, a: &mut Self, ctx| {
            a.quorum_opened(res, ctx);
        }));
    }

    fn quorum_opened(&mut self, res: Result<replicated::Started, String>, ctx: &mut Context<Self>) {
        let args = self.state.args().clone();
        let Some(shell) = self.quorum.as_mut() else {
            return;
        };
        let (group, tx, outbound) = match res {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(queue = %self.name, "quorum queue cannot start: {e}");
                return;
            }
        };
        let recovered = group.recovered;
        let config = broker_core::quorum::QqConfig::from_args(&args);
        let stale = group.sm.config() != config;
        shell.group = Some(group);
        shell.proposer = Some(tx);
        if outbound.is_some() {
            shell.outbound = outbound;
            // what the leader on another node sends this node's consumers
            let addr = ctx.address();
            let inbound: crate::broker::cluster::QqInboundFn =
                Arc::new(move |what| addr.do_send(QuorumInbound(what)));
            shell
                .cluster
                .qq_local
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(shell.gid, inbound);
            if recovered {
                // this node's channels of the earlier process are gone (the leader,
                // whichever node it is, gives their messages back); a new leader's
                // `LeaderChanged` is the leadership follower's (`replicated.rs`)
                drop(shell.propose(QqOp::Down(broker_core::quorum::Down::Node(
                    shell.cluster.id,
                ))));
            }
        } else if recovered {
            // the answers are not awaited: the proposer keeps them in order before
            // anything a client asks next
            drop(shell.propose(QqOp::LeaderChanged));
            drop(shell.propose(QqOp::Down(broker_core::quorum::Down::Node(
                shell.cluster.id,
            ))));
        }
        if stale {
            drop(shell.propose(QqOp::Configure(config)));
        }
        self.quorum_after(ctx);
    }

    /// Takes the inbox in as one `Enqueue` unless one is being written (or always, when
    /// `force`: another command is about to be proposed and must come after it).
    pub(super) fn quorum_take_inbox(&mut self, force: bool, ctx: &mut Context<Self>) {
        let Some(me) = self.me.upgrade() else { return };
        let Some(shell) = self.quorum.as_mut() else {
            return;
        };
        if (shell.writing && !force) || shell.proposer.is_none() {
            return;
        }
        let (msgs, tickets) = me.inbox.take_ticketed();
        me.inbox.wake_waiters();
        if msgs.is_empty() {
            return;
        }
        me.counters
            .published
            .fetch_add(msgs.len() as u64, Ordering::Relaxed);
        if self.deleted {
            return;
        }
        let anonymous = shell.chan(ChannelKey {
            connection: 0,
            channel: 0,
        });
        let mut tickets = tickets.into_iter().peekable();
        let mut answered = Vec::new();
        let batch: Vec<Publish> = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let t = tickets.next_if(|(at, _)| *at == i).map(|(_, t)| t);
                let (publisher, seq) = t.as_ref().map_or((anonymous, 0), |t| (t.publisher, t.seq));
                answered.extend(t);
                Publish {
                    publisher,
                    seq,
                    message: broker_core::store::encode_message(m),
                }
            })
            .collect();
        shell.writing = true;
        let rx = shell.propose(QqOp::Enqueue { batch });
        ctx.spawn(
            actix::fut::wrap_future(answer(rx)).map(move |res, a: &mut Self, ctx| {
                a.quorum_enqueued(answered, res, ctx);
            }),
        );
    }

    /// An `Enqueue` is applied (or failed): its tickets are answered, the next goes.
    fn quorum_enqueued(&mut self, tickets: Vec<Ticket>, res: Answer, ctx: &mut Context<Self>) {
        self.quorum_effects(ctx);
        let Some(shell) = self.quorum.as_mut() else {
            return;
        };
        shell.writing = false;
        if let Err(e) = &res {
            tracing::warn!(queue = %self.name, "publishes to a quorum queue failed: {e}");
        }
        // the publishes the state machine refused, from the answer (the proposer's
        // node may not be the leader, whose effects say the same)
        if let Ok(QqResp::Rejected(r)) = &res {
            for (publisher, seqs) in r {
                shell
                    .rejected
                    .extend(seqs.iter().filter(|s| **s > 0).map(|s| (*publisher, *s)));
            }
        }
        let mut by_chan: Vec<ChannelOutcomes> = Vec::new();
        for t in tickets {
            let ok = res.is_ok() && !shell.rejected.remove(&(t.publisher, t.seq));
            match by_chan.iter_mut().find(|(c, _, _)| *c == t.publisher) {
                Some((_, _, v)) => v.push((t.seq, ok)),
                None => by_chan.push((t.publisher, t.confirm, vec![(t.seq, ok)])),
            }
        }
        for (_, r, v) in by_chan {
            r.do_send(QuorumConfirmed(v));
        }
        self.quorum_take_inbox(false, ctx);
        self.quorum_after(ctx);
    }

    /// Proposes `op` after whatever the inbox holds, and answers `then` in the actor.
    fn quorum_call(
        &mut self,
        op: QqOp,
        ctx: &mut Context<Self>,
    ) -> impl ActorFuture<Self, Output = Answer> {
        self.quorum_take_inbox(true, ctx);
        let rx = match self.quorum.as_ref() {
            Some(s) => s.propose(op),
            None => {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(Err("not a quorum queue".into()));
                rx
            }
        };
        actix::fut::wrap_future(answer(rx)).map(|res, a: &mut Self, ctx| {
            a.quorum_effects(ctx);
            a.quorum_after(ctx);
            res
        })
    }

    /// Proposes `op` after the inbox without waiting for its answer (it is logged if
    /// it fails).
    fn quorum_cast(&mut self, op: QqOp, ctx: &mut Context<Self>) {
        let f = self.quorum_call(op, ctx).map(|res, a: &mut Self, _| {
            if let Err(e) = res {
                tracing::warn!(queue = %a.name, "quorum queue command failed: {e}");
            }
        });
        ctx.spawn(f);
    }

    /// Housekeeping after an operation: counts for publishers and listings, the tick
    /// timer, deliveries out.
    pub(super) fn quorum_after(&mut self, ctx: &mut Context<Self>) {
        self.flush_deliveries();
        let Some(shell) = self.quorum.as_ref() else {
            return;
        };
        if let (Some(me), Some(g)) = (self.me.upgrade(), shell.group.as_ref()) {
            let ready = g.sm.counts().ready.load(Ordering::Relaxed) as usize;
            if me.ready.0.load(Ordering::Relaxed) != ready {
                me.ready.0.store(ready, Ordering::Relaxed);
            }
        }
        self.quorum_schedule_tick(ctx);
    }

    /// One timer for the next message expiry or x-expires check: it proposes `Tick`.
    fn quorum_schedule_tick(&mut self, ctx: &mut Context<Self>) {
        if self.deleted {
            return;
        }
        let expires = self.state.args().expires;
        let Some(shell) = self.quorum.as_mut() else {
            return;
        };
        let Some(g) = shell.group.as_ref() else {
            return;
        };
        let idle_due = expires.map(|ms| shell.last_used.saturating_add(ms));
        let at = match (g.sm.next_expiry(), idle_due) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(x) => x,
                None => return,
            },
        };
        if let Some((when, handle)) = shell.tick {
            if when <= at {
                return;
            }
            ctx.cancel_future(handle);
        }
        let delay = at.saturating_sub(now_ms()) + 1;
        let handle = ctx.run_later(std::time::Duration::from_millis(delay), |a, ctx| {
            let expires = a.state.args().expires;
            if let Some(s) = a.quorum.as_mut() {
                s.tick = None;
                let now = now_ms();
                if expires.is_some_and(|ms| s.last_used.saturating_add(ms) <= now) {
                    // checked now: the next check is a whole x-expires later
                    s.last_used = now;
                }
            }
            if a.deleted {
                return;
            }
            a.quorum_cast(QqOp::Tick, ctx);
        });
        shell.tick = Some((at, handle));
    }
}
