//! `/api/connections` (list, show, close), `/api/channels`, `/api/consumers`.

use super::overview::all_queues;
use super::{no_content, user, ApiError, ApiResult, State};
use crate::broker::runtime::{ConnInfo, Runtime};
use actix_web::{web, HttpRequest, HttpResponse};
use broker_core::auth::User;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/connections", web::get().to(list_connections))
        .route(
            "/api/vhosts/{vhost}/connections",
            web::get().to(vhost_connections),
        )
        .route("/api/connections/{name}", web::get().to(show_connection))
        .route(
            "/api/connections/{name}",
            web::delete().to(close_connection),
        )
        .route("/api/channels", web::get().to(list_channels))
        .route("/api/channels/{name}", web::get().to(show_channel))
        .route(
            "/api/connections/{name}/channels",
            web::get().to(connection_channels),
        )
        .route(
            "/api/vhosts/{vhost}/channels",
            web::get().to(vhost_channels),
        )
        .route("/api/consumers", web::get().to(list_consumers))
        .route("/api/consumers/{vhost}", web::get().to(vhost_consumers));
}

/// Connections the user may see: all for monitoring, its own otherwise (as RabbitMQ).
fn visible(rt: &Runtime, u: &User) -> Vec<Arc<ConnInfo>> {
    let mut v: Vec<Arc<ConnInfo>> = rt
        .conn_info
        .iter()
        .map(|c| c.value().clone())
        .filter(|c| u.is_monitoring() || c.user == u.name)
        .collect();
    v.sort_by_key(|c| c.id);
    v
}

fn connection_json(c: &ConnInfo) -> Value {
    let local = c.name.split(" -> ").nth(1).unwrap_or("");
    let (host, port) = local.rsplit_once(':').unwrap_or(("", "0"));
    json!({
        "name": c.name,
        "node": crate::broker::node::node_name(),
        "user": c.user,
        "vhost": c.vhost,
        "peer_host": c.peer.ip().to_string(),
        "peer_port": c.peer.port(),
        "host": host,
        "port": port.parse::<u16>().unwrap_or(0),
        "state": "running",
        "channels": c.channels.load(Ordering::Relaxed),
        "protocol": "AMQP 0-9-1",
        "auth_mechanism": "PLAIN",
        "frame_max": c.frame_max,
        "timeout": c.heartbeat,
        "connected_at": c.connected_at,
        "client_properties": super::fields::to_json(&c.client),
        "user_provided_name": c.client.inner().get("connection_name").and_then(broker_core::args::str_value),
        "type": "network",
        "ssl": c.tls,
    })
}

async fn list_connections(req: HttpRequest, rt: State) -> ApiResult {
    let u = user(&req, &rt)?;
    let query = super::paging::ListQuery::parse(&req)?;
    let list: Vec<Value> = visible(&rt, &u)
        .iter()
        .map(|c| connection_json(c))
        .collect();
    Ok(HttpResponse::Ok().json(query.answer(list)?))
}

async fn vhost_connections(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    let u = user(&req, &rt)?;
    let vhost = path.into_inner();
    super::in_vhost(&rt, &u, &vhost)?;
    let list: Vec<Value> = visible(&rt, &u)
        .iter()
        .filter(|c| c.vhost == vhost)
        .map(|c| connection_json(c))
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

fn find(rt: &Runtime, u: &User, name: &str) -> Result<Arc<ConnInfo>, ApiError> {
    visible(rt, u)
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| ApiError::not_found(format!("connection '{name}' not found")))
}

async fn show_connection(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    let u = user(&req, &rt)?;
    let c = find(&rt, &u, &path.into_inner())?;
    Ok(HttpResponse::Ok().json(connection_json(&c)))
}

/// Closes a connection with 320 CONNECTION_FORCED and the X-Reason header's text. As in
/// RabbitMQ, administrators may close any connection, other users only their own (a
/// monitoring user sees all of them, but may not close them: 401).
async fn close_connection(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    let u = user(&req, &rt)?;
    let c = find(&rt, &u, &path.into_inner())?;
    if !u.is_administrator() && c.user != u.name {
        return Err(ApiError::refused("User not authorised to access object"));
    }
    let reason = req
        .headers()
        .get("x-reason")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("Closed via management plugin")
        .to_owned();
    if let Some(r) = rt.connections.get(&c.id) {
        r.do_send(crate::broker::messages::ForceClose { reason });
    }
    Ok(no_content())
}

