//! `/api/overview`, `/api/whoami`, the node's memory watermark and Prometheus `/metrics`
//! (`/api/nodes` is in `nodes.rs`).

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
        .route(
            "/api/nodes/{node}/memory-high-watermark",
            web::put().to(set_memory_high_watermark),
        )
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
    let queues: Vec<_> = all_queues(&rt)
        .into_iter()
        .filter(|(vh, _)| super::sees(&rt, &u, vh))
        .collect();
    let mut consumers = 0usize;
    let counts: Vec<_> = {
        use futures::StreamExt;
        futures::stream::iter(queues.iter().map(|(_, q)| super::queues::counts(q)))
            .buffered(super::queues::LIST_CONCURRENCY)
            .collect()
            .await
    };
    for ((_, q), i) in queues.iter().zip(counts) {
        ready += i.ready;
        unacked += i.unacked;
        consumers += i.consumers as usize;
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
    let listeners = listeners(&rt);
    Ok(HttpResponse::Ok().json(json!({
        "management_version": env!("CARGO_PKG_VERSION"),
        "product_name": "broker",
        "product_version": env!("CARGO_PKG_VERSION"),
        "rabbitmq_version": "3.10.8",
        "cluster_name": "broker",
        "node": crate::broker::node::node_name(),
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
        "listeners": listeners,
        "exchange_types": super::nodes::exchange_types(),
        "memory_used": rt.memory.used(),
        "message_bytes": rt.message_bytes.used(),
        "store_bytes": store_bytes(&rt),
    })))
}

/// The AMQP listeners as RabbitMQ lists them: `amqp` for plain, `amqp/ssl` for TLS.
/// The first one bound is `amqp_addr` (its real port, when configured as port 0).
pub(super) fn listeners(rt: &crate::broker::runtime::Runtime) -> Vec<serde_json::Value> {
    let bound = rt.amqp_addr.get().map(|a| a.port());
    let plain = rt.config.listen.map(|a| bound.unwrap_or(a.port()));
    let tls = rt.config.tls_listen.map(|a| match plain {
        None => bound.unwrap_or(a.port()),
        Some(_) => a.port(),
    });
    [("amqp", plain), ("amqp/ssl", tls)]
        .into_iter()
        .filter_map(|(protocol, port)| {
            let port = port?;
            Some(json!({"node": crate::broker::node::node_name(), "protocol": protocol, "ip_address": "::", "port": port}))
        })
        .collect()
}

fn store_bytes(rt: &crate::broker::runtime::Runtime) -> u64 {
    rt.store.as_ref().map_or(0, |s| s.messages.size_on_disk())
}

async fn whoami(req: HttpRequest, rt: State) -> ApiResult {
    let u = user(&req, &rt)?;
    Ok(HttpResponse::Ok().json(json!({"name": u.name, "tags": u.tags})))
}

/// Sets the memory high watermark at run time (what `rabbitmqctl
/// set_vm_memory_high_watermark` does): `{"limit": "0.4"}` (a fraction of the available
/// memory) or `{"limit": "2GB"}`; administrators only. Not kept across a restart, as in
/// RabbitMQ.
async fn set_memory_high_watermark(
    req: HttpRequest,
    rt: State,
    path: web::Path<String>,
    body: web::Json<serde_json::Value>,
) -> ApiResult {
    let u = super::admin(&req, &rt)?;
    if path.as_str() != crate::broker::node::node_name() {
        return Err(super::ApiError::not_found("Object Not Found"));
    }
    let limit = match body.get("limit") {
        Some(serde_json::Value::String(s)) => s.parse::<crate::limits::Limit>(),
        Some(serde_json::Value::Number(n)) => n.to_string().parse(),
        _ => Err("give the limit as {\"limit\": \"0.4\"} or {\"limit\": \"2GB\"}".to_owned()),
    }
    .map_err(super::ApiError::bad_request)?;
    let bytes = limit.bytes(crate::limits::available_memory());
    rt.memory.set_limit(bytes);
    tracing::info!(limit = bytes, by = %u.name, "memory high watermark set");
    Ok(HttpResponse::NoContent().finish())
}

