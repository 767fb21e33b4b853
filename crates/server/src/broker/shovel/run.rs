//! One shovel at work: connects its source and destination with lapin (the first URI
//! of each list that connects), takes messages with `basic.qos(prefetch)` and
//! `basic.consume`, publishes each to the destination (in confirm mode for
//! `on-confirm`) and acknowledges the source after the destination's confirm
//! (`on-confirm`), after the publish (`on-publish`) or not at all (`no-ack`). So at most
//! `prefetch` messages are in flight, and a failure of either side loses none under
//! `on-confirm`: what was not confirmed is requeued at the source when its channel goes.
//!
//! [`supervise`] runs it again after a failure, `reconnect-delay` later, doubled after
//! each failure in a row (capped), until the shovel is stopped.

use super::params::{AckMode, DeleteAfter, Dest, ShovelDef, Source};
use super::uri;
use super::{ShovelState, Status};
use futures::stream::{FuturesUnordered, StreamExt};
use lapin::options::*;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ConnectionProperties};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What a run needs besides its definition.
#[derive(Clone)]
pub struct RunCtx {
    /// The shovel's vhost and name.
    pub vhost: String,
    /// Its name.
    pub name: String,
    /// Its definition.
    pub def: Arc<ShovelDef>,
    /// Where it reports.
    pub status: Arc<Status>,
    /// This node's AMQP listener (for `amqp://` without a host).
    pub local: Option<std::net::SocketAddr>,
    /// The internal user's password on this process.
    pub secret: String,
    /// The node's name (`x-shovelled`'s `shovelled-by`).
    pub node: String,
    /// Deletes the shovel's parameter once `src-delete-after` is reached.
    pub on_done: Arc<dyn Fn() + Send + Sync>,
}

/// Longest wait between two attempts, unless `reconnect-delay` itself is longer.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a stopping shovel waits for its connections to close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Why a run ended.
enum End {
    /// `src-delete-after` reached.
    Done,
    /// Stopped (deleted, restarted, shutdown).
    Stopped,
}

/// Runs the shovel until `stop` turns true (or it deleted itself), reconnecting after
/// failures with back-off. Never returns an error and never spins: every failure waits.
pub async fn supervise(ctx: RunCtx, mut stop: watch::Receiver<bool>) {
    let base = Duration::from_secs_f64(ctx.def.reconnect_delay);
    let mut delay = base;
    loop {
        ctx.status.set(ShovelState::Starting, None);
        let started = std::time::Instant::now();
        match run_once(&ctx, &mut stop).await {
            Ok(End::Done) => {
                ctx.status
                    .set(ShovelState::Terminated, Some("completed".into()));
                (ctx.on_done)();
                return;
            }
            Ok(End::Stopped) => return,
            Err(e) => {
                tracing::warn!(vhost = %ctx.vhost, name = %ctx.name, "shovel failed: {e}");
                ctx.status.set(ShovelState::Terminated, Some(e));
            }
        }
        if base.is_zero() {
            // RabbitMQ: a reconnect-delay of 0 means the shovel stays down
            let _ = stop.wait_for(|s| *s).await;
            return;
        }
        if started.elapsed() > delay.max(base) * 2 {
            delay = base;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        delay = (delay * 2).min(MAX_BACKOFF.max(base));
    }
}

/// The lapin URI for one of the shovel's URIs (`amqp://` → this node's listener as the
/// internal user), and the URI as shown.
fn lapin_uri(ctx: &RunCtx, raw: &str) -> Result<String, String> {
    let u = uri::parse(raw)?;
    if u.host.is_some() {
        return Ok(raw.to_owned());
    }
    let local = ctx
        .local
        .ok_or("this node has no plain AMQP listener for a local shovel")?;
    let query = if u.query.is_empty() {
        String::new()
    } else {
        format!("?{}", u.query)
    };
    Ok(format!(
        "amqp://{}:{}@{}/{}{query}",
        uri::percent_encode(broker_core::auth::INTERNAL_USER),
        uri::percent_encode(&ctx.secret),
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), local.port()),
        uri::percent_encode(&u.vhost),
    ))
}

/// Connects to the first of `uris` that answers.
async fn connect(ctx: &RunCtx, uris: &[String], side: &str) -> Result<Connection, String> {
    let mut last = format!("no {side} URI");
    for raw in uris {
        let target = lapin_uri(ctx, raw)?;
        let props = ConnectionProperties::default()
            .with_connection_name(LongString::from(format!("Shovel {}", ctx.name)));
        let attempt =
            tokio::time::timeout(Duration::from_secs(30), Connection::connect(&target, props))
                .await;
        match attempt {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(e)) => last = format!("{side} {}: {e}", uri::masked(raw)),
            Err(_) => last = format!("{side} {}: connection timed out", uri::masked(raw)),
        }
    }
    Err(last)
}

