//! RabbitMQ's health-check endpoints (`/api/health/checks/...` and
//! `/api/aliveness-test/{vhost}`), so a container orchestrator's probes and monitoring
//! written for RabbitMQ work unchanged. A healthy check answers 200 `{"status":"ok"}`; an
//! unhealthy one 503 `{"status":"failed","reason":...}` with RabbitMQ's extra fields
//! (`alarms`, `missing`, `ports`, `protocols`), because probes test the status code and
//! people read the reason. Any user who may use the API may call them, as in RabbitMQ;
//! the aliveness test also needs the vhost's permissions, since it declares, publishes
//! and gets as that user.
//!
//! There is one node, so the cluster-wide checks (`alarms`, `node-is-quorum-critical`)
//! answer for it, and every vhost is always running (its queues live in this process).

use super::queues::{declare_queue, permitted};
use super::{in_vhost, user, Actor, ApiError, ApiResult, State};
use crate::broker::publish::{self, Routed};
use crate::broker::queue;
use crate::broker::runtime::Runtime;
use actix_web::{web, HttpRequest, HttpResponse};
use broker_core::auth::Access;
use broker_core::names::ChannelKey;
use broker_core::Message;
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;

/// The queue the aliveness test uses (RabbitMQ's name; kept between calls, as there).
const ALIVENESS_QUEUE: &str = "aliveness-test";

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/health/checks/alarms", web::get().to(alarms))
        .route(
            "/api/health/checks/local-alarms",
            web::get().to(local_alarms),
        )
        .route(
            "/api/health/checks/port-listener/{port}",
            web::get().to(port_listener),
        )
        .route(
            "/api/health/checks/protocol-listener/{protocol}",
            web::get().to(protocol_listener),
        )
        .route(
            "/api/health/checks/virtual-hosts",
            web::get().to(virtual_hosts),
        )
        .route(
            "/api/health/checks/node-is-quorum-critical",
            web::get().to(single_node),
        )
        .route(
            "/api/health/checks/node-is-mirror-sync-critical",
            web::get().to(single_node),
        )
        .route("/api/health/checks/is-in-service", web::get().to(healthy))
        .route(
            "/api/health/checks/ready-to-serve-clients",
            web::get().to(ready_to_serve_clients),
        )
        .route("/api/aliveness-test/{vhost}", web::get().to(aliveness));
}

/// 200 `{"status":"ok"}`.
fn ok() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// 503 `{"status":"failed","reason":...}` plus the check's own fields.
fn failed(reason: &str, extra: Value) -> HttpResponse {
    let mut body = json!({"status": "failed", "reason": reason});
    if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
        b.extend(extra);
    }
    HttpResponse::ServiceUnavailable().json(body)
}

/// The resource alarms in effect, as RabbitMQ lists them (`{"node","resource"}`).
fn alarms_in_effect(rt: &Runtime) -> Vec<Value> {
    let mut out = Vec::new();
    if rt.memory.alarm() {
        out.push(json!({"node": crate::broker::node::node_name(), "resource": "memory"}));
    }
    if rt.disk.alarm() {
        out.push(json!({"node": crate::broker::node::node_name(), "resource": "disk"}));
    }
    out
}

/// The alarms check with RabbitMQ's reason for its scope.
fn alarm_check(req: &HttpRequest, rt: &Runtime, reason: &str) -> ApiResult {
    user(req, rt)?;
    let alarms = alarms_in_effect(rt);
    if alarms.is_empty() {
        return Ok(ok());
    }
    Ok(failed(reason, json!({"alarms": alarms})))
}

/// GET …/alarms: any alarm in the cluster (this one node).
async fn alarms(req: HttpRequest, rt: State) -> ApiResult {
    alarm_check(&req, &rt, "There are alarms in effect in the cluster")
}

/// GET …/local-alarms: any alarm on this node.
async fn local_alarms(req: HttpRequest, rt: State) -> ApiResult {
    alarm_check(&req, &rt, "There are alarms in effect on the node")
}

/// The listeners as (protocol, port), named as RabbitMQ names them: `http`/`https` for
/// this API (the port the request came in on), `amqp`, `amqp/ssl`.
fn listeners(req: &HttpRequest, rt: &Runtime) -> Vec<(String, u16)> {
    let http = if req.app_config().secure() {
        "https"
    } else {
        "http"
    };
    let mut out = vec![(http.to_owned(), req.app_config().local_addr().port())];
    for l in super::overview::listeners(rt) {
        let protocol = l.get("protocol").and_then(Value::as_str);
        let port = l.get("port").and_then(Value::as_u64);
        if let (Some(protocol), Some(Ok(port))) = (protocol, port.map(u16::try_from)) {
            out.push((protocol.to_owned(), port));
        }
    }
    out
}

