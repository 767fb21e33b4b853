//! A quorum queue with several members (docs/design/cluster.md §3, step 7, server
//! part): this node's member of the group is started from the queue's record (its
//! `members`) over the cluster transport; commands go to the leader wherever it is
//! (`QuorumHandle`, forwarded over `QQ_FORWARD_SERVICE`), so every member node serves
//! publishes, gets, consumers, settles, purges and deletes; the leader's node carries
//! the effects out and sends deliveries and cancels for consumers on other nodes to
//! them (`qq_inbound.rs` receives them there).
//!
//! Leadership (from the group's Raft metrics) is followed by a task on the cluster
//! runtime: when this node takes over in a new term it waits until it has applied
//! every entry of the terms before ([`openraft::Raft::ensure_linearizable`]) and, if
//! anything was checked out or subscribed under them, proposes `LeaderChanged` (their
//! messages come back, redelivered, and every consumer is cancelled with basic.cancel);
//! while it leads, a member node whose link goes down gets a `Down { node }` (its
//! consumers' messages come back). Links are compared by session, so one that dropped
//! and came back between two looks is a loss too (what was sent on it may be gone).

use super::proposer::run_proposer;
use super::{EffectBuffer, Proposal, QueueActor};
use crate::broker::cluster::{ClusterNode, QqInbound};
use crate::broker::node::now_ms;
use actix::prelude::*;
use broker_cluster::quorum::{
    config, send_deliveries, Leadership, MemberSpec, QqSm, QuorumGroup, RemoteDelivery,
};
use broker_cluster::{node_id, GroupId, Node, NodeId};
use broker_core::quorum::{ConsumerId, Down, QqCmd, QqOp};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often the leader looks at the links to the other members (a link that went down
/// is a member node lost: `Down { node }`).
const LINK_CHECK: Duration = Duration::from_millis(250);

/// This node's leadership of the group, for the actor (the management API's `leader`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct QuorumLeadership(pub Leadership);

/// Deliveries or cancels for this node's consumers from the leader on another node.
#[derive(Message)]
#[rtype(result = "()")]
pub struct QuorumInbound(pub QqInbound);

/// The queue's record went (deleted through another node): stop the member here and
/// drop its log.
#[derive(Message)]
#[rtype(result = "()")]
pub struct QuorumDeleted;

/// What the leader sends other nodes, in order.
pub(super) enum Outbound {
    Deliveries(NodeId, Vec<RemoteDelivery>),
    Cancels(NodeId, Vec<ConsumerId>),
}

/// A started member: the group, the forwarding proposer's queue, the outbound queue.
pub(super) type Started = (
    QuorumGroup,
    mpsc::UnboundedSender<Proposal>,
    Option<mpsc::UnboundedSender<Outbound>>,
);

/// The initial membership of a group, identical on every member: ids from the names.
fn membership(members: &[String]) -> std::collections::BTreeMap<NodeId, Node> {
    members
        .iter()
        .map(|m| (node_id(m), Node::new(m.clone())))
        .collect()
}

/// Starts this node's member of a replicated group (on the cluster runtime), its
/// proposer, its leadership follower and its outbound sender.
pub(super) async fn start(
    cluster: Arc<ClusterNode>,
    gid: GroupId,
    members: Vec<String>,
    buffer: Arc<EffectBuffer>,
) -> Result<Started, String> {
    let qn = cluster
        .quorum()
        .cloned()
        .ok_or("this node has no cluster transport")?;
    let placed = members.first().map(|m| node_id(m));
    let spec = MemberSpec {
        id: gid,
        members: membership(&members),
        config: config()?,
        // only the member placed to lead initializes (and so stands) at once
        initialize: placed == Some(cluster.id),
    };
    let actor = buffer.actor.clone();
    let group = qn
        .start_group(spec, &cluster.log, cluster.snapshots.clone(), buffer)
        .await?;
    if !group.recovered && placed != Some(cluster.id) {
        // the member placed to lead (`broker/placement.rs`) initialized the group and
        // stood at once; the others leave it the first election (a leader's lease
        // would then keep it from taking the lead: 0.9 cannot transfer leadership),
        // unless its node is down or it does not lead within PLACED_LEADER_WAIT
        group.raft.runtime_config().elect(false);
        tokio::spawn(elect_once_led(
            group.clone(),
            qn.transport().clone(),
            placed,
            membership(&members),
        ));
    }
    let handle = qn.handle(&group);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run_proposer(handle, rx));
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    tokio::spawn(run_outbound(qn.transport().clone(), gid, out_rx));
    let peers: Vec<NodeId> = members
        .iter()
        .map(|m| node_id(m))
        .filter(|n| *n != cluster.id)
        .collect();
    tokio::spawn(follow_leadership(
        group.clone(),
        qn.transport().clone(),
        peers,
        actor,
    ));
    Ok((group, tx, Some(out_tx)))
}

