//! The one publish path that AMQP `basic.publish` (the channel), the management API's
//! publish and dead-lettering share, so a check added here applies to all three.
//!
//! A client's publish, over AMQP or HTTP, is checked the same way before routing
//! (`check_client`: the `user_id` property must name the publishing user and an
//! expiration must be a non-negative integer; `client_route`: the exchange must exist and
//! must not be internal). Every publish, dead letters included, then leaves out the queues
//! that refuse it (`Routed::new`: x-overflow reject-publish(-dlx) and full), is stored for
//! its durable queues (`Routed::store`) and handed to the others (`Routed::deliver`). A
//! resource alarm (memory or disk, `Node::alarm`) stops AMQP publishers by not reading
//! their sockets; the management API asks it and answers 503 instead.

use crate::broker::node::Storage;
use crate::broker::queue::{QueueEntry, QueueHost, Ticket};
use crate::broker::vhost::VHost;
use broker_core::args::Overflow;
use broker_core::deadletter::Target;
use broker_core::store::StoreError;
use broker_core::{AmqpError, Message};
use broker_wire::protocol::basic::AMQPProperties;
use broker_wire::types::FieldTable;
use std::sync::Arc;

/// What RabbitMQ refuses in a client's publish properties, before routing: a user_id
/// other than the publishing user (406), and an expiration that is not a non-negative
/// integer (406).
pub fn check_client(props: &AMQPProperties, user: &str) -> Result<(), AmqpError> {
    if let Some(id) = props.user_id() {
        // the broker's own user (a local shovel) forwards other users' messages as they are
        if id.as_str() != user && user != broker_core::auth::INTERNAL_USER {
            return Err(AmqpError::precondition_failed(format!(
                "user_id property set to '{}' but authenticated user was '{user}'",
                id.as_str()
            )));
        }
    }
    if let Some(exp) = props.expiration() {
        broker_core::message::parse_expiration(exp.as_str()).map_err(|why| {
            AmqpError::precondition_failed(format!("invalid expiration '{}': {why}", exp.as_str()))
        })?;
    }
    Ok(())
}

/// Routes a client's publish: the default exchange ("") by queue name, any other through
/// its binding snapshots. A missing exchange is 404, an internal one 403 (only
/// exchange-to-exchange bindings and dead-lettering may route through it). An exchange
/// with `x-message-deduplication` routes a duplicate nowhere (unroutable, as LavinMQ:
/// mandatory returns it, a confirm acks it); a delayed exchange routes a message with
/// `x-delay` > 0 to its waiting room. Queues found are added to `out`; returns whether
/// the result depends on the routing key only (and so may be cached: never for a
/// deduplicating or delayed exchange, whose every publish must be looked at).
pub fn client_route(
    vhost: &VHost,
    exchange: &str,
    routing_key: &str,
    properties: Option<&AMQPProperties>,
    out: &mut Vec<Arc<QueueEntry>>,
) -> Result<bool, AmqpError> {
    if exchange.is_empty() {
        if let Some(q) = vhost.queue(routing_key).filter(|q| q.takes_publishes()) {
            out.push(q);
        }
        return Ok(true);
    }
    let x = vhost.exchange(exchange).ok_or_else(|| {
        AmqpError::not_found(format!(
            "no exchange '{exchange}' in vhost '{}'",
            vhost.name
        ))
    })?;
    if x.internal {
        return Err(AmqpError::access_refused(format!(
            "cannot publish to internal exchange '{exchange}' in vhost '{}'",
            vhost.name
        )));
    }
    // the common exchange costs these two flags
    if x.dedup.is_none() && x.room.is_none() {
        return Ok(vhost.route(&x, routing_key, properties, out));
    }
    let headers = properties.and_then(|p| p.headers().as_ref());
    if x.dedup.as_ref().is_some_and(|d| d.is_duplicate(headers)) {
        return Ok(false);
    }
    // a delayed exchange's message with `x-delay` waits in its room (`delayed.rs`)
    match VHost::room_for(&x, headers) {
        Some(room) => out.push(room),
        None => {
            vhost.route(&x, routing_key, properties, out);
        }
    }
    Ok(false)
}

/// The schema the publishes to `exchange` are checked with (`None` for the default
/// exchange, a missing one and most others). Read where a route is computed, and
/// cached with it.
pub fn exchange_schema(
    vhost: &VHost,
    exchange: &str,
) -> Option<Arc<crate::broker::schemas::Attached>> {
    if exchange.is_empty() {
        return None;
    }
    vhost.exchange(exchange).and_then(|x| x.schema.load_full())
}

/// The queues of an exchange's invalid exchange (`x-schema-invalid-exchange`) for a
/// message that failed its schema, if one is set and exists (`None` otherwise: the
/// message is refused).
pub fn schema_reroute(
    vhost: &VHost,
    schema: &crate::broker::schemas::Attached,
    routing_key: &str,
    props: &AMQPProperties,
) -> Option<Vec<Arc<QueueEntry>>> {
    let to = schema.invalid_exchange.as_deref()?;
    let mut out = Vec::new();
    vhost.route_by_name(to, routing_key, Some(props), &mut out)?;
    Some(out)
}

