//! `POST /api/queues/{vhost}/{name}/move` (ours, not RabbitMQ's): moves messages from
//! the head of a queue back to where they were dead-lettered from (the exchange and
//! first routing key of their most recent `x-death` entry) or to another queue (through
//! the default exchange), as a shovel would, without losing any.
//!
//! Each message is taken with a manual ack, republished through the one publish path
//! (`crate::broker::publish`: routing, full-queue refusals, the store, quorum and
//! remote queues' tickets) as a mandatory publish, and acked at the source only once
//! every destination took it: after the store's fsync for a persistent message, after
//! the commit of each quorum queue or remote home. A message that cannot be moved (no
//! `x-death`, unroutable, refused by a full queue, no write permission) is put back in
//! its place and the move stops there with the reason. Work goes in batches of
//! [`BATCH`] (one fsync each) and runs as a task of its own, so a client that hangs up
//! mid-move never leaves messages taken and unsettled.

use super::queues::{counts, find, get_one, permitted};
use super::{user, ApiError, ApiResult, State};
use crate::broker::publish::{client_route, Routed};
use crate::broker::queue::{outcome_channel, QueueEntry, Settle, Ticket};
use crate::broker::runtime::Runtime;
use crate::broker::vhost::VHost;
use actix_web::{web, HttpRequest, HttpResponse};
use broker_core::auth::{exchange_resource, Access, User};
use broker_core::names::ChannelKey;
use broker_core::Message;
use broker_wire::types::AMQPValue;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/api/queues/{vhost}/{name}/move",
        web::post().to(move_messages),
    );
}

/// Most messages one request moves.
const MAX_COUNT: u64 = 10_000;
/// Messages moved when the request names no count.
const DEFAULT_COUNT: u64 = 1_000;
/// Messages taken, republished and then settled together (one fsync, one wait).
const BATCH: u64 = 100;
/// How long the commits of quorum or remote destinations are waited for.
const CONFIRM_WAIT: Duration = Duration::from_secs(30);

/// Where the messages go.
#[derive(Clone)]
enum Destination {
    /// The exchange and routing key of each message's latest `x-death` entry.
    Origin,
    /// This queue, through the default exchange.
    Queue(String),
}

/// What a move did.
struct Outcome {
    moved: u64,
    stopped: Option<String>,
}

fn parse_body(body: &[u8], source: &str) -> Result<(u64, Destination), ApiError> {
    let body: Value = super::json_body(body)?.unwrap_or(Value::Null);
    let count = match body.get("count") {
        None | Some(Value::Null) => DEFAULT_COUNT,
        v => super::queues::number(v)
            .filter(|n| (1..=MAX_COUNT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("count must be an integer from 1 to {MAX_COUNT}"))
            })?,
    };
    let dest = match body.get("destination").and_then(Value::as_str) {
        Some("origin") => Destination::Origin,
        Some("queue") => {
            let q = body
                .get("queue")
                .and_then(Value::as_str)
                .filter(|q| !q.is_empty())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "destination \"queue\" needs the name of a queue in \"queue\"",
                    )
                })?;
            if q == source {
                return Err(ApiError::bad_request(
                    "the destination queue is the source queue",
                ));
            }
            broker_core::names::check_shortstr("queue name", q)?;
            Destination::Queue(q.to_owned())
        }
        _ => {
            return Err(ApiError::bad_request(
                "destination must be \"origin\" or \"queue\"",
            ))
        }
    };
    Ok((count, dest))
}

