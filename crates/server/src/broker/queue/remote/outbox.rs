//! The way out of a queue entry whose home is another node: publishes routed to it wait
//! in the entry's inbox (so the publisher's credit and pause work as for a local queue,
//! `QUEUE_CREDIT`), and one task per entry, started by the first publish, takes the inbox
//! and sends it to the home in batches of at most [`BATCH_MESSAGES`] messages or
//! [`BATCH_BYTES`] body bytes, one batch in flight at a time (the queue's order is the
//! order of the batches). The home answers once it has enqueued them and fsynced the
//! persistent ones; only then is each publish's ticket answered, so its confirm goes out
//! after the home's commit. A home that is down or does not answer within the
//! transport's call time nacks the batch. Publishers paused on the entry are woken
//! after each answer: what waits for one node is bounded by the credit plus one batch.
//!
//! Settles and closed channels of messages got from the queue (`Note`s) go out through
//! the same task, in order, as one-way messages.
//!
//! A quorum queue of which this node is no member has several possible homes, its
//! member nodes: the entry uses one of them ([`Homes`]), the first in the record's
//! order (the member placed to lead) while its link is up, and the next live one when
//! it goes, so a member that dies costs the publishes in flight to it (nacked) and its
//! consumers (basic.cancel), not the queue.

use super::wire::{self, Note, PublishReply, NOTE_SERVICE, PUBLISH_SERVICE};
use super::*;
use crate::broker::cluster::ClusterNode;
use broker_cluster::NodeId;
use tokio::sync::Notify;

/// At most this many messages in one publish batch.
pub const BATCH_MESSAGES: usize = 1024;

/// At most this many body bytes in one publish batch (a single larger message goes
/// alone: it is below the frame limit, which is above `max_message_size`).
pub const BATCH_BYTES: usize = 4 << 20;

/// Notes waiting to go: past this many the oldest settles are still sent, but a
/// channel's note waits for room (bounded by the channel's own unacked gets).
const NOTES_MAX: usize = 65_536;

/// The nodes that can serve a remote entry: its home, or a quorum queue's members (in
/// the record's order), and the one in use.
pub(super) struct Homes {
    /// The candidates, by id and name.
    nodes: Vec<(NodeId, Arc<str>)>,
    /// The id of the one in use.
    current: AtomicU64,
}

impl Homes {
    /// The node requests go to: the one in use while its link is up, else the first
    /// candidate whose link is up (kept from then on), else the one in use (whose
    /// request then fails as a home that is down).
    pub(super) fn pick(&self, cluster: &ClusterNode) -> NodeId {
        let current = self.current.load(Ordering::Acquire);
        let Some(net) = cluster.transport() else {
            return current;
        };
        if self.nodes.len() < 2 || net.is_up(current) {
            return current;
        }
        match self.nodes.iter().find(|(id, _)| net.is_up(*id)) {
            Some((id, name)) => {
                tracing::debug!(node = %name, "a queue of other nodes is now used through another member");
                self.current.store(*id, Ordering::Release);
                *id
            }
            None => current,
        }
    }

    /// Whether any candidate's link is up.
    pub(super) fn any_up(&self, cluster: &ClusterNode) -> bool {
        cluster
            .transport()
            .is_some_and(|net| self.nodes.iter().any(|(id, _)| net.is_up(*id)))
    }
}

/// Where a remote entry's publishes and notes leave from.
pub struct Outbox {
    /// The node's cluster part: its transport and runtime.
    pub(super) cluster: Arc<ClusterNode>,
    /// The nodes that serve the queue, and the one in use.
    pub(super) homes: Arc<Homes>,
    /// The name of the queue's home (a quorum queue's first member).
    pub(super) home_name: Arc<str>,
    /// The entry (weak: the task ends with it).
    entry: Weak<QueueEntry>,
    /// Wakes the task.
    wake: Arc<Notify>,
    /// The task runs.
    started: AtomicBool,
    /// Settles and closed channels waiting to go, oldest first.
    notes: Arc<Notes>,
}

/// Notes waiting to go, and how many have gone: a request to the home waits for the
/// notes queued before it ([`Outbox::notes_sent`]), so a nack with requeue followed by
/// basic.get finds the message back, as on one node.
#[derive(Default)]
struct Notes {
    /// Waiting, oldest first, and how many were ever queued.
    list: std::sync::Mutex<(Vec<Note>, u64)>,
    /// How many went out (or were given up).
    sent: AtomicU64,
    /// Woken after each batch went.
    went: Notify,
}

impl Outbox {
    /// The outbox of `entry`, a queue on node `home`, or a quorum queue whose member
    /// nodes are `members` (none of them this node; `home` is the first).
    pub fn new(
        cluster: Arc<ClusterNode>,
        home: Arc<str>,
        members: &[Arc<str>],
        entry: Weak<QueueEntry>,
    ) -> Outbox {
        let mut nodes: Vec<(NodeId, Arc<str>)> = members
            .iter()
            .map(|m| (broker_cluster::node_id(m), m.clone()))
            .collect();
        if nodes.is_empty() {
            nodes.push((broker_cluster::node_id(&home), home.clone()));
        }
        Outbox {
            cluster,
            homes: Arc::new(Homes {
                current: AtomicU64::new(nodes[0].0),
                nodes,
            }),
            home_name: home,
            entry,
            wake: Arc::new(Notify::new()),
            started: AtomicBool::new(false),
            notes: Default::default(),
        }
    }

