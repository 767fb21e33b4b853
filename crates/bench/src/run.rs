//! Running a scenario: producers and consumers on raw connections for a bounded time,
//! counting what was published, confirmed and consumed, with end-to-end latency taken
//! from the send time each body carries in its first 8 bytes.

mod backlog;
mod consumer;
mod delayed;
mod stream;
use backlog::{idle, prefill};
use consumer::consumer;
pub use stream::StreamOffset;

use crate::amqp::{self, Conn, Frame, Value};
use crate::stats::{self, Percentiles};
use bytes::BytesMut;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// What to run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// host:port.
    pub addr: String,
    /// Credentials and vhost.
    pub user: String,
    /// Password.
    pub password: String,
    /// Vhost.
    pub vhost: String,
    /// Producers.
    pub producers: usize,
    /// Consumers.
    pub consumers: usize,
    /// Queues (producer i and consumer i use queue i % queues).
    pub queues: usize,
    /// Body size in bytes (at least 8: the send time).
    pub size: usize,
    /// Measurement time.
    pub duration: Duration,
    /// Publisher confirms with this many outstanding (0: off).
    pub confirm: usize,
    /// Persistent messages on durable queues.
    pub persistent: bool,
    /// Consumers ack automatically (no-ack).
    pub auto_ack: bool,
    /// Prefetch for manual ack.
    pub prefetch: u16,
    /// Ack with multiple every this many deliveries.
    pub multiple_ack: u64,
    /// Fanout: one producer publishes to an exchange (of `exchange_type`) bound to this
    /// many queues, each with one consumer (0: off).
    pub fanout: usize,
    /// The type of the `fanout` scenario's exchange: `fanout` (every queue gets every
    /// message), `direct` (queue i bound with its own name; the producer cycles through
    /// the names, so each message goes to one queue), `x-consistent-hash` (every queue
    /// bound with weight 1) or `x-modulus-hash`; the hashing types get the producer's
    /// routing keys cycling through 1024 distinct ones.
    pub exchange_type: String,
    /// The `--fanout` scenario's exchange is declared with `x-schema` naming this
    /// registry schema, and messages are JSON (`application/json`, `size` bytes, no
    /// end-to-end latency: the body carries no timestamp). `None`: off.
    pub schema: Option<String>,
    /// With `schema`: the scenario without the argument, the same JSON bodies (the
    /// baseline of the schema's cost).
    pub json_body: bool,
    /// Publish this many messages first, then drain them (0: off).
    pub prefill: u64,
    /// Fixed total publish rate in msg/s (0: as fast as possible).
    pub rate: u64,
    /// The generator's socket send buffer in bytes (0: the kernel's autotuning). A
    /// publisher held by flow control queues up to this much in its own kernel before
    /// the broker reads it, which counts in the latency measured from the publish call.
    pub sndbuf: usize,
    /// Open this many idle connections instead (0: off).
    pub idle_connections: usize,
    /// The broker's pid, for its RSS and CPU.
    pub broker_pid: Option<u32>,
    /// Queue name prefix.
    pub prefix: String,
    /// `x-queue-type` of the declared queues (`stream`: durable, never purged, fresh
    /// at the start unless `no_publish`; consumers use prefetch and manual acks).
    pub queue_type: Option<String>,
    /// Where stream consumers start (`x-stream-offset`); unset: RabbitMQ's default
    /// (`next`), or `first` after a prefill.
    pub stream_offset: Option<StreamOffset>,
    /// With a numeric `stream_offset`, consumer i of a queue starts at offset + i × step.
    pub offset_step: u64,
    /// Publish nothing: consumers read what the queues (streams) already hold.
    pub no_publish: bool,
    /// Messages each consumer reads before it stops (0: read for `duration`).
    pub count: u64,
    /// Leave the queues in place at the end (a later run reads them).
    pub keep: bool,
    /// The delayed-message scenario: publish this many messages to an
    /// `x-delayed-message` exchange, due over `delay_window` (0: off).
    pub delayed: u64,
    /// When the delayed scenario's messages fall due: uniformly over this window, which
    /// starts `delay_lead` after the first publish.
    pub delay_window: Duration,
    /// See `delay_window`: time for the publishing to finish before the first is due.
    pub delay_lead: Duration,
}