async fn move_messages(
    req: HttpRequest,
    rt: State,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> ApiResult {
    let u = user(&req, &rt)?;
    let (vhost, name) = path.into_inner();
    let q = find(&rt, &u, &vhost, &name)?;
    permitted(&rt, &u, &vhost, Access::Read, "queue", &name)?;
    let (count, dest) = parse_body(&body, &name)?;
    if q.stream.is_some() {
        return Err(ApiError::bad_request(format!(
            "messages cannot be moved out of stream queue '{name}' in vhost '{vhost}'"
        )));
    }
    if let Destination::Queue(_) = dest {
        permitted(&rt, &u, &vhost, Access::Write, "exchange", "amq.default")?;
    }
    if let Some(reason) = rt.alarm() {
        return Err(ApiError::alarm(reason));
    }
    let v = super::in_vhost(&rt, &u, &vhost)?;
    let runtime = rt.clone().into_inner();
    let source = q.clone();
    // a task of its own: the client hanging up must not drop a batch half settled
    let task = actix_rt::spawn(async move { run(&runtime, &u, &v, &source, &dest, count).await });
    let outcome = task
        .await
        .map_err(|_| ApiError::internal("the move stopped unexpectedly"))?;
    let remaining = counts(&q).await.ready;
    Ok(HttpResponse::Ok().json(json!({
        "moved": outcome.moved,
        "remaining": remaining,
        "stopped": outcome.stopped,
    })))
}

/// Moves up to `count` messages, batch by batch, until one cannot be moved or the
/// queue is empty.
async fn run(
    rt: &Runtime,
    u: &User,
    v: &VHost,
    q: &Arc<QueueEntry>,
    dest: &Destination,
    count: u64,
) -> Outcome {
    let mut out = Outcome {
        moved: 0,
        stopped: None,
    };
    // a publisher of its own for the quorum queues' deduplication, as a channel is
    let publisher = broker_core::quorum::ChanId {
        node: rt.store.as_ref().map_or(0, |s| s.cluster.id),
        connection: rt.next_connection_id(),
        channel: 1,
    };
    let mut seq = 0u64;
    while out.moved < count && out.stopped.is_none() {
        let want = BATCH.min(count - out.moved);
        let b = batch(rt, u, v, q, dest, want, publisher, &mut seq).await;
        out.moved += b.moved;
        out.stopped = b.stopped;
        if b.empty {
            break;
        }
    }
    out
}

/// One batch's result.
struct BatchOutcome {
    moved: u64,
    stopped: Option<String>,
    /// The source had no more messages.
    empty: bool,
}

/// The management API's channel key for moves (the get handler uses channel 0).
const MOVE_KEY: ChannelKey = ChannelKey {
    connection: 0,
    channel: 1,
};

/// Takes up to `want` messages and republishes them one by one until one cannot be
/// moved (put back at once), then waits for the destinations and settles the source:
/// acks what they took, puts back what they did not.
#[allow(clippy::too_many_arguments)]
async fn batch(
    rt: &Runtime,
    u: &User,
    v: &VHost,
    q: &Arc<QueueEntry>,
    dest: &Destination,
    want: u64,
    publisher: broker_core::quorum::ChanId,
    seq: &mut u64,
) -> BatchOutcome {
    let mut res = BatchOutcome {
        moved: 0,
        stopped: None,
        empty: false,
    };
    let since = rt.store.as_ref().map_or(0, |s| s.messages.mark());
    let (sink, mut outcomes) = outcome_channel(&rt.node.next_arbiter());
    // source id of each message published, with its ticket's seq and parts to await
    let mut published: Vec<(u64, u64, u32)> = Vec::new();
    let mut stored = false;
    while (published.len() as u64) < want {
        let got = match get_one(q, MOVE_KEY, false).await {
            Ok(Some(g)) => g,
            Ok(None) => {
                res.empty = true;
                break;
            }
            Err(e) => {
                res.stopped = Some(format!("cannot take a message from the queue: {e}"));
                break;
            }
        };
        let (id, _, msg, _) = got;
        *seq += 1;
        let ticket = Ticket {
            confirm: sink.clone(),
            publisher,
            seq: *seq,
        };
        match republish(rt, u, v, dest, &msg, ticket) {
            Ok((s, parts)) => {
                stored |= s;
                published.push((id, *seq, parts));
            }
            Err(why) => {
                q.settle(Settle::GiveBack(vec![id]));
                res.stopped = Some(why);
                break;
            }
        }
    }
    drop(sink);
    if published.is_empty() {
        return res;
    }
    let failed = wait_for_destinations(rt, since, stored, &published, &mut outcomes).await;
    let (mut acks, mut back) = (Vec::new(), Vec::new());
    for &(id, s, _) in &published {
        match failed.get(&s) {
            None => acks.push(id),
            Some(why) => {
                back.push(id);
                res.stopped.get_or_insert_with(|| why.clone());
            }
        }
    }
    res.moved = acks.len() as u64;
    if !acks.is_empty() {
        q.settle(Settle::Ack(acks));
    }
    if !back.is_empty() {
        q.settle(Settle::GiveBack(back));
    }
    res
}

/// Waits for the store's fsync (when a persistent message was stored) and for every
/// quorum or remote destination's outcome. Returns the tickets (by seq) that failed,
/// with the reason.
async fn wait_for_destinations(
    rt: &Runtime,
    since: u64,
    stored: bool,
    published: &[(u64, u64, u32)],
    outcomes: &mut mpsc::UnboundedReceiver<Vec<(u64, bool)>>,
) -> HashMap<u64, String> {
    let mut failed = HashMap::new();
    if let (true, Some(store)) = (stored, rt.store.as_ref()) {
        let (done, flushed) = tokio::sync::oneshot::channel();
        let upto = store.messages.mark();
        store.flusher.request(since, upto, move |r| {
            let _ = done.send(r.is_ok());
        });
        if flushed.await != Ok(true) {
            // every message of the batch goes back (those that were stored may then
            // be in both queues: duplicated, never lost)
            for &(_, s, _) in published {
                failed.insert(s, "the store could not write the messages".to_owned());
            }
            return failed;
        }
    }
    let mut awaited: HashMap<u64, u32> = published
        .iter()
        .filter(|(_, _, parts)| *parts > 0)
        .map(|&(_, s, parts)| (s, parts))
        .collect();
    let deadline = tokio::time::Instant::now() + CONFIRM_WAIT;
    while !awaited.is_empty() {
        let got = tokio::time::timeout_at(deadline, outcomes.recv()).await;
        let Ok(Some(batch)) = got else {
            for s in awaited.keys() {
                failed.insert(
                    *s,
                    "a quorum queue or another node did not confirm the message in time".to_owned(),
                );
            }
            break;
        };
        for (s, ok) in batch {
            if !ok {
                failed.insert(
                    s,
                    "a destination queue refused the message (it is full)".to_owned(),
                );
            }
            if let Some(n) = awaited.get_mut(&s) {
                *n -= 1;
                if *n == 0 {
                    awaited.remove(&s);
                }
            }
        }
    }
    failed
}

/// The exchange and routing key a dead-lettered message came from: its most recent
/// `x-death` entry's `exchange` and first `routing-keys`.
fn origin(msg: &Message) -> Option<(String, String)> {
    let headers = msg.properties.headers().as_ref()?;
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    let exchange = broker_core::args::str_value(first.inner().get("exchange")?)?;
    let AMQPValue::FieldArray(keys) = first.inner().get("routing-keys")? else {
        return None;
    };
    let key = broker_core::args::str_value(keys.as_slice().first()?)?;
    Some((exchange, key))
}

/// Republishes one message as a mandatory publish of the user's would be: permission,
/// topic permission, routing, full queues; then the store and the queues. Returns
/// whether it was stored (an fsync to wait for) and how many quorum or remote queues
/// will answer its ticket; or why it cannot be moved.
fn republish(
    rt: &Runtime,
    u: &User,
    v: &VHost,
    dest: &Destination,
    msg: &Message,
    ticket: Ticket,
) -> Result<(bool, u32), String> {
    let (exchange, key) = match dest {
        Destination::Queue(q) => (String::new(), q.clone()),
        Destination::Origin => origin(msg).ok_or_else(|| {
            "the message has no x-death header (it was not dead-lettered): it has no origin"
                .to_owned()
        })?,
    };
    let shown = if exchange.is_empty() {
        "amq.default"
    } else {
        &exchange
    };
    if !rt.registry.allows(
        &v.name,
        &u.name,
        Access::Write,
        exchange_resource(&exchange),
    ) {
        return Err(broker_core::auth::refused_text(
            "exchange", shown, &v.name, &u.name,
        ));
    }
    rt.registry
        .topic_perms
        .check_user(v, &u.name, true, &exchange, &key)
        .map_err(|e| e.text)?;
    let mut queues = Vec::new();
    client_route(v, &exchange, &key, Some(&msg.properties), &mut queues).map_err(|e| e.text)?;
    let routed = Routed::new(
        queues.into(),
        msg.properties.headers().as_ref(),
        msg.body.len(),
    );
    if routed.refused() {
        let names: Vec<&str> = routed.refused_by.iter().map(|q| q.name.as_ref()).collect();
        return Err(format!(
            "refused by a full queue ({}): x-overflow reject-publish",
            names.join(", ")
        ));
    }
    if routed.queues.is_empty() {
        return Err(format!(
            "unroutable: exchange '{shown}' routes routing key '{key}' to no queue in vhost '{}'",
            v.name
        ));
    }
    let mut m = Message {
        exchange: exchange.as_str().into(),
        routing_key: key.as_str().into(),
        properties: msg.properties.clone(),
        raw_properties: msg.raw_properties.clone(),
        body: msg.body.clone(),
        persist_id: None,
        arrival_ms: crate::broker::runtime::now_ms(),
    };
    let stored = routed
        .store(rt.store.as_ref(), &mut m)
        .map_err(|e| format!("the store could not write the message: {e}"))?;
    let parts = routed.quorum_parts();
    routed.deliver_ticketed(&Arc::new(m), (parts > 0).then_some(&ticket), |_| {});
    Ok((stored, parts))
}