/// Sends deliveries and cancels to other nodes in the order the leader decided them.
/// A send that fails (the node's link is down) is dropped: its messages stay checked
/// out until that node's `Down` or the next `LeaderChanged`.
async fn run_outbound(
    net: broker_cluster::net::Transport,
    gid: GroupId,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
) {
    while let Some(o) = rx.recv().await {
        let r = match o {
            Outbound::Deliveries(node, ds) => send_deliveries(&net, node, gid, ds).await,
            Outbound::Cancels(node, cs) => {
                crate::broker::qq_inbound::send_cancels(&net, node, gid, cs).await
            }
        };
        if let Err(e) = r {
            tracing::debug!(
                group = gid,
                "quorum queue message to a member node lost: {e}"
            );
        }
    }
}

/// Follows this node's leadership of the group: tells the actor, proposes
/// `LeaderChanged` when it takes over, and `Down { node }` for a member whose link goes
/// down while it leads. Ends with the group.
async fn follow_leadership(
    group: QuorumGroup,
    net: broker_cluster::net::Transport,
    peers: Vec<NodeId>,
    actor: Addr<QueueActor>,
) {
    let mut lead = group.leadership();
    let mut handled_term = 0;
    let mut up: HashMap<NodeId, Option<u64>> = HashMap::new();
    let mut tick = tokio::time::interval(LINK_CHECK);
    loop {
        let now = *lead.borrow_and_update();
        actor.do_send(QuorumLeadership(now));
        if now.leading && now.term != handled_term {
            handled_term = now.term;
            take_over(&group).await;
            up = peers.iter().map(|p| (*p, net.link_session(*p))).collect();
        }
        tokio::select! {
            changed = lead.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tick.tick() => {
                if now.leading {
                    links(&group, &net, &mut up).await;
                }
            }
        }
    }
}

/// How long the members of a new group that were not placed to lead leave the first
/// election to the one that was while its node is up (it may be starting the group
/// late: a node applies the queue's declaration when it gets to it).
const PLACED_LEADER_WAIT: Duration = Duration::from_secs(30);