    /// The entry's inbox has messages (or a note waits): start the task or wake it.
    pub(crate) fn wake(&self) {
        if !self.started.swap(true, Ordering::AcqRel) {
            let task = Task {
                cluster: self.cluster.clone(),
                homes: self.homes.clone(),
                entry: self.entry.clone(),
                wake: self.wake.clone(),
                notes: self.notes.clone(),
            };
            match self.cluster.handle() {
                Some(h) => {
                    h.spawn(task.run());
                }
                None => self.started.store(false, Ordering::Release),
            }
        }
        self.wake.notify_one();
    }

    /// Resolves once every note queued so far went out (at most `limit` later): a
    /// request sent after it follows them on the link.
    pub(super) fn notes_sent(
        &self,
        limit: std::time::Duration,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let notes = self.notes.clone();
        let target = notes.list.lock().unwrap_or_else(|p| p.into_inner()).1;
        async move {
            let deadline = tokio::time::Instant::now() + limit;
            while notes.sent.load(Ordering::Acquire) < target {
                let went = notes.went.notified();
                tokio::pin!(went);
                went.as_mut().enable();
                if notes.sent.load(Ordering::Acquire) >= target {
                    break;
                }
                if tokio::time::timeout_at(deadline, went).await.is_err() {
                    break;
                }
            }
        }
    }

    /// Queues a note for the home (sent in order with the others).
    pub(super) fn note(&self, n: Note) {
        {
            let mut notes = self.notes.list.lock().unwrap_or_else(|p| p.into_inner());
            if notes.0.len() >= NOTES_MAX {
                tracing::warn!(home = %self.home_name, "too many notes waiting for a queue's home: one dropped");
                return;
            }
            notes.0.push(n);
            notes.1 += 1;
        }
        self.wake();
    }
}

/// The sending task of one entry.
struct Task {
    cluster: Arc<ClusterNode>,
    homes: Arc<Homes>,
    entry: Weak<QueueEntry>,
    wake: Arc<Notify>,
    notes: Arc<Notes>,
}

impl Task {
    async fn run(self) {
        loop {
            self.wake.notified().await;
            loop {
                let Some(q) = self.entry.upgrade() else {
                    return;
                };
                let notes = std::mem::take(
                    &mut self.notes.list.lock().unwrap_or_else(|p| p.into_inner()).0,
                );
                let n = notes.len() as u64;
                self.send_notes(notes).await;
                if n > 0 {
                    self.notes.sent.fetch_add(n, Ordering::AcqRel);
                    self.notes.went.notify_waiters();
                }
                let (msgs, tickets) = q.inbox.take_ticketed();
                if msgs.is_empty() {
                    q.inbox.wake_waiters();
                    break;
                }
                self.send_publishes(&q, msgs, tickets).await;
                q.inbox.wake_waiters();
            }
        }
    }

    async fn send_notes(&self, notes: Vec<Note>) {
        let Some(net) = self.cluster.transport() else {
            return;
        };
        let home = self.homes.pick(&self.cluster);
        for n in notes {
            let sent = match wire::encode(&n) {
                Ok(b) => net
                    .send(home, NOTE_SERVICE, b)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                // the home requeues what the lost link's channels held
                tracing::debug!("note to a queue's home not sent: {e}");
            }
        }
    }

    /// Sends the messages in batches, one at a time, and answers their tickets.
    async fn send_publishes(
        &self,
        q: &Arc<QueueEntry>,
        msgs: Vec<Arc<Message>>,
        tickets: Vec<(usize, Ticket)>,
    ) {
        let mut tickets = tickets.into_iter().peekable();
        let mut start = 0;
        while start < msgs.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < msgs.len()
                && end - start < BATCH_MESSAGES
                && (end == start || bytes + msgs[end].body.len() <= BATCH_BYTES)
            {
                bytes += msgs[end].body.len();
                end += 1;
            }
            let outcome = self.publish(q, &msgs[start..end]).await;
            while let Some((at, _)) = tickets.peek() {
                if *at >= end {
                    break;
                }
                if let Some((at, t)) = tickets.next() {
                    let ok = match &outcome {
                        Ok(refused) => !refused.contains(&((at - start) as u32)),
                        Err(_) => false,
                    };
                    t.confirm.do_send(QuorumConfirmed(vec![(t.seq, ok)]));
                }
            }
            if let Err(e) = outcome {
                tracing::debug!(queue = %q.name, "publishes to the queue's home nacked: {e}");
            }
            start = end;
        }
    }

    /// One batch: the positions the home refused, or why none was taken.
    async fn publish(&self, q: &QueueEntry, msgs: &[Arc<Message>]) -> Result<Vec<u32>, String> {
        let net = self
            .cluster
            .transport()
            .ok_or("the cluster transport is not started")?;
        let payload = wire::encode_publish(&q.vhost_name, &q.name, msgs)?;
        let reply = net
            .call(self.homes.pick(&self.cluster), PUBLISH_SERVICE, payload)
            .await
            .map_err(|e| e.to_string())?;
        match wire::decode::<PublishReply>(&reply)? {
            PublishReply::Taken { refused } => Ok(refused),
            PublishReply::Failed(why) => Err(why),
        }
    }
}