impl Scenario {
    /// Whether the queues are streams.
    pub fn is_stream(&self) -> bool {
        self.queue_type.as_deref() == Some("stream")
    }
}

/// What came out.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Seconds measured.
    pub seconds: f64,
    /// Messages published.
    pub published: u64,
    /// Messages confirmed.
    pub confirmed: u64,
    /// Messages consumed.
    pub consumed: u64,
    /// Published per second.
    pub publish_rate: f64,
    /// Consumed per second.
    pub consume_rate: f64,
    /// End-to-end latency, µs.
    pub latency_us: Percentiles,
    /// Confirm latency, µs.
    pub confirm_latency_us: Percentiles,
    /// Prefill: publish rate of the backlog.
    pub prefill_publish_rate: Option<f64>,
    /// Prefill: drain rate.
    pub prefill_drain_rate: Option<f64>,
    /// Idle connections held.
    pub idle_connections: Option<usize>,
    /// Broker RSS per idle connection, bytes.
    pub rss_per_connection: Option<f64>,
    /// Broker peak RSS during the run, bytes.
    pub broker_peak_rss: Option<u64>,
    /// Broker CPU seconds during the run.
    pub broker_cpu_seconds: Option<f64>,
    /// From basic.consume sent to the first delivery read, the slowest consumer's (ms).
    pub first_delivery_ms: Option<f64>,
    /// Each consumer's first delivery's `x-stream-offset`, in the order they came.
    pub first_offsets: Vec<i64>,
    /// Consumed per second from the first delivery to the last (a seek's read rate).
    pub read_rate_after_first: Option<f64>,
    /// Prefill: wall-clock start and end of publishing (ms since the epoch), so a
    /// later run can seek a stream by timestamp into the middle of it.
    pub prefill_started_unix_ms: Option<u64>,
    /// See `prefill_started_unix_ms`.
    pub prefill_ended_unix_ms: Option<u64>,
    /// This generator's CPU microseconds per message moved.
    pub generator_cpu_us_per_msg: f64,
}

fn queue_name(s: &Scenario, i: usize) -> String {
    format!("{}-{}", s.prefix, i)
}

async fn connect(s: &Scenario) -> io::Result<Conn> {
    Conn::open(&s.addr, &s.user, &s.password, &s.vhost, s.sndbuf).await
}

/// Shared counters.
#[derive(Default)]
struct Counters {
    published: AtomicU64,
    confirmed: AtomicU64,
    consumed: AtomicU64,
    latencies: Mutex<Vec<u64>>,
    confirm_latencies: Mutex<Vec<u64>>,
    /// Each consumer's (ns from consume to its first delivery, when it arrived (ns
    /// since the epoch), its x-stream-offset).
    firsts: Mutex<Vec<(u64, u64, Option<i64>)>>,
    /// When the last delivery arrived (ns since the epoch).
    last_ns: AtomicU64,
}

