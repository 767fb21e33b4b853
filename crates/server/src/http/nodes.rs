//! `/api/nodes` and `/api/nodes/{node}`: every node of the cluster in RabbitMQ's shape, so
//! rabbitmqadmin v2 (`list nodes`, which needs `being_drained`), the management UI's
//! node page and monitoring written for RabbitMQ read it unchanged.
//!
//! Values are real where the broker has them (memory, disk, file descriptors, sockets,
//! uptime, pid, listeners); Erlang-only figures are mapped to their nearest meaning here
//! (`proc_used` counts actors, `run_queue` is 0) or left out (garbage collection, I/O and
//! Mnesia counters), and the `rabbit` application carries the RabbitMQ version the API
//! imitates, which is what clients read to pick their behaviour.
//!
//! With `--cluster-peers` the list is the metadata group's members
//! (`ClusterMembership::status`): this node with its figures, the others with what
//! RabbitMQ shows of a node it has no statistics for (name, type, running), and on every
//! node two fields of ours, `metadata_member` (a voter of the metadata group) and
//! `metadata_leader` (it leads the group), so operators see the group's state.

use super::{user, ApiError, ApiResult, State};
use crate::broker::runtime::Runtime;
use actix_web::{web, HttpRequest, HttpResponse};
use broker_core::exchange::ExchangeKind;
use serde_json::{json, Value};

/// The RabbitMQ version whose API this one imitates (as `/api/overview` says).
const RABBITMQ_VERSION: &str = "3.10.8";

/// Erlang's default process limit, RabbitMQ's `proc_total`: the broker's actors have no
/// such limit, and a number keeps clients that compute `proc_used / proc_total` working.
const PROC_TOTAL: u64 = 1_048_576;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/nodes", web::get().to(nodes))
        .route("/api/nodes/{node}", web::get().to(node));
}

/// Monitoring and administrator users only, as in RabbitMQ.
fn monitor(req: &HttpRequest, rt: &Runtime) -> Result<(), ApiError> {
    if user(req, rt)?.is_monitoring() {
        Ok(())
    } else {
        Err(ApiError::refused("Not monitor user"))
    }
}

async fn nodes(req: HttpRequest, rt: State) -> ApiResult {
    monitor(&req, &rt)?;
    Ok(HttpResponse::Ok().json(all(&req, &rt)))
}

/// One node by name; any other name is 404 (RabbitMQ 3.10 answers 500 there).
async fn node(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    monitor(&req, &rt)?;
    all(&req, &rt)
        .into_iter()
        .find(|n| n["name"] == path.as_str())
        .map(|n| HttpResponse::Ok().json(n))
        .ok_or_else(|| ApiError::not_found("Not Found"))
}

/// Every node: this one alone, or the cluster's members as this node sees them.
fn all(req: &HttpRequest, rt: &Runtime) -> Vec<Value> {
    let status = rt
        .store
        .as_ref()
        .and_then(crate::broker::membership::status);
    let Some(status) = status else {
        return vec![describe(req, rt)];
    };
    let me = crate::broker::node::node_name();
    status
        .nodes
        .iter()
        .map(|n| {
            let mut v = if n.name == me {
                describe(req, rt)
            } else {
                // RabbitMQ's object for a node it has no figures of (3.10 checked:
                // name, type, running, cluster_links), and 4.x's being_drained
                json!({
                    "name": n.name,
                    "type": "disc",
                    "running": n.running,
                    "cluster_links": [],
                    "being_drained": false,
                })
            };
            if let Some(obj) = v.as_object_mut() {
                obj.insert("metadata_member".into(), json!(n.voter));
                let leads = status.leader.as_deref() == Some(n.name.as_str());
                obj.insert("metadata_leader".into(), json!(leads));
            }
            v
        })
        .collect()
}

/// The node object, with RabbitMQ's field names.
fn describe(req: &HttpRequest, rt: &Runtime) -> Value {
    let free = rt.disk.free();
    let (fd_used, fd_total) = file_descriptors();
    let sockets_total = rt.config.max_connections.unwrap_or(fd_total).min(fd_total);
    json!({
        "name": crate::broker::node::node_name(),
        "type": "disc",
        "running": true,
        "being_drained": false,
        "os_pid": std::process::id().to_string(),
        "uptime": rt.started.elapsed().as_millis() as u64,
        "processors": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "run_queue": 0,
        "mem_used": rt.memory.used(),
        "mem_limit": rt.memory.limit(),
        "mem_allocated": rt.memory.allocated(),
        "mem_calculation_strategy": "rss",
        "mem_alarm": rt.memory.alarm(),
        "disk_free": if free == u64::MAX { Value::Null } else { json!(free) },
        "disk_free_limit": rt.disk.limit(),
        "disk_free_alarm": rt.disk.alarm(),
        "fd_used": fd_used,
        "fd_total": fd_total,
        "sockets_used": rt.conn_info.len(),
        "sockets_total": sockets_total,
        "proc_used": actors(rt),
        "proc_total": PROC_TOTAL,
        "rates_mode": "basic",
        "rabbitmq_version": RABBITMQ_VERSION,
        "partitions": [],
        "cluster_links": [],
        "enabled_plugins": ["rabbitmq_management"],
        "exchange_types": exchange_types(),
        "auth_mechanisms": auth_mechanisms(rt),
        "applications": applications(),
        "contexts": contexts(req),
        "log_files": ["<stderr>"],
        "db_dir": rt.config.data_dir.display().to_string(),
        "config_files": [],
        "net_ticktime": 60,
        "store_bytes": rt.store.as_ref().map_or(0, |s| s.messages.size_on_disk()),
    })
}

