//! What the vhost and channels know of a queue ([`QueueEntry`]): its declared
//! properties, its actor's address, its inbox (where publishes land without a mailbox
//! message each), and the counters and flags publishers read to decide whether to pause.

use super::*;

/// What the vhost and channels know of a queue.
pub struct QueueEntry {
    /// Name within the vhost.
    pub name: Arc<str>,
    /// Survives restarts.
    pub durable: bool,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// The connection that owns an exclusive queue.
    pub exclusive_owner: Option<u64>,
    /// Declared arguments.
    pub arguments: FieldTable,
    /// The arguments the broker acts on: the declared ones checked at declare, combined
    /// with the policies that apply (replaced when a policy changes).
    pub args: arc_swap::ArcSwap<QueueArgs>,
    /// Whether `args` has a length limit with a reject-publish overflow: read on every
    /// publish, so the common queue costs one flag, not a load of `args`.
    pub may_refuse: AtomicBool,
    /// The actor.
    pub addr: Addr<QueueActor>,
    /// Publishes waiting for the actor to take them in (it counts them, for
    /// backpressure).
    pub inbox: Inbox,
    /// The queue has a backlog over [`PACE_BACKLOG`] that consumers are taking from (at
    /// least [`PACE_MIN_FRESH`] first deliveries per window): its publishers read on when
    /// the backlog is back under it, or at the connection's pace floor (2 ms), so a
    /// publisher that outruns the broker's
    /// delivery path cannot grow the backlog without end and starve the consumers of CPU
    /// (RabbitMQ gets the same from its queue process being busy delivering).
    pub paced: AtomicBool,
    /// Paced because all queues together hold too much (see `PACE_TOTAL`): publishers
    /// wait for the queue to wake them, with no pace floor (one read of a fanout
    /// publisher is a thousand deliveries).
    pub crowded: AtomicBool,
    /// Set once the queue is deleted; a stale handle then drops what it is sent.
    pub deleted: AtomicBool,
    /// Id of a durable queue in the store (prefix of its message keys).
    pub store_id: Option<u64>,
    /// Its vhost's name.
    pub vhost_name: Arc<str>,
    /// Ready messages and body bytes, as the actor last reported (for reject-publish at
    /// the channel). On a line of their own: the actor writes them on every turn, and
    /// publishers read the flags above on every publish.
    pub ready: CachePadded<(AtomicUsize, AtomicU64)>,
    /// A delayed exchange's waiting room (`broker/delayed.rs`): messages waiting, and
    /// when the next is due (ms since the epoch, 0 for none), as its actor last
    /// reported. Zero for every other queue.
    pub waiting: (AtomicUsize, AtomicU64),
    /// Counters for metrics and the management API.
    pub counters: QueueCounters,
    /// A stream's log (`x-queue-type: stream`): publishes append to it on the
    /// publisher's thread (`broker/publish.rs`) instead of going through the inbox.
    pub stream: Option<Arc<broker_store::stream::StreamLog>>,
    /// A quorum queue (`x-queue-type: quorum`): its messages go into its Raft log, not
    /// the message store, and a publish's confirm waits for the queue's commit.
    pub quorum: bool,
    /// `None`: the queue runs on this node. `Some(node)`: it lives on that node of the
    /// cluster and this entry only describes it (`remote.rs`, docs/design/cluster.md §6).
    pub home: Option<Arc<str>>,
    /// How a queue of another node is reached: publishes and notes leave through it
    /// (`remote/outbox.rs`); `None` for a queue of this node.
    pub remote: Option<super::Outbox>,
    /// A quorum queue's member nodes from its record (empty: a group of one on its
    /// home node, as on a cluster of one).
    pub quorum_members: Vec<Arc<str>>,
    /// `x-message-deduplication`: duplicates are not enqueued (checked in
    /// `Routed::new`); `None` for most queues, and for a queue of another node (its
    /// home checks).
    pub dedup: Option<Arc<crate::broker::dedup::Deduper>>,
}

/// Message counters of a queue since it was created, and rates sampled from them.
#[derive(Debug, Default)]
pub struct QueueCounters {
    /// Messages enqueued.
    pub published: AtomicU64,
    /// Deliveries to consumers and basic.get.
    pub delivered: AtomicU64,
    /// Of those, redeliveries.
    pub redelivered: AtomicU64,
    /// Acks.
    pub acked: AtomicU64,
    /// The last sample (when, counters) and the rates (per second) it gave:
    /// publish, deliver_get, redeliver, ack.
    samples: std::sync::Mutex<Option<RateSample>>,
}

/// When a sample was taken, the counters then, and the rates since the one before.
type RateSample = (std::time::Instant, [u64; 4], [f64; 4]);

impl QueueCounters {
    /// The counters: publish, deliver_get, redeliver, ack.
    pub fn values(&self) -> [u64; 4] {
        [
            self.published.load(Ordering::Relaxed),
            self.delivered.load(Ordering::Relaxed),
            self.redelivered.load(Ordering::Relaxed),
            self.acked.load(Ordering::Relaxed),
        ]
    }