/// The queues a message was routed to, split into those that take it and those that
/// refuse it (x-overflow reject-publish or reject-publish-dlx, and full). Queues with
/// `x-message-deduplication` for which the message is a duplicate are in neither: it is
/// not enqueued there, and if no queue is left it was unroutable (LavinMQ's rule).
pub struct Routed {
    /// Queues that take the message.
    pub queues: Arc<[Arc<QueueEntry>]>,
    /// Full queues that refuse it: the publisher is told (a nack, a 400), and
    /// reject-publish-dlx queues dead-letter it.
    pub refused_by: Vec<Arc<QueueEntry>>,
}

impl Routed {
    /// Leaves out the queues for which a message with `headers` is a duplicate, then
    /// splits off those without room for its `body_len` bytes (counting what is still
    /// on its way to them). The common case, no queue deduplicating or refusing, costs
    /// one pass and no allocation.
    pub fn new(
        queues: Arc<[Arc<QueueEntry>]>,
        headers: Option<&FieldTable>,
        body_len: usize,
    ) -> Routed {
        if !queues
            .iter()
            .any(|q| q.dedup.is_some() || q.refuses(body_len))
        {
            return Routed {
                queues,
                refused_by: Vec::new(),
            };
        }
        // a duplicate is dropped before the length check, as in LavinMQ (a duplicate
        // to a full queue is not a refusal)
        let (mut room, mut full) = (Vec::new(), Vec::new());
        for q in queues.iter() {
            if q.dedup.as_ref().is_some_and(|d| d.is_duplicate(headers)) {
                continue;
            }
            if q.refuses(body_len) {
                full.push(q.clone());
            } else {
                room.push(q.clone());
            }
        }
        Routed {
            queues: room.into(),
            refused_by: full,
        }
    }

    /// Whether a queue refused the message (the publisher is to be told).
    pub fn refused(&self) -> bool {
        !self.refused_by.is_empty()
    }

    /// Whether no queue was found at all (unroutable: mandatory returns it).
    pub fn unroutable(&self) -> bool {
        self.queues.is_empty() && self.refused_by.is_empty()
    }

    /// Writes a persistent message to the store for each durable queue that takes it,
    /// before it is enqueued. Returns whether anything was written.
    pub fn store(&self, store: Option<&Storage>, msg: &mut Message) -> Result<bool, StoreError> {
        match store {
            Some(s) => store_message(s, msg, &self.queues),
            None => Ok(false),
        }
    }

    /// Hands the message to every queue that takes it (`each` is called after each
    /// enqueue), and to the refusing queues that dead-letter refusals.
    pub fn deliver(&self, msg: &Arc<Message>, each: impl FnMut(&Arc<QueueEntry>)) {
        self.deliver_ticketed(msg, None, each);
    }

    /// [`Routed::deliver`], with the ticket each quorum queue among them answers once
    /// the message is committed in its log (a publish with confirms).
    pub fn deliver_ticketed(
        &self,
        msg: &Arc<Message>,
        ticket: Option<&Ticket>,
        mut each: impl FnMut(&Arc<QueueEntry>),
    ) {
        for q in &self.refused_by {
            if q.args.load().overflow == Overflow::RejectPublishDlx {
                q.refused(msg.clone());
            }
        }
        for q in self.queues.iter() {
            let t = if q.quorum || !q.is_local() {
                ticket.cloned()
            } else {
                None
            };
            q.enqueue_ticketed(msg.clone(), t);
            each(q);
        }
    }