/// Lets this member stand for election again once the group has a leader, once the
/// link to the node placed to lead is down (a node that is down never starts the
/// group), or after [`PLACED_LEADER_WAIT`]; then, when no leader's entries brought the
/// group's membership meanwhile, initializes the group here (which stands at once).
/// Every member used to initialize, and openraft's `initialize` stands for election at
/// once: the members stood together and any could win.
async fn elect_once_led(
    group: QuorumGroup,
    net: broker_cluster::net::Transport,
    placed: Option<NodeId>,
    members: std::collections::BTreeMap<NodeId, Node>,
) {
    let mut lead = group.leadership();
    let deadline = tokio::time::Instant::now() + PLACED_LEADER_WAIT;
    let mut tick = tokio::time::interval(LINK_CHECK);
    loop {
        if lead.borrow_and_update().leader.is_some() {
            break;
        }
        if placed.is_none_or(|p| net.link_session(p).is_none()) {
            tracing::info!(
                group = group.id,
                "the node placed to lead is down: electing"
            );
            break;
        }
        tokio::select! {
            changed = lead.changed() => {
                if changed.is_err() {
                    return; // the group stopped
                }
            }
            _ = tick.tick() => {}
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    group.raft.runtime_config().elect(true);
    if lead.borrow().leader.is_none() {
        // started without the membership: initialize (and stand) unless another
        // member's first entries brought it meanwhile
        if let Err(e) = group.initialize(members).await {
            tracing::warn!(group = group.id, "{e}");
        }
    }
}

/// A new leader's first act (design §3 "Leader change"): once every entry of older
/// terms is applied here, `LeaderChanged` if they left consumers or checked-out
/// messages.
async fn take_over(group: &QuorumGroup) {
    if let Err(e) = group.raft.ensure_linearizable().await {
        tracing::debug!(group = group.id, "lost the lead while taking over: {e}");
        return;
    }
    if !holds_anything(&group.sm) {
        return;
    }
    let cmd = QqCmd {
        ts_ms: now_ms(),
        op: QqOp::LeaderChanged,
    };
    match group.raft.client_write(cmd).await {
        Ok(_) => tracing::info!(group = group.id, "quorum queue leader took over"),
        Err(e) => tracing::debug!(group = group.id, "LeaderChanged not committed: {e}"),
    }
}

fn holds_anything(sm: &QqSm) -> bool {
    let c = sm.counts();
    c.consumers.load(Ordering::Relaxed) > 0 || c.unacked.load(Ordering::Relaxed) > 0
}

/// `Down { node }` for each member whose link went down since the last look (is down,
/// or on another connection than the one seen then).
async fn links(
    group: &QuorumGroup,
    net: &broker_cluster::net::Transport,
    up: &mut HashMap<NodeId, Option<u64>>,
) {
    for (peer, was) in up.iter_mut() {
        let is = net.link_session(*peer);
        if was.is_some() && *was != is {
            tracing::info!(
                group = group.id,
                node = *peer,
                "member node lost: its consumers' messages return"
            );
            let cmd = QqCmd {
                ts_ms: now_ms(),
                op: QqOp::Down(Down::Node(*peer)),
            };
            if let Err(e) = group.raft.client_write(cmd).await {
                tracing::debug!(group = group.id, "Down not committed: {e}");
                continue; // looked at again on the next tick
            }
        }
        *was = is;
    }
}

impl Handler<QuorumLeadership> for QueueActor {
    type Result = ();
    fn handle(&mut self, m: QuorumLeadership, _: &mut Context<Self>) {
        if let Some(s) = self.quorum.as_mut() {
            s.leadership = Some(m.0);
        }
    }
}

impl Handler<QuorumInbound> for QueueActor {
    type Result = ();
    fn handle(&mut self, m: QuorumInbound, ctx: &mut Context<Self>) {
        match m.0 {
            QqInbound::Deliveries(ds) => self.quorum_remote_deliveries(ds, ctx),
            QqInbound::Cancelled(cs) => {
                for c in cs {
                    self.quorum_consumer_cancelled(&c);
                }
            }
        }
        self.quorum_after(ctx);
    }
}

impl Handler<QuorumDeleted> for QueueActor {
    type Result = ();
    fn handle(&mut self, _: QuorumDeleted, _: &mut Context<Self>) {
        if self.deleted {
            return;
        }
        self.cancel_all_consumers();
        self.deleted = true;
        self.quorum_remove();
    }
}

impl QueueActor {
    /// Deliveries the leader on another node made to this node's consumers.
    fn quorum_remote_deliveries(&mut self, ds: Vec<RemoteDelivery>, ctx: &mut Context<Self>) {
        let mut credit: Vec<(ConsumerId, u32)> = Vec::new();
        for d in ds {
            let m = match d.decode() {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(queue = %self.name, "a delivery from the leader does not decode: {e}");
                    continue;
                }
            };
            let no_ack = self.quorum_deliver(
                &d.consumer,
                d.msg_id,
                Arc::new(m),
                d.redelivered,
                d.delivery_count,
            );
            if no_ack {
                super::handlers::count_credit(&mut credit, d.consumer);
            }
        }
        self.quorum_after_deliveries(credit, ctx);
    }
}