    /// Takes a sample; the rates are the change since the previous one.
    pub fn sample(&self) {
        let now = std::time::Instant::now();
        let v = self.values();
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let rates = match *s {
            Some((t, prev, _)) => {
                let dt = now.duration_since(t).as_secs_f64().max(0.001);
                let mut r = [0.0; 4];
                for i in 0..4 {
                    r[i] = v[i].saturating_sub(prev[i]) as f64 / dt;
                }
                r
            }
            None => [0.0; 4],
        };
        *s = Some((now, v, rates));
    }

    /// Rates per second from the last two samples: publish, deliver_get, redeliver, ack.
    pub fn rates(&self) -> [f64; 4] {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or([0.0; 4], |(_, _, r)| r)
    }
}

impl QueueEntry {
    /// Whether connection `conn` may use this queue (405 RESOURCE_LOCKED if not).
    pub fn check_access(&self, conn: u64) -> Result<(), AmqpError> {
        match self.exclusive_owner {
            Some(owner) if owner != conn => Err(Self::locked(&self.name, &self.vhost_name)),
            _ => Ok(()),
        }
    }

    /// The 405 RabbitMQ answers for an exclusive queue of another connection.
    pub fn locked(name: &str, vhost: &str) -> AmqpError {
        broker_core::declare::queue_locked(name, vhost)
    }

    /// Takes arguments after a policy change (the actor is told separately).
    pub fn set_args(&self, args: QueueArgs) {
        self.may_refuse.store(may_refuse(&args), Ordering::Relaxed);
        self.args.store(Arc::new(args));
    }

    /// Sends a published message to the queue: into its inbox, waking the actor unless a
    /// wake-up is already on its way. A deleted queue drops it.
    pub fn enqueue(&self, msg: Arc<Message>) {
        self.enqueue_ticketed(msg, None);
    }

    /// [`QueueEntry::enqueue`] with the ticket a quorum queue answers once the message
    /// is committed (other queues never get one). A deleted queue drops it, ticket
    /// included (the publisher's confirm then waits for the channel to close, as with
    /// a deleted classic queue's store write).
    pub fn enqueue_ticketed(&self, msg: Arc<Message>, ticket: Option<super::Ticket>) {
        if self.deleted.load(Ordering::Acquire) {
            if let Some(t) = ticket {
                t.confirm
                    .do_send(super::QuorumConfirmed(vec![(t.seq, false)]));
            }
            return;
        }
        if let Some(o) = &self.remote {
            // to the home, through the outbox (`remote/outbox.rs`)
            if self.inbox.push_ticketed(msg, ticket) {
                o.wake();
            }
            return;
        }
        if self.stream.is_some() {
            // appended to the log already (`Routed::store`)
            self.counters.published.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.inbox.push_ticketed(msg, ticket) {
            self.addr.do_send(TakeInbox);
        }
    }

    /// A connection paused on this hot queue: it is woken when the actor has taken the
    /// inbox in. Returns false (and registers nothing that matters) if the queue has
    /// already cooled down.
    pub fn wait_for_room(
        &self,
        conn: u64,
        r: actix::Recipient<crate::broker::messages::ResumeRead>,
    ) -> bool {
        self.inbox.wait(conn, r);
        self.still_hot()
    }

    /// Whether publishers to this queue should pause.
    pub fn is_hot(&self) -> bool {
        self.inbox.len() > QUEUE_CREDIT || self.paced.load(Ordering::Relaxed)
    }

    /// Whether the inbox is still over credit for a paused publisher (credit comes back
    /// below half).
    pub fn over_credit(&self) -> bool {
        self.inbox.len() > QUEUE_CREDIT / 2
    }

    /// Whether a paused publisher must stay paused: over credit, or paced.
    pub fn still_hot(&self) -> bool {
        self.over_credit() || self.paced.load(Ordering::SeqCst)
    }

    /// Whether a queue that refuses messages when full (x-overflow reject-publish or
    /// reject-publish-dlx) has no room for a message with `body_len` bytes. Counts the
    /// messages still on their way to the actor.
    pub fn refuses(&self, body_len: usize) -> bool {
        if !self.may_refuse.load(Ordering::Relaxed) || self.quorum || !self.is_local() {
            // a quorum queue's state machine decides (it nacks what it refuses), and a
            // queue of another node decides at its home
            return false;
        }
        let args = self.args.load();
        if args.overflow == Overflow::DropHead || !args.has_length_limit() {
            return false;
        }
        let len = self.ready.0.load(Ordering::Relaxed) + self.inbox.len();
        let bytes = (self.ready.1.load(Ordering::Relaxed) + self.inbox.bytes()) as usize;
        broker_core::queue::full(&args, len, bytes, body_len)
    }
}

/// Whether a queue with these arguments can refuse a publish.
pub fn may_refuse(args: &QueueArgs) -> bool {
    args.overflow != Overflow::DropHead && args.has_length_limit()
}