    /// How many of the queues taking the message are quorum queues or queues of other
    /// nodes (each confirms the publish on its own commit: one part of its confirm
    /// each).
    pub fn quorum_parts(&self) -> u32 {
        self.queues
            .iter()
            .filter(|q| q.quorum || !q.is_local())
            .count() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_wire::types::ShortString;

    #[test]
    fn user_id_must_be_the_publisher_and_expiration_an_integer() {
        let own = AMQPProperties::default().with_user_id(ShortString::from("alice"));
        assert!(check_client(&own, "alice").is_ok());
        let e = check_client(&own, "bob").unwrap_err();
        assert_eq!(e.code, broker_core::ReplyCode::PreconditionFailed);
        assert!(
            e.text.contains("user_id property set to 'alice'"),
            "{}",
            e.text
        );
        let exp = AMQPProperties::default().with_expiration(ShortString::from("-5"));
        assert!(check_client(&exp, "alice").is_err());
        let exp = AMQPProperties::default().with_expiration(ShortString::from("100"));
        assert!(check_client(&exp, "alice").is_ok());
    }
}

/// Writes a persistent message to the store for each durable queue among `queues`
/// (the record once, an index entry per queue). Returns whether anything was written;
/// transient messages and transient queues write nothing.
fn store_message(
    store: &Storage,
    msg: &mut broker_core::Message,
    queues: &[Arc<QueueEntry>],
) -> Result<bool, StoreError> {
    let streamed = append_to_streams(store, msg, queues)?;
    // a quorum queue's messages are in its Raft log
    // and a queue of another node's on its home
    let stored = |q: &&Arc<QueueEntry>| q.stream.is_none() && !q.quorum && q.is_local();
    if !msg.is_persistent() || !queues.iter().filter(stored).any(|q| q.store_id.is_some()) {
        return Ok(streamed);
    }
    let id = store.definitions.next_id()?;
    msg.persist_id = Some(id);
    let record = broker_core::store::encode_message(msg);
    let qids: Vec<u64> = queues
        .iter()
        .filter(stored)
        .filter_map(|q| q.store_id)
        .collect();
    let mut meta = msg.meta();
    // a delayed exchange's waiting room is always its message's only queue (one look,
    // not one per queue): its index entry keeps the delay where a TTL goes, so the due
    // time comes back without the record
    if matches!(queues, [q] if q.args.load().waiting_room) {
        meta.ttl_ms = broker_core::exchange::delayed::delay_of(msg.properties.headers().as_ref());
    } else if meta.ttl_ms.is_none() && !queues.iter().any(|q| q.args.load().message_ttl.is_some()) {
        // the arrival time matters only where a TTL applies; left out, it keeps the
        // index small
        meta.arrival_ms = 0;
    }
    store.messages.insert(&qids, id, &record, meta)?;
    Ok(true)
}

/// Appends the message to every stream among `queues` (persistent or not: a stream
/// keeps everything). Returns whether there was one; the confirm then waits for the
/// commit, and the first append to a clean stream asks the flusher for one (so that
/// readers see messages whose publisher asked for no confirm).
fn append_to_streams(
    store: &Storage,
    msg: &broker_core::Message,
    queues: &[Arc<QueueEntry>],
) -> Result<bool, StoreError> {
    // encoded (and its filter value looked up) once, and only when a stream is among them
    let mut record: Option<(Vec<u8>, Option<Vec<u8>>)> = None;
    let mut any = false;
    for log in queues.iter().filter_map(|q| q.stream.as_ref()) {
        let (rec, filter) = record.get_or_insert_with(|| {
            (
                broker_core::store::encode_message(msg),
                broker_core::stream::filter_value(msg),
            )
        });
        let (_, first) = store.streams.append(log, rec, filter.as_deref())?;
        if first {
            store.flusher.request(0, 0, |_| {});
        }
        any = true;
    }
    Ok(any)
}

impl QueueHost for VHost {
    fn vhost_name(&self) -> &str {
        &self.name
    }

    fn dead_letter(&self, from: &str, target: &Target, msg: Message) {
        let mut queues = Vec::new();
        // a dead letter with `x-delay` to a delayed exchange waits, as the plugin's
        let room = self
            .exchange(&target.exchange)
            .and_then(|x| VHost::room_for(&x, msg.properties.headers().as_ref()));
        let delayed = room.is_some();
        queues.extend(room);
        for key in target.routing_keys.iter().filter(|_| !delayed) {
            if self
                .route_by_name(&target.exchange, key, Some(&msg.properties), &mut queues)
                .is_none()
            {
                // a dead-letter exchange that does not exist drops the message, as in
                // RabbitMQ
                tracing::debug!(queue = %from, exchange = %target.exchange, "dead-letter exchange missing: message dropped");
                return;
            }
        }
        queues.retain(|q| {
            (!target.implicit || &*q.name != from)
                && !broker_core::deadletter::is_cycle(&msg.properties, &q.name)
        });
        if queues.is_empty() {
            return;
        }
        // the publish path's own split: a full reject-publish queue refuses a dead letter
        // as it refuses a publish (reject-publish-dlx dead-letters it on), as in RabbitMQ
        let routed = Routed::new(
            queues.into(),
            msg.properties.headers().as_ref(),
            msg.body.len(),
        );
        let mut copy = msg;
        if let Err(e) = routed.store(self.node.store.as_ref(), &mut copy) {
            tracing::error!(queue = %from, "cannot store a dead letter: {e}");
        }
        routed.deliver(&Arc::new(copy), |_| {});
    }

    fn forward_due(
        &self,
        room: &Arc<QueueEntry>,
        due: Vec<broker_core::queue::Entry>,
        store: crate::broker::queue::StoredAt,
    ) {
        self.forward_due_from(room, due, store);
    }

    fn queue_gone(&self, name: Arc<str>) {
        if let Some(v) = self.me.upgrade() {
            actix::spawn(async move { v.forget_queue(&name).await });
        }
    }
}