/// Open file descriptors (entries of /proc/self/fd) and their soft limit (from
/// /proc/self/limits, so no unsafe call is needed; it is what boot.rs raised it to).
fn file_descriptors() -> (u64, u64) {
    let used = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let total = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| soft_limit(&l, "Max open files"))
        .unwrap_or(0);
    (used, total)
}

/// The soft limit of one row of /proc/self/limits ("unlimited" as u64::MAX).
fn soft_limit(limits: &str, row: &str) -> Option<u64> {
    let rest = limits.lines().find_map(|l| l.strip_prefix(row))?;
    match rest.split_whitespace().next()? {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// What RabbitMQ counts as processes, in actors: connections, channels, queues,
/// exchanges.
fn actors(rt: &Runtime) -> usize {
    let per_vhost: usize = rt
        .vhosts
        .iter()
        .map(|v| v.queues().len() + v.exchanges().len())
        .sum();
    rt.conn_info.len() + rt.channel_info.len() + per_vhost
}

/// The registered exchange types as RabbitMQ lists them (`/api/nodes`, `/api/overview`),
/// with its descriptions.
pub(crate) fn exchange_types() -> Vec<Value> {
    ExchangeKind::ALL
        .iter()
        .map(|k| {
            let description = match k {
                ExchangeKind::ConsistentHash => "Consistent Hashing Exchange".to_string(),
                ExchangeKind::ModulusHash => "Modulus Hashing Exchange".to_string(),
                ExchangeKind::Delayed => "Delayed Message Exchange".to_string(),
                _ => format!(
                    "AMQP {} exchange, as per the AMQP specification",
                    k.as_str()
                ),
            };
            json!({"name": k.as_str(), "description": description, "enabled": true})
        })
        .collect()
}

/// The SASL mechanisms: EXTERNAL is offered on the TLS listener only.
fn auth_mechanisms(rt: &Runtime) -> Vec<Value> {
    vec![
        json!({"name": "PLAIN", "description": "SASL PLAIN authentication mechanism", "enabled": true}),
        json!({"name": "AMQPLAIN", "description": "QPid AMQPLAIN mechanism", "enabled": true}),
        json!({"name": "EXTERNAL", "description": "SASL EXTERNAL authentication mechanism (client certificate common name)", "enabled": rt.config.tls_listen.is_some()}),
    ]
}

/// The broker itself, and the RabbitMQ applications whose behaviour it provides, with
/// the version clients compare against.
fn applications() -> Vec<Value> {
    vec![
        json!({"name": "broker", "description": "AMQP 0-9-1 message broker in Rust", "version": env!("CARGO_PKG_VERSION")}),
        json!({"name": "rabbit", "description": "RabbitMQ-compatible broker core", "version": RABBITMQ_VERSION}),
        json!({"name": "rabbitmq_management", "description": "RabbitMQ Management Console", "version": RABBITMQ_VERSION}),
    ]
}

/// The HTTP listener serving this request, as RabbitMQ lists its management context.
fn contexts(req: &HttpRequest) -> Vec<Value> {
    let info = req.app_config();
    let addr = info.local_addr();
    let mut ctx = json!({
        "description": "RabbitMQ Management",
        "path": "/",
        "ip": addr.ip().to_string(),
        "port": addr.port().to_string(),
    });
    if info.secure() {
        if let Some(c) = ctx.as_object_mut() {
            c.insert("ssl".into(), json!(true));
        }
    }
    vec![ctx]
}

#[cfg(test)]
mod tests {
    use super::soft_limit;

    #[test]
    fn reads_the_soft_limit_of_a_row() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 1048576              files     \n";
        let limits: String = limits
            .lines()
            .map(|l| l.trim_start().to_owned() + "\n")
            .collect();
        assert_eq!(soft_limit(&limits, "Max open files"), Some(1024));
        assert_eq!(soft_limit(&limits, "Max cpu time"), Some(u64::MAX));
        assert_eq!(soft_limit(&limits, "Max locked memory"), None);
    }
}
