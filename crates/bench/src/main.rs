//! broker-bench: a load generator for AMQP 0-9-1 brokers in the spirit of RabbitMQ's
//! PerfTest, speaking raw frames so that the generator is not what limits the figures.
//! Runs are bounded in time; the result is a table for people or JSON for scripts.

mod amqp;
mod run;
mod stats;

use clap::Parser;
use run::{Report, Scenario, StreamOffset};
use std::time::Duration;

/// Command line.
#[derive(Parser, Debug)]
#[command(name = "broker-bench", version, about)]
struct Args {
    /// Broker address host:port
    #[arg(long, default_value = "127.0.0.1:5672")]
    addr: String,
    /// User
    #[arg(long, default_value = "guest")]
    user: String,
    /// Password
    #[arg(long, default_value = "guest")]
    password: String,
    /// Vhost
    #[arg(long, default_value = "/")]
    vhost: String,
    /// Producers
    #[arg(long, short = 'x', default_value_t = 1)]
    producers: usize,
    /// Consumers
    #[arg(long, short = 'y', default_value_t = 1)]
    consumers: usize,
    /// Queues (producer/consumer i uses queue i mod N)
    #[arg(long, default_value_t = 1)]
    queues: usize,
    /// Message body size in bytes (at least 8: the send time travels in the body)
    #[arg(long, short = 's', default_value_t = 16)]
    size: usize,
    /// Seconds to measure
    #[arg(long, short = 'z', default_value_t = 10.0)]
    duration: f64,
    /// Publisher confirms with this many outstanding (0: off)
    #[arg(long, default_value_t = 0)]
    confirm: usize,
    /// Persistent messages on durable queues
    #[arg(long)]
    persistent: bool,
    /// Consumers use no-ack (automatic acknowledgement)
    #[arg(long)]
    auto_ack: bool,
    /// Prefetch count for manual ack
    #[arg(long, default_value_t = 100)]
    prefetch: u16,
    /// Ack with multiple=true every N deliveries
    #[arg(long, default_value_t = 50)]
    multiple_ack: u64,
    /// One producer to an exchange (fanout unless --exchange-type) bound to N queues,
    /// one consumer each
    #[arg(long, default_value_t = 0)]
    fanout: usize,
    /// The --fanout exchange's type: fanout, direct (each message to one queue, keys
    /// cycling over the queues), x-consistent-hash (weight 1 each) or x-modulus-hash
    /// (both with keys cycling over 1024)
    #[arg(long, default_value = "fanout")]
    exchange_type: String,
    /// Declare the --fanout exchange with `x-schema` naming this registry schema (add it
    /// first: PUT /api/schemas/%2F/NAME) and publish `application/json` bodies of --size
    /// bytes (no end-to-end latency: JSON bodies carry no timestamp)
    #[arg(long)]
    schema: Option<String>,
    /// The JSON bodies of --schema without the schema (its baseline)
    #[arg(long)]
    json_body: bool,
    /// Publish N messages first (confirmed), then drain them
    #[arg(long, default_value_t = 0)]
    prefill: u64,
    /// Fixed total publish rate, msg/s (for latency; the delayed scenario paces its
    /// publishes with it)
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// The generator's socket send buffer in bytes (0: kernel autotuning); a publisher
    /// held by flow control queues this much in its own kernel, which counts in latency
    #[arg(long, default_value_t = 0)]
    sndbuf: usize,
    /// Open N idle connections and report the broker's RSS per connection
    #[arg(long, default_value_t = 0)]
    idle_connections: usize,
    /// The broker's pid: report its peak RSS and CPU seconds
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Queue name prefix
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// x-queue-type of the queues; `stream` declares durable streams (a fresh one per
    /// run unless --no-publish), whose consumers use prefetch and manual acks
    #[arg(long)]
    queue_type: Option<String>,
    /// Where stream consumers start: first, last, next, an offset, or
    /// timestamp:<seconds since the epoch> (default next; first after --prefill)
    #[arg(long)]
    stream_offset: Option<StreamOffset>,
    /// With a numeric --stream-offset, consumer i of a queue starts i × this later
    #[arg(long, default_value_t = 0)]
    offset_step: u64,
    /// Publish nothing: consumers read the queues (streams) an earlier run left
    /// (--keep); the run ends at --count per consumer or at --duration
    #[arg(long, alias = "consumers-only")]
    no_publish: bool,
    /// Messages each consumer reads before it stops (0: the prefill, or --duration)
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Leave the queues at the end (for a later --no-publish run)
    #[arg(long)]
    keep: bool,
    /// The delayed-message scenario: publish N messages (with confirms) to an
    /// x-delayed-message exchange, each with an x-delay so that they fall due uniformly
    /// over --delay-window seconds starting --delay-lead seconds after the first
    /// publish; a consumer reads them, and latency is lateness (arrival − due time)
    #[arg(long, default_value_t = 0)]
    delayed: u64,
    /// Seconds over which the delayed scenario's messages fall due
    #[arg(long, default_value_t = 60.0)]
    delay_window: f64,
    /// Seconds from the first publish to the first due time (publishing must be over
    /// by then, or the late publishes count as late)
    #[arg(long, default_value_t = 30.0)]
    delay_lead: f64,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
    /// A label carried into the JSON output
    #[arg(long, default_value = "")]
    label: String,
}