fn err(what: &str) -> impl Fn(lapin::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// A JSON object as an AMQP table (queue arguments).
pub(super) fn to_table(m: &serde_json::Map<String, Value>) -> FieldTable {
    let mut t = FieldTable::default();
    // validated at PUT (`params::fits_field_table`); a key no short string can hold
    // is left out rather than panicking
    for (k, v) in m.iter().filter(|(k, _)| k.len() <= 255) {
        t.insert(ShortString::from(k.as_str()), to_amqp(v));
    }
    t
}

fn to_amqp(v: &Value) -> AMQPValue {
    match v {
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        Value::Array(a) => {
            AMQPValue::FieldArray(FieldArray::from(a.iter().map(to_amqp).collect::<Vec<_>>()))
        }
        Value::Object(m) => AMQPValue::FieldTable(to_table(m)),
        Value::Null => AMQPValue::Void,
    }
}

/// The queue `name` on `conn`: used as it is if it exists, else declared durable with
/// `args` (RabbitMQ declares it). Returns its message count.
async fn ensure_queue(
    conn: &Connection,
    name: &str,
    args: &serde_json::Map<String, Value>,
) -> Result<u32, String> {
    let ch = conn.create_channel().await.map_err(err("channel"))?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    if let Ok(q) = ch
        .queue_declare(name.into(), passive, FieldTable::default())
        .await
    {
        let _ = ch.close(200, "OK".into()).await;
        return Ok(q.message_count());
    }
    let ch = conn.create_channel().await.map_err(err("channel"))?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare(name.into(), durable, to_table(args))
        .await
        .map_err(err(&format!("cannot declare queue '{name}'")))?;
    let _ = ch.close(200, "OK".into()).await;
    Ok(q.message_count())
}

/// The source's channel and the queue it consumes from, with the count to move.
async fn open_source(
    ctx: &RunCtx,
    conn: &Connection,
) -> Result<(Channel, String, Option<u64>), String> {
    let def = &ctx.def;
    let (queue, length) = match &def.src {
        Source::Queue(q) => (q.clone(), ensure_queue(conn, q, &def.src_queue_args).await?),
        Source::Exchange { .. } => (String::new(), 0),
    };
    let ch = conn.create_channel().await.map_err(err("source channel"))?;
    let queue = match &def.src {
        Source::Queue(_) => queue,
        Source::Exchange { name, key } => {
            let opts = QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            };
            let q = ch
                .queue_declare("".into(), opts, to_table(&def.src_queue_args))
                .await
                .map_err(err("cannot declare the shovel's queue"))?;
            let qn = q.name().as_str().to_owned();
            ch.queue_bind(
                qn.as_str().into(),
                name.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(err(&format!("cannot bind to exchange '{name}'")))?;
            qn
        }
    };
    if def.ack_mode != AckMode::NoAck {
        ch.basic_qos(def.prefetch, BasicQosOptions::default())
            .await
            .map_err(err("basic.qos"))?;
    }
    let remaining = match def.delete_after {
        DeleteAfter::Never => None,
        DeleteAfter::Count(n) => Some(n),
        DeleteAfter::QueueLength => Some(u64::from(length)),
    };
    Ok((ch, queue, remaining))
}

/// The destination's channel (in confirm mode for `on-confirm`), its queue declared or
/// its exchange checked.
async fn open_dest(ctx: &RunCtx, conn: &Connection) -> Result<Channel, String> {
    let def = &ctx.def;
    match &def.dest {
        Dest::Queue(q) => drop(ensure_queue(conn, q, &def.dest_queue_args).await?),
        Dest::Exchange { name, .. } if !name.is_empty() => {
            let ch = conn.create_channel().await.map_err(err("channel"))?;
            let passive = ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            };
            ch.exchange_declare(
                name.as_str().into(),
                lapin::ExchangeKind::Direct,
                passive,
                FieldTable::default(),
            )
            .await
            .map_err(err(&format!("destination exchange '{name}'")))?;
            let _ = ch.close(200, "OK".into()).await;
        }
        _ => {}
    }
    let ch = conn
        .create_channel()
        .await
        .map_err(err("destination channel"))?;
    if def.ack_mode == AckMode::OnConfirm {
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(err("confirm.select"))?;
    }
    Ok(ch)
}