fn now_ns(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

/// A JSON object of about `size` bytes (at least its fixed fields): the schema
/// scenario's body, valid against crates/bench/schemas/order.json.
fn json_body(size: usize) -> Vec<u8> {
    let head = r#"{"id":"order-000001","qty":3,"price":12.5,"tags":["a","b"],"note":""#;
    let pad = size.saturating_sub(head.len() + 2);
    let mut b = Vec::with_capacity(head.len() + pad + 2);
    b.extend_from_slice(head.as_bytes());
    b.extend(std::iter::repeat_n(b'x', pad));
    b.extend_from_slice(b"\"}");
    b
}

/// Routing keys the hashing exchange scenarios cycle through.
const HASH_KEYS: usize = 1024;

/// The key a queue of the `--fanout` scenario is bound with.
fn binding_key(s: &Scenario, queue: &str) -> String {
    match s.exchange_type.as_str() {
        "direct" | "topic" => queue.to_string(),
        "x-consistent-hash" => "1".to_string(),
        _ => String::new(),
    }
}

/// The routing keys the `--fanout` scenario's producer cycles through.
fn producer_keys(s: &Scenario, queues: &[String]) -> Vec<String> {
    match s.exchange_type.as_str() {
        "direct" | "topic" => queues.to_vec(),
        "x-consistent-hash" | "x-modulus-hash" => {
            (0..HASH_KEYS).map(|i| format!("k{i:04}")).collect()
        }
        _ => vec![String::new()],
    }
}

/// Publishes until `stop` (or `limit` messages), to `exchange`, cycling through `keys`.
#[allow(clippy::too_many_arguments)]
async fn producer(
    s: Scenario,
    exchange: String,
    keys: Vec<String>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
    limit: Option<u64>,
    rate: f64,
    c: Arc<Counters>,
) -> io::Result<()> {
    let mut conn = connect(&s).await?;
    if s.confirm > 0 {
        conn.confirm_select().await?;
    }
    let json = s.schema.is_some() || s.json_body;
    let body = if json {
        json_body(s.size)
    } else {
        vec![0u8; s.size.max(8)]
    };
    let content_type = json.then_some("application/json");
    // one encoded publish per routing key, each with where the body's first 8 bytes sit
    let templates: Vec<(BytesMut, usize)> = keys
        .iter()
        .map(|key| {
            let mut t = BytesMut::new();
            amqp::publish(&mut t, 1, &exchange, key, &body, s.persistent, content_type);
            let ts_at = t.len() - 1 - body.len().min((amqp::FRAME_MAX - 8) as usize);
            (t, ts_at)
        })
        .collect();
    let longest = templates.iter().map(|t| t.0.len()).max().unwrap_or(0);
    let batch = if s.confirm > 0 {
        s.confirm.clamp(1, 100)
    } else {
        100
    };
    let mut out = BytesMut::with_capacity(longest * batch);
    let mut sent: u64 = 0;
    let mut acked: u64 = 0;
    let mut pending: BTreeMap<u64, u64> = BTreeMap::new();
    let started = Instant::now();
    let mut conf_lat = Vec::new();
    while !stop.load(Ordering::Relaxed) && limit.is_none_or(|l| sent < l) {
        let mut n = batch as u64;
        if let Some(l) = limit {
            n = n.min(l - sent);
        }
        if rate > 0.0 {
            // pace: how many should have gone by now
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            if due <= sent {
                tokio::time::sleep(Duration::from_micros(200)).await;
                continue;
            }
            n = n.min(due - sent);
        }
        if s.confirm > 0 {
            n = n.min((s.confirm as u64).saturating_sub(sent - acked));
        }
        if n > 0 {
            out.clear();
            // one clock read per batch: the batch goes out in one write
            let ts = now_ns(epoch);
            for _ in 0..n {
                let (template, ts_at) = &templates[(sent % templates.len() as u64) as usize];
                let ts_at = *ts_at;
                let at = out.len();
                out.extend_from_slice(template);
                if !json {
                    out[at + ts_at..at + ts_at + 8].copy_from_slice(&ts.to_be_bytes());
                }
                sent += 1;
                if s.confirm > 0 {
                    pending.insert(sent, ts);
                }
            }
            conn.wr.write_all(&out).await?;
            c.published.fetch_add(n, Ordering::Relaxed);
        }
        if s.confirm > 0 && (sent - acked >= s.confirm as u64 || n == 0) {
            // wait for confirms to make room
            match conn.next_within(Duration::from_millis(200)).await {
                Some(Ok(Frame::Method(60, 80, a))) => {
                    acked += settle(&a, &mut pending, now_ns(epoch), &mut conf_lat);
                }
                Some(Ok(Frame::Method(60, 120, _))) => {
                    return Err(io::Error::other("the broker nacked a publish"));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
    }
    // let outstanding confirms arrive (bounded)
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.confirm > 0 && acked < sent && Instant::now() < deadline {
        if let Some(Ok(Frame::Method(60, 80, a))) =
            conn.next_within(Duration::from_millis(200)).await
        {
            acked += settle(&a, &mut pending, now_ns(epoch), &mut conf_lat);
        }
    }
    c.confirmed.fetch_add(acked, Ordering::Relaxed);
    if let Ok(mut l) = c.confirm_latencies.lock() {
        l.extend(conf_lat);
    }
    Ok(())
}

/// Settles a basic.ack (delivery tag, multiple) against the outstanding publishes;
/// returns how many it confirmed and records their confirm latency (µs).
fn settle(args: &[u8], pending: &mut BTreeMap<u64, u64>, now: u64, lat: &mut Vec<u64>) -> u64 {
    if args.len() < 9 {
        return 0;
    }
    let mut t = [0u8; 8];
    t.copy_from_slice(&args[..8]);
    let tag = u64::from_be_bytes(t);
    let done: Vec<(u64, u64)> = if args[8] & 1 == 1 {
        let rest = pending.split_off(&(tag + 1));
        std::mem::replace(pending, rest).into_iter().collect()
    } else {
        pending
            .remove(&tag)
            .map(|ts| vec![(tag, ts)])
            .unwrap_or_default()
    };
    for (_, ts) in &done {
        lat.push(now.saturating_sub(*ts) / 1000);
    }
    done.len() as u64
}

/// Samples the broker's RSS every 100 ms until stopped; returns the peak.
fn rss_sampler(pid: Option<u32>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Option<u64>> {
    tokio::spawn(async move {
        let pid = pid?;
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(stats::proc_rss(pid).unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(peak.max(stats::proc_rss(pid).unwrap_or(0)))
    })
}

/// Declares the scenario's fanout exchange and, if `queues`, its queues (purged). In
/// the flow scenarios consumers declare their own queues instead, as PerfTest does.
async fn setup(s: &Scenario, queues: bool) -> io::Result<(String, Vec<String>)> {
    let mut c = connect(s).await?;
    let n = if s.fanout > 0 {
        s.fanout
    } else {
        s.queues.max(1)
    };
    let names: Vec<String> = (0..n).map(|i| queue_name(s, i)).collect();
    let exchange = if s.fanout > 0 {
        format!("{}-{}", s.prefix, s.exchange_type)
    } else {
        String::new()
    };
    if let (true, Some(name)) = (s.fanout > 0, &s.schema) {
        let args = [("x-schema", amqp::Value::Str(name.clone()))];
        c.declare_exchange_args(&exchange, &s.exchange_type, &args)
            .await?;
    } else if s.fanout > 0 {
        c.declare_exchange(&exchange, &s.exchange_type).await?;
    }
    if queues || s.is_stream() {
        for q in &names {
            if s.is_stream() && !s.no_publish {
                // a fresh stream: what an earlier run left would be read too
                c.delete_queue(q).await?;
            }
            declare(&mut c, s, q, &exchange).await?;
        }
    }
    Ok((exchange, names))
}

/// Declares, purges and (fanout) binds one queue. A stream is declared durable with
/// its `x-queue-type` and never purged (streams refuse queue.purge).
async fn declare(c: &mut Conn, s: &Scenario, q: &str, exchange: &str) -> io::Result<()> {
    let args: Vec<(&str, Value)> = s
        .queue_type
        .iter()
        .map(|t| ("x-queue-type", Value::Str(t.clone())))
        .collect();
    c.declare_queue(q, s.persistent || s.is_stream(), &args)
        .await?;
    if !s.is_stream() {
        c.purge(q).await?;
    }
    if s.fanout > 0 {
        c.bind(q, exchange, &binding_key(s, q)).await?;
    }
    Ok(())
}

/// Deletes the scenario's queues.
pub async fn cleanup(s: &Scenario) -> io::Result<()> {
    let mut c = connect(s).await?;
    let n = if s.fanout > 0 {
        s.fanout
    } else {
        s.queues.max(1)
    };
    for i in 0..n {
        c.delete_queue(&queue_name(s, i)).await?;
    }
    Ok(())
}

/// Runs the scenario.
pub async fn run(s: Scenario) -> io::Result<Report> {
    let cpu0 = stats::own_cpu_seconds();
    let broker_cpu0 = s.broker_pid.and_then(stats::proc_cpu_seconds);
    let stop_rss = Arc::new(AtomicBool::new(false));
    let sampler = rss_sampler(s.broker_pid, stop_rss.clone());
    let mut r = if s.delayed > 0 {
        delayed::delayed(&s).await?
    } else if s.idle_connections > 0 {
        idle(&s).await?
    } else if s.no_publish || (s.prefill > 0 && s.is_stream()) {
        stream::read(&s).await?
    } else if s.prefill > 0 {
        prefill(&s).await?
    } else {
        flow(&s).await?
    };
    stop_rss.store(true, Ordering::Relaxed);
    r.broker_peak_rss = sampler.await.ok().flatten();
    if let (Some(a), Some(pid)) = (broker_cpu0, s.broker_pid) {
        r.broker_cpu_seconds = stats::proc_cpu_seconds(pid).map(|b| b - a);
    }
    let moved = (r.published + r.consumed).max(1) as f64;
    r.generator_cpu_us_per_msg = (stats::own_cpu_seconds() - cpu0) * 1e6 / moved;
    Ok(r)
}

/// Producers and consumers at the same time for `duration`.
async fn flow(s: &Scenario) -> io::Result<Report> {
    // Publish-only runs (`-y 0`) declare the queues here: without a consumer to declare
    // them every publish would be unroutable, and confirmed without reaching any queue.
    let publish_only = s.fanout == 0 && s.consumers == 0;
    let (exchange, queues) = setup(s, publish_only).await?;
    let epoch = Instant::now();
    let c = Arc::new(Counters::default());
    let stop_p = Arc::new(AtomicBool::new(false));
    let stop_c = Arc::new(AtomicBool::new(false));
    let consumers: usize = if s.fanout > 0 { s.fanout } else { s.consumers };
    let mut tasks = Vec::new();
    for i in 0..consumers {
        let q = queues[i % queues.len()].clone();
        // consumers declare their queues (idempotent if several share one)
        let declares = Some(exchange.clone());
        tasks.push(tokio::spawn(consumer(
            s.clone(),
            q,
            declares,
            epoch,
            stop_c.clone(),
            None,
            c.clone(),
        )));
    }
    // consumers subscribe before the clock starts
    tokio::time::sleep(Duration::from_millis(300)).await;
    let producers = if s.fanout > 0 { 1 } else { s.producers };
    let rate = if s.rate > 0 {
        s.rate as f64 / producers.max(1) as f64
    } else {
        0.0
    };
    let mut ptasks = Vec::new();
    let start = Instant::now();
    for i in 0..producers {
        let keys = if s.fanout > 0 {
            producer_keys(s, &queues)
        } else {
            vec![queues[i % queues.len()].clone()]
        };
        ptasks.push(tokio::spawn(producer(
            s.clone(),
            exchange.clone(),
            keys,
            epoch,
            stop_p.clone(),
            None,
            rate,
            c.clone(),
        )));
    }
    tokio::time::sleep(s.duration).await;
    let consumed_at_end = c.consumed.load(Ordering::Relaxed);
    let published_at_end = c.published.load(Ordering::Relaxed);
    let seconds = start.elapsed().as_secs_f64();
    stop_p.store(true, Ordering::Relaxed);
    for t in ptasks {
        t.await.map_err(io::Error::other)??;
    }
    stop_c.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.map_err(io::Error::other)??;
    }
    if !s.keep {
        let _ = cleanup(s).await;
    }
    let latencies = std::mem::take(
        &mut *c
            .latencies
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?,
    );
    let confirms = std::mem::take(
        &mut *c
            .confirm_latencies
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?,
    );
    Ok(Report {
        seconds,
        published: published_at_end,
        confirmed: c.confirmed.load(Ordering::Relaxed),
        consumed: consumed_at_end,
        publish_rate: published_at_end as f64 / seconds,
        consume_rate: consumed_at_end as f64 / seconds,
        latency_us: stats::percentiles(latencies),
        confirm_latency_us: stats::percentiles(confirms),
        ..Report::default()
    })
}

/// The generator needs a descriptor per idle connection.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls with a valid pointer to a local struct
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_settle_single_and_multiple() {
        let mut p: BTreeMap<u64, u64> = (1..=10).map(|i| (i, i * 1000)).collect();
        let mut lat = vec![];
        let mut ack = |tag: u64, multiple: bool, p: &mut BTreeMap<u64, u64>| {
            let mut a = tag.to_be_bytes().to_vec();
            a.push(u8::from(multiple));
            settle(&a, p, 20_000, &mut lat)
        };
        assert_eq!(ack(3, false, &mut p), 1);
        assert_eq!(ack(5, true, &mut p), 4, "1, 2, 4, 5");
        assert_eq!(ack(5, true, &mut p), 0, "nothing twice");
        assert_eq!(ack(10, true, &mut p), 5);
        assert!(p.is_empty());
        assert_eq!(lat.len(), 10);
        assert_eq!(lat[0], 17, "(20000 - 3000) ns = 17 us");
    }
}