/// Prometheus text format: per-queue depth and counters, connections, channels, memory,
/// store size. Open to anyone who can reach the listener, as RabbitMQ's prometheus
/// endpoint is.
async fn metrics(rt: State) -> HttpResponse {
    let mut out = String::new();
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
    queue_metrics(&mut out, &infos);
    delayed_metrics(&mut out, &rt);
    node_metrics(&mut out, &rt);
    login_metrics(&mut out, &rt);
    schema_metrics(&mut out, &rt);
    flush_metrics(&mut out);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out)
}

/// One metric family in Prometheus's text format: HELP, TYPE, then a line per labelled
/// value (no braces for an empty label set).
fn family(out: &mut String, name: &str, help: &str, kind: &str, rows: Vec<(String, u64)>) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in rows {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// A queue's figure for one metric: from its actor's info or its entry's counters.
type QueueFigure = fn(&crate::broker::queue::QueueInfo, &QueueEntry) -> u64;

/// Per-queue families, labelled by vhost and queue.
fn queue_metrics(
    out: &mut String,
    infos: &[(String, crate::broker::queue::QueueInfo, Arc<QueueEntry>)],
) {
    let table: [(&str, &str, &str, QueueFigure); 10] = [
        (
            "broker_queue_messages",
            "Messages in the queue (ready, unacked and waiting to retry)",
            "gauge",
            |i, _| i.ready + i.unacked + i.delayed,
        ),
        (
            "broker_queue_messages_delayed",
            "Returned messages waiting out their retry back-off",
            "gauge",
            |i, _| i.delayed,
        ),
        (
            "broker_queue_messages_ready",
            "Messages ready for delivery",
            "gauge",
            |i, _| i.ready,
        ),
        (
            "broker_queue_messages_unacked",
            "Deliveries not yet acked",
            "gauge",
            |i, _| i.unacked,
        ),
        ("broker_queue_consumers", "Consumers", "gauge", |i, _| {
            i.consumers.len() as u64
        }),
        (
            "broker_queue_published_total",
            "Messages enqueued",
            "counter",
            |_, q| q.counters.published.load(Ordering::Relaxed),
        ),
        (
            "broker_queue_delivered_total",
            "Deliveries and basic.get",
            "counter",
            |_, q| q.counters.delivered.load(Ordering::Relaxed),
        ),
        (
            "broker_queue_redelivered_total",
            "Redeliveries",
            "counter",
            |_, q| q.counters.redelivered.load(Ordering::Relaxed),
        ),
        ("broker_queue_acked_total", "Acks", "counter", |_, q| {
            q.counters.acked.load(Ordering::Relaxed)
        }),
        (
            "broker_queue_deduplicated_total",
            "Duplicates not enqueued (x-message-deduplication)",
            "counter",
            |_, q| q.dedup.as_ref().map_or(0, |d| d.dropped()),
        ),
    ];
    for (name, help, kind, f) in table {
        let rows = infos.iter().map(|(l, i, q)| (l.clone(), f(i, q))).collect();
        family(out, name, help, kind, rows);
    }
}

/// Delayed exchanges' waiting messages, labelled by vhost and exchange.
fn delayed_metrics(out: &mut String, rt: &crate::broker::runtime::Runtime) {
    let mut rows = Vec::new();
    for v in rt.vhosts.iter() {
        for x in v.value().exchanges() {
            if let Some((n, _)) = x.delayed_stats() {
                let labels = format!("vhost=\"{}\",exchange=\"{}\"", esc(&v.name), esc(&x.name));
                rows.push((labels, n as u64));
            }
        }
    }
    family(
        out,
        "broker_exchange_messages_delayed",
        "Messages waiting out their x-delay in a delayed exchange",
        "gauge",
        rows,
    );
}

/// Per-exchange count of messages that failed the exchange's JSON Schema (only
/// exchanges with a schema attached are listed).
fn schema_metrics(out: &mut String, rt: &crate::broker::runtime::Runtime) {
    let mut rows = Vec::new();
    for v in rt.vhosts.iter() {
        for x in v.exchanges() {
            if x.schema.load().is_some() || x.schema_invalid.load(Ordering::Relaxed) > 0 {
                rows.push((
                    format!("vhost=\"{}\",exchange=\"{}\"", esc(v.key()), esc(&x.name)),
                    x.schema_invalid.load(Ordering::Relaxed),
                ));
            }
        }
    }
    family(
        out,
        "broker_exchange_schema_rejected_total",
        "Messages that failed the exchange's JSON Schema (refused or sent to its invalid exchange)",
        "counter",
        rows,
    );
}

/// Node-wide families: connections, channels, memory, store size, bytes, panics caught.
fn node_metrics(out: &mut String, rt: &crate::broker::runtime::Runtime) {
    let channels: u64 = rt
        .conn_info
        .iter()
        .map(|c| c.channels.load(Ordering::Relaxed) as u64)
        .sum();
    let one = |v: u64| vec![(String::new(), v)];
    let table = [
        (
            "broker_connections",
            "Open client connections",
            "gauge",
            rt.conn_info.len() as u64,
        ),
        ("broker_channels", "Open channels", "gauge", channels),
        (
            "broker_memory_message_bytes",
            "Message bytes held in queues",
            "gauge",
            rt.message_bytes.used() as u64,
        ),
        (
            "broker_memory_used_bytes",
            "Resident memory of the broker process (what the memory alarm compares)",
            "gauge",
            rt.memory.used(),
        ),
        (
            "broker_memory_allocated_bytes",
            "Bytes the allocator has handed out and not had back",
            "gauge",
            rt.memory.allocated(),
        ),
        (
            "broker_memory_high_watermark_bytes",
            "The memory high watermark",
            "gauge",
            rt.memory.limit(),
        ),
        (
            "broker_store_bytes",
            "Bytes of the data dir on disk",
            "gauge",
            store_bytes(rt),
        ),
        (
            "broker_disk_free_bytes",
            "Free bytes on the data dir's filesystem (at the last sample)",
            "gauge",
            rt.disk.free().min(i64::MAX as u64),
        ),
        (
            "broker_received_bytes_total",
            "Bytes read from client connections",
            "counter",
            rt.bytes_in.load(Ordering::Relaxed),
        ),
        (
            "broker_sent_bytes_total",
            "Bytes written to client connections",
            "counter",
            rt.bytes_out.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, kind, v) in table {
        family(out, name, help, kind, one(v));
    }
    let alarms = vec![
        (
            "resource=\"memory\"".to_owned(),
            u64::from(rt.memory.alarm()),
        ),
        ("resource=\"disk\"".to_owned(), u64::from(rt.disk.alarm())),
    ];
    family(
        out,
        "broker_alarm",
        "A resource alarm holding publishers (1) or not (0)",
        "gauge",
        alarms,
    );
    let panics = crate::broker::supervise::Kind::ALL
        .iter()
        .map(|k| {
            let n = crate::broker::supervise::PANICS[*k as usize].load(Ordering::Relaxed);
            (format!("actor=\"{}\"", k.as_str()), n)
        })
        .collect();
    family(
        out,
        "broker_actor_panics_total",
        "Panics caught by supervision, by actor kind",
        "counter",
        panics,
    );
}

/// The failed-login throttle (`--login-failure-limit`): failures, cool-downs, refusals
/// and the addresses cooling down now.
fn login_metrics(out: &mut String, rt: &crate::broker::runtime::Runtime) {
    let t = &rt.login_throttle;
    let one = |v: u64| vec![(String::new(), v)];
    let table = [
        (
            "broker_login_failures_total",
            "Refused AMQP logins (wrong password, unknown user, refused EXTERNAL)",
            "counter",
            t.failures_total.load(Ordering::Relaxed),
        ),
        (
            "broker_login_throttled_total",
            "Times an address was cooled down for failed logins",
            "counter",
            t.cooldowns_total.load(Ordering::Relaxed),
        ),
        (
            "broker_login_throttle_refused_total",
            "Connections and logins refused because their address was cooling down",
            "counter",
            t.refused_total.load(Ordering::Relaxed),
        ),
        (
            "broker_login_throttled_addresses",
            "Addresses cooling down for failed logins now",
            "gauge",
            t.cooling_addresses(std::time::Instant::now()) as u64,
        ),
    ];
    for (name, help, kind, v) in table {
        family(out, name, help, kind, one(v));
    }
}

/// The group-commit flush latency histogram.
fn flush_metrics(out: &mut String) {
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
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
