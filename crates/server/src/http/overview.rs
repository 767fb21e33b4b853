//! `/api/overview`, `/api/whoami` and Prometheus `/metrics`.

use super::{user, ApiResult, State};
use crate::broker::queue::QueueEntry;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/overview", web::get().to(overview))
        .route("/api/whoami", web::get().to(whoami))
        .route("/metrics", web::get().to(metrics));
}

/// Every queue of every vhost, with its vhost name.
pub(super) fn all_queues(rt: &crate::broker::runtime::Runtime) -> Vec<(String, Arc<QueueEntry>)> {
    let mut out = Vec::new();
    for v in rt.vhosts.iter() {
        for q in v.value().queues() {
            out.push((v.key().clone(), q));
        }
    }
    out.sort_by(|a, b| (&a.0, &a.1.name).cmp(&(&b.0, &b.1.name)));
    out
}

async fn overview(req: HttpRequest, rt: State) -> ApiResult {
    let u = user(&req, &rt)?;
    let mut ready = 0u64;
    let mut unacked = 0u64;
    let (mut published, mut delivered, mut acked, mut redelivered) = (0u64, 0u64, 0u64, 0u64);
    let queues = all_queues(&rt);
    let mut consumers = 0usize;
    for (vh, q) in &queues {
        if !super::sees(&rt, &u, vh) {
            continue;
        }
        if let Ok(i) = q.info().await {
            ready += i.ready;
            unacked += i.unacked;
            consumers += i.consumers.len();
        }
        published += q.counters.published.load(Ordering::Relaxed);
        delivered += q.counters.delivered.load(Ordering::Relaxed);
        acked += q.counters.acked.load(Ordering::Relaxed);
        redelivered += q.counters.redelivered.load(Ordering::Relaxed);
    }
    let channels: usize = rt
        .conn_info
        .iter()
        .map(|c| c.channels.load(Ordering::Relaxed))
        .sum();
    let listen = rt.amqp_addr.get().map(|a| a.port()).unwrap_or(5672);
    Ok(HttpResponse::Ok().json(json!({
        "management_version": env!("CARGO_PKG_VERSION"),
        "product_name": "broker",
        "product_version": env!("CARGO_PKG_VERSION"),
        "rabbitmq_version": "3.10.8",
        "cluster_name": "broker",
        "node": "broker@localhost",
        "erlang_version": "none",
        "object_totals": {
            "connections": rt.conn_info.len(),
            "channels": channels,
            "queues": queues.len(),
            "exchanges": rt.vhosts.iter().map(|v| v.exchanges().len()).sum::<usize>(),
            "consumers": consumers,
        },
        "queue_totals": {
            "messages": ready + unacked,
            "messages_ready": ready,
            "messages_unacknowledged": unacked,
        },
        "message_stats": {
            "publish": published,
            "deliver_get": delivered,
            "ack": acked,
            "redeliver": redelivered,
        },
        "listeners": [{"node": "broker@localhost", "protocol": "amqp", "ip_address": "::", "port": listen}],
        "memory_used": rt.memory.used(),
        "store_bytes": store_bytes(&rt),
    })))
}

fn store_bytes(rt: &crate::broker::runtime::Runtime) -> u64 {
    rt.store.as_ref().map_or(0, |s| s.messages.size_on_disk())
}

async fn whoami(req: HttpRequest, rt: State) -> ApiResult {
    let u = user(&req, &rt)?;
    Ok(HttpResponse::Ok().json(json!({"name": u.name, "tags": u.tags})))
}