async fn list_channels(req: HttpRequest, rt: State) -> ApiResult {
    let u = user(&req, &rt)?;
    let query = super::paging::ListQuery::parse(&req)?;
    Ok(HttpResponse::Ok().json(query.answer(channels(&rt, &u, None).await)?))
}

async fn show_channel(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    let u = user(&req, &rt)?;
    let name = path.into_inner();
    channels(&rt, &u, None)
        .await
        .into_iter()
        .find(|c| c["name"] == name.as_str())
        .map(|c| HttpResponse::Ok().json(c))
        .ok_or_else(|| ApiError::not_found(format!("channel '{name}' not found")))
}

async fn connection_channels(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    let u = user(&req, &rt)?;
    let c = find(&rt, &u, &path.into_inner())?;
    let list: Vec<Value> = channels(&rt, &u, None)
        .await
        .into_iter()
        .filter(|ch| ch["connection_details"]["name"] == c.name.as_str())
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

async fn vhost_channels(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    let u = user(&req, &rt)?;
    let vhost = path.into_inner();
    super::in_vhost(&rt, &u, &vhost)?;
    Ok(HttpResponse::Ok().json(channels(&rt, &u, Some(&vhost)).await))
}

async fn channels(rt: &Runtime, u: &User, only: Option<&str>) -> Vec<Value> {
    // consumers per channel come from the queues
    let mut per_channel: std::collections::HashMap<(u64, u16), usize> = Default::default();
    for (_, q) in all_queues(rt) {
        if let Ok(i) = q.info().await {
            for (key, ..) in i.consumers {
                *per_channel
                    .entry((key.connection, key.channel))
                    .or_default() += 1;
            }
        }
    }
    let conns: Vec<Arc<ConnInfo>> = visible(rt, u)
        .into_iter()
        .filter(|c| only.is_none_or(|o| o == c.vhost))
        .collect();
    let mut keys: Vec<(u64, u16)> = rt.channel_info.iter().map(|c| *c.key()).collect();
    keys.sort_unstable();
    let mut list = Vec::new();
    for key in keys {
        let Some(c) = conns.iter().find(|c| c.id == key.0) else {
            continue;
        };
        let Some(stats) = rt.channel_info.get(&key).map(|s| s.clone()) else {
            continue;
        };
        list.push(json!({
            "name": format!("{} ({})", c.name, key.1),
            "number": key.1,
            "user": c.user,
            "vhost": c.vhost,
            "node": crate::broker::node::node_name(),
            "state": "running",
            "connection_details": {"name": c.name, "peer_host": c.peer.ip().to_string(), "peer_port": c.peer.port()},
            "consumer_count": per_channel.get(&key).copied().unwrap_or(0),
            "messages_unacknowledged": stats.unacked.load(Ordering::Relaxed),
            "prefetch_count": stats.prefetch.load(Ordering::Relaxed),
            "confirm": stats.confirm.load(Ordering::Relaxed),
            "transactional": stats.transactional.load(Ordering::Relaxed),
        }));
    }
    list
}

async fn consumers(rt: &Runtime, u: &User, only: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    for (vh, q) in all_queues(rt) {
        if only.is_some_and(|o| o != vh) || !super::sees(rt, u, &vh) {
            continue;
        }
        let Ok(i) = q.info().await else {
            continue;
        };
        for (key, tag, ack, exclusive, priority) in i.consumers {
            let conn = rt
                .conn_info
                .get(&key.connection)
                .map(|c| c.name.clone())
                .unwrap_or_default();
            let prefetch = rt
                .channel_info
                .get(&(key.connection, key.channel))
                .map(|s| s.prefetch.load(Ordering::Relaxed))
                .unwrap_or(0);
            out.push(json!({
                "queue": {"name": q.name.as_ref(), "vhost": vh},
                "consumer_tag": tag.as_ref(),
                "channel_details": {"name": format!("{conn} ({})", key.channel), "number": key.channel, "connection_name": conn},
                "ack_required": ack,
                "exclusive": exclusive,
                "prefetch_count": prefetch,
                "active": true,
                "activity_status": "up",
                "arguments": if priority != 0 { json!({"x-priority": priority}) } else { json!({}) },
            }));
        }
    }
    out
}

async fn list_consumers(req: HttpRequest, rt: State) -> ApiResult {
    let u = user(&req, &rt)?;
    Ok(HttpResponse::Ok().json(consumers(&rt, &u, None).await))
}

async fn vhost_consumers(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    let u = user(&req, &rt)?;
    let vhost = path.into_inner();
    super::in_vhost(&rt, &u, &vhost)?;
    Ok(HttpResponse::Ok().json(consumers(&rt, &u, Some(&vhost)).await))
}