fn table(label: &str, r: &Report) -> String {
    let mut rows: Vec<(String, String)> = vec![
        ("seconds".into(), format!("{:.1}", r.seconds)),
        ("published".into(), r.published.to_string()),
        ("consumed".into(), r.consumed.to_string()),
        (
            "publish rate (msg/s)".into(),
            format!("{:.0}", r.publish_rate),
        ),
        (
            "consume rate (msg/s)".into(),
            format!("{:.0}", r.consume_rate),
        ),
    ];
    if r.latency_us.count > 0 {
        let l = &r.latency_us;
        rows.push((
            "latency p50/p99/p99.9/max (µs)".into(),
            format!("{:.0} / {:.0} / {:.0} / {:.0}", l.p50, l.p99, l.p999, l.max),
        ));
    }
    if r.confirm_latency_us.count > 0 {
        let l = &r.confirm_latency_us;
        rows.push(("confirmed".into(), r.confirmed.to_string()));
        rows.push((
            "confirm latency p50/p99/max (µs)".into(),
            format!("{:.0} / {:.0} / {:.0}", l.p50, l.p99, l.max),
        ));
    }
    if let (Some(p), Some(d)) = (r.prefill_publish_rate, r.prefill_drain_rate) {
        rows.push((
            "backlog publish / drain (msg/s)".into(),
            format!("{p:.0} / {d:.0}"),
        ));
    }
    if let Some(n) = r.idle_connections {
        rows.push(("idle connections held".into(), n.to_string()));
    }
    if let Some(b) = r.rss_per_connection {
        rows.push((
            "broker RSS per connection (KB)".into(),
            format!("{:.1}", b / 1024.0),
        ));
    }
    if let Some(b) = r.broker_peak_rss {
        rows.push((
            "broker peak RSS (MiB)".into(),
            format!("{:.1}", b as f64 / 1048576.0),
        ));
    }
    if let Some(ms) = r.first_delivery_ms {
        rows.push(("time to first delivery (ms)".into(), format!("{ms:.1}")));
    }
    if !r.first_offsets.is_empty() {
        rows.push((
            "first x-stream-offsets".into(),
            format!("{:?}", r.first_offsets),
        ));
    }
    if let Some(rate) = r.read_rate_after_first {
        rows.push((
            "read rate after the first delivery (msg/s)".into(),
            format!("{rate:.0}"),
        ));
    }
    if let Some(c) = r.broker_cpu_seconds {
        rows.push(("broker CPU (s)".into(), format!("{c:.2}")));
    }
    rows.push((
        "generator CPU per message (µs)".into(),
        format!("{:.2}", r.generator_cpu_us_per_msg),
    ));
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = if label.is_empty() {
        String::new()
    } else {
        format!("{label}\n")
    };
    for (k, v) in rows {
        out.push_str(&format!("  {k:<w$}  {v}\n"));
    }
    out
}

fn main() {
    let a = Args::parse();
    let s = Scenario {
        addr: a.addr,
        user: a.user,
        password: a.password,
        vhost: a.vhost,
        producers: a.producers,
        consumers: a.consumers,
        queues: a.queues,
        size: a.size.max(8),
        duration: Duration::from_secs_f64(a.duration.max(0.1)),
        confirm: a.confirm,
        persistent: a.persistent,
        auto_ack: a.auto_ack,
        prefetch: a.prefetch,
        multiple_ack: a.multiple_ack,
        fanout: a.fanout,
        exchange_type: a.exchange_type,
        schema: a.schema,
        json_body: a.json_body,
        prefill: a.prefill,
        rate: a.rate,
        sndbuf: a.sndbuf,
        idle_connections: a.idle_connections,
        broker_pid: a.broker_pid,
        prefix: a.prefix,
        queue_type: a.queue_type,
        stream_offset: a.stream_offset,
        offset_step: a.offset_step,
        no_publish: a.no_publish,
        count: a.count,
        keep: a.keep,
        delayed: a.delayed,
        delay_window: Duration::from_secs_f64(a.delay_window.max(0.0)),
        delay_lead: Duration::from_secs_f64(a.delay_lead.max(0.0)),
    };
    if s.is_stream() && s.auto_ack {
        eprintln!("broker-bench: stream consumers need manual acks (drop --auto-ack)");
        std::process::exit(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("broker-bench: cannot start: {e}");
            std::process::exit(1);
        }
    };
    match rt.block_on(run::run(s)) {
        Ok(r) => {
            if a.json {
                let mut v = serde_json::to_value(&r).unwrap_or_default();
                if let Some(m) = v.as_object_mut() {
                    m.insert("label".into(), serde_json::json!(a.label));
                }
                println!("{v}");
            } else {
                print!("{}", table(&a.label, &r));
            }
        }
        Err(e) => {
            eprintln!("broker-bench: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_report_has_the_fields_scripts_read() {
        let r = Report {
            seconds: 2.0,
            published: 200,
            consumed: 200,
            publish_rate: 100.0,
            consume_rate: 100.0,
            latency_us: stats::percentiles(vec![10, 20, 30]),
            ..Report::default()
        };
        let v = serde_json::to_value(&r).unwrap();
        for k in [
            "publish_rate",
            "consume_rate",
            "published",
            "consumed",
            "latency_us",
            "broker_peak_rss",
            "generator_cpu_us_per_msg",
            "first_delivery_ms",
            "read_rate_after_first",
            "prefill_started_unix_ms",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["latency_us"]["p50"], 20.0);
        assert!(table("x", &r).contains("consume rate (msg/s)"));
    }
}