/// GET …/port-listener/{port}: whether something of the broker listens on that port.
async fn port_listener(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    user(&req, &rt)?;
    let Ok(port) = path.trim().parse::<i64>() else {
        return Err(ApiError::bad_request("Invalid port"));
    };
    let ports: Vec<u16> = listeners(&req, &rt).into_iter().map(|l| l.1).collect();
    if ports.iter().any(|p| i64::from(*p) == port) {
        return Ok(HttpResponse::Ok().json(json!({"status": "ok", "port": port})));
    }
    Ok(failed(
        "No active listener",
        json!({"missing": port, "ports": ports}),
    ))
}

/// RabbitMQ's aliases for protocol names (`amqp091` is `amqp`, `amqps` is `amqp/ssl`).
fn normalise_protocol(p: &str) -> String {
    let p = p.to_lowercase();
    match p.as_str() {
        "amqp091" | "amqp0.9.1" | "amqp0-9-1" | "amqp0_9_1" => "amqp".to_owned(),
        "amqps" => "amqp/ssl".to_owned(),
        _ => p,
    }
}

/// GET …/protocol-listener/{protocol}: whether a listener for that protocol is up.
async fn protocol_listener(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    user(&req, &rt)?;
    let protocol = normalise_protocol(&path);
    let protocols: Vec<String> = listeners(&req, &rt).into_iter().map(|l| l.0).collect();
    if protocols.contains(&protocol) {
        return Ok(HttpResponse::Ok().json(json!({"status": "ok", "protocol": protocol})));
    }
    Ok(failed(
        "No active listener",
        json!({"missing": protocol, "protocols": protocols}),
    ))
}

/// GET …/virtual-hosts: every vhost runs in this process, so whenever the API answers.
async fn virtual_hosts(req: HttpRequest, rt: State) -> ApiResult {
    user(&req, &rt)?;
    Ok(ok())
}

/// GET …/node-is-quorum-critical (and mirror-sync): never critical on one node.
async fn single_node(req: HttpRequest, rt: State) -> ApiResult {
    user(&req, &rt)?;
    Ok(HttpResponse::Ok().json(json!({"status": "ok", "reason": "single node cluster"})))
}

/// GET …/is-in-service: the API starts only after the definitions and messages are
/// recovered and the AMQP listeners are bound, and there is no maintenance mode.
async fn healthy(req: HttpRequest, rt: State) -> ApiResult {
    user(&req, &rt)?;
    Ok(ok())
}

/// GET …/ready-to-serve-clients: in service and an AMQP listener (plain or TLS) is up.
/// There is no node-wide connection limit to be below.
async fn ready_to_serve_clients(req: HttpRequest, rt: State) -> ApiResult {
    user(&req, &rt)?;
    let protocols: Vec<String> = listeners(&req, &rt).into_iter().map(|l| l.0).collect();
    if protocols.iter().any(|p| p == "amqp" || p == "amqp/ssl") {
        return Ok(ok());
    }
    Ok(failed(
        "No active listener",
        json!({"missing": "amqp", "protocols": protocols}),
    ))
}

/// GET /api/aliveness-test/{vhost}: declares `aliveness-test` (kept, as RabbitMQ keeps
/// it), publishes "test_message" to it through the default exchange and gets it back,
/// with the caller's permissions, as RabbitMQ 3.x does (still present in 4.x, where it
/// is deprecated).
async fn aliveness(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    let u = user(&req, &rt)?;
    let vhost = path.into_inner();
    let v = in_vhost(&rt, &u, &vhost)?;
    declare_queue(&rt, Actor::User(&u), &vhost, ALIVENESS_QUEUE, &json!({})).await?;
    permitted(&rt, &u, &vhost, Access::Write, "exchange", "amq.default")?;
    permitted(&rt, &u, &vhost, Access::Read, "queue", ALIVENESS_QUEUE)?;
    let mut queues = Vec::new();
    publish::client_route(&v, "", ALIVENESS_QUEUE, None, &mut queues)?;
    let Some(q) = queues.first().cloned() else {
        return Ok(failed("aliveness-test queue not found", Value::Null));
    };
    let body = Bytes::from_static(b"test_message");
    let routed = Routed::new(queues.into(), None, body.len());
    if routed.refused() {
        return Ok(failed(
            "aliveness-test queue refused the message",
            Value::Null,
        ));
    }
    let props = broker_wire::protocol::basic::AMQPProperties::default();
    let msg = Message {
        exchange: "".into(),
        routing_key: ALIVENESS_QUEUE.into(),
        raw_properties: broker_wire::encode::properties(&props),
        properties: props.into(),
        body,
        persist_id: None,
        arrival_ms: crate::broker::runtime::now_ms(),
    };
    routed.deliver(&Arc::new(msg), |_| {});
    // the management API's own channel key: connection 0 never belongs to a client
    let key = ChannelKey {
        connection: 0,
        channel: 0,
    };
    let got = q
        .addr
        .send(queue::Get {
            channel: key,
            no_ack: true,
        })
        .await
        .map_err(|_| ApiError::internal("queue unavailable"))?;
    match got {
        Some(_) => Ok(ok()),
        None => Ok(failed("aliveness-test queue is empty", Value::Null)),
    }
}