/// Connects, moves messages until stopped, done or failed; closes what it opened.
async fn run_once(ctx: &RunCtx, stop: &mut watch::Receiver<bool>) -> Result<End, String> {
    let src = connect(ctx, &ctx.def.src_uris, "source").await?;
    let dest = match connect(ctx, &ctx.def.dest_uris, "destination").await {
        Ok(d) => d,
        Err(e) => {
            let _ = src.close(200, "shovel stopped".into()).await;
            return Err(e);
        }
    };
    let result = tokio::select! {
        r = transfer(ctx, &src, &dest) => r,
        _ = stop.wait_for(|s| *s) => Ok(End::Stopped),
    };
    for c in [&src, &dest] {
        let _ = tokio::time::timeout(CLOSE_WAIT, c.close(200, "shovel stopped".into())).await;
    }
    result
}

/// The first error either connection reports.
async fn connection_error(src: &Connection, dest: &Connection) -> String {
    let mut events = futures::stream::select(
        src.events_listener().map(|e| ("source", e)),
        dest.events_listener().map(|e| ("destination", e)),
    );
    while let Some((side, e)) = events.next().await {
        if let lapin::Event::Error(e) = e {
            return format!("{side} connection: {e}");
        }
    }
    "connection closed".into()
}

async fn transfer(ctx: &RunCtx, src: &Connection, dest: &Connection) -> Result<End, String> {
    let (sch, queue, mut remaining) = open_source(ctx, src).await?;
    let dch = open_dest(ctx, dest).await?;
    if remaining == Some(0) {
        return Ok(End::Done);
    }
    let no_ack = ctx.def.ack_mode == AckMode::NoAck;
    let mut consumer = sch
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(err(&format!("cannot consume from '{queue}'")))?;
    ctx.status.set(ShovelState::Running, None);
    ctx.status.set_remaining(remaining);
    let failed = connection_error(src, dest);
    tokio::pin!(failed);
    let mut confirms = FuturesUnordered::new();
    loop {
        tokio::select! {
            e = &mut failed => return Err(e),
            Some(r) = confirms.next(), if !confirms.is_empty() => {
                settle(r).await?;
                ctx.status.unacked(-1);
            }
            d = consumer.next(), if remaining != Some(0) => {
                let d = match d {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => return Err(format!("source: {e}")),
                    None => return Err("the source cancelled the shovel's consumer".into()),
                };
                let confirm = forward(ctx, &dch, &d).await?;
                ctx.status.forwarded();
                if let Some(r) = remaining.as_mut() {
                    *r -= 1;
                    ctx.status.set_remaining(Some(*r));
                }
                match ctx.def.ack_mode {
                    AckMode::NoAck => {}
                    AckMode::OnPublish => {
                        d.acker
                            .ack(BasicAckOptions::default())
                            .await
                            .map_err(err("source ack"))?;
                    }
                    AckMode::OnConfirm => {
                        ctx.status.unacked(1);
                        confirms.push(async move { (confirm.await, d.acker) });
                    }
                }
            }
        }
        if remaining == Some(0) && confirms.is_empty() {
            return Ok(End::Done);
        }
    }
}

/// Acks the source after an ack from the destination; a nack requeues it there.
async fn settle(
    (confirm, acker): (lapin::Result<lapin::Confirmation>, lapin::Acker),
) -> Result<(), String> {
    let confirm = confirm.map_err(err("destination confirm"))?;
    if confirm.is_nack() {
        acker
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .map_err(err("source nack"))?;
    } else {
        acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(err("source ack"))?;
    }
    Ok(())
}

/// Publishes one delivery to the destination with the shovel's headers and properties.
async fn forward(
    ctx: &RunCtx,
    dch: &Channel,
    d: &lapin::message::Delivery,
) -> Result<lapin::PublisherConfirm, String> {
    let def = &ctx.def;
    let (exchange, key) = match &def.dest {
        Dest::Queue(q) => (String::new(), q.clone()),
        Dest::Exchange { name, key } => (
            name.clone(),
            key.clone()
                .unwrap_or_else(|| d.routing_key.as_str().to_owned()),
        ),
        Dest::Same => (
            d.exchange.as_str().to_owned(),
            d.routing_key.as_str().to_owned(),
        ),
    };
    let props = super::headers::outgoing(ctx, d.properties.clone());
    dch.basic_publish(
        exchange.as_str().into(),
        key.as_str().into(),
        BasicPublishOptions::default(),
        &d.data,
        props,
    )
    .await
    .map_err(err("destination publish"))
}