/// Prometheus text format: per-queue depth and counters, connections, channels, memory,
/// store size. Open to anyone who can reach the listener, as RabbitMQ's prometheus
/// endpoint is.
async fn metrics(rt: State) -> HttpResponse {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, rows: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in rows {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
    };
    let queues = all_queues(&rt);
    let mut infos = Vec::new();
    for (vh, q) in &queues {
        let i = q.info().await.unwrap_or_default();
        infos.push((
            format!("vhost=\"{}\",queue=\"{}\"", esc(vh), esc(&q.name)),
            i,
            q.clone(),
        ));
    }
    let rows = |f: &dyn Fn(&crate::broker::queue::QueueInfo, &QueueEntry) -> u64| -> Vec<(String, u64)> {
        infos.iter().map(|(l, i, q)| (l.clone(), f(i, q))).collect()
    };
    gauge(
        "broker_queue_messages",
        "Messages in the queue (ready and unacked)",
        "gauge",
        rows(&|i, _| i.ready + i.unacked),
    );
    gauge(
        "broker_queue_messages_ready",
        "Messages ready for delivery",
        "gauge",
        rows(&|i, _| i.ready),
    );
    gauge(
        "broker_queue_messages_unacked",
        "Deliveries not yet acked",
        "gauge",
        rows(&|i, _| i.unacked),
    );
    gauge(
        "broker_queue_consumers",
        "Consumers",
        "gauge",
        rows(&|i, _| i.consumers.len() as u64),
    );
    gauge(
        "broker_queue_published_total",
        "Messages enqueued",
        "counter",
        rows(&|_, q| q.counters.published.load(Ordering::Relaxed)),
    );
    gauge(
        "broker_queue_delivered_total",
        "Deliveries and basic.get",
        "counter",
        rows(&|_, q| q.counters.delivered.load(Ordering::Relaxed)),
    );
    gauge(
        "broker_queue_redelivered_total",
        "Redeliveries",
        "counter",
        rows(&|_, q| q.counters.redelivered.load(Ordering::Relaxed)),
    );
    gauge(
        "broker_queue_acked_total",
        "Acks",
        "counter",
        rows(&|_, q| q.counters.acked.load(Ordering::Relaxed)),
    );
    let channels: u64 = rt
        .conn_info
        .iter()
        .map(|c| c.channels.load(Ordering::Relaxed) as u64)
        .sum();
    gauge(
        "broker_connections",
        "Open client connections",
        "gauge",
        vec![(String::new(), rt.conn_info.len() as u64)],
    );
    gauge(
        "broker_channels",
        "Open channels",
        "gauge",
        vec![(String::new(), channels)],
    );
    gauge(
        "broker_memory_message_bytes",
        "Message bytes held in queues",
        "gauge",
        vec![(String::new(), rt.memory.used() as u64)],
    );
    gauge(
        "broker_store_bytes",
        "Bytes of the data dir on disk",
        "gauge",
        vec![(String::new(), store_bytes(&rt))],
    );
    gauge(
        "broker_received_bytes_total",
        "Bytes read from client connections",
        "counter",
        vec![(String::new(), rt.bytes_in.load(Ordering::Relaxed))],
    );
    gauge(
        "broker_sent_bytes_total",
        "Bytes written to client connections",
        "counter",
        vec![(String::new(), rt.bytes_out.load(Ordering::Relaxed))],
    );
    let (buckets, count, sum) = broker_store::store::FLUSH_LATENCY.snapshot();
    let _ = writeln!(
        out,
        "# HELP broker_store_flush_seconds Group-commit flush (fsync) latency"
    );
    let _ = writeln!(out, "# TYPE broker_store_flush_seconds histogram");
    for (le, n) in broker_store::store::FLUSH_BUCKETS.iter().zip(buckets) {
        let _ = writeln!(out, "broker_store_flush_seconds_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "broker_store_flush_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(out, "broker_store_flush_seconds_sum {sum}");
    let _ = writeln!(out, "broker_store_flush_seconds_count {count}");
    let _ = writeln!(
        out,
        "# HELP broker_actor_panics_total Panics caught by supervision, by actor kind"
    );
    let _ = writeln!(out, "# TYPE broker_actor_panics_total counter");
    for kind in crate::broker::supervise::Kind::ALL {
        let n = crate::broker::supervise::PANICS[kind as usize].load(Ordering::Relaxed);
        let _ = writeln!(out, "broker_actor_panics_total{{actor=\"{}\"}} {n}", kind.as_str());
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out)
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
