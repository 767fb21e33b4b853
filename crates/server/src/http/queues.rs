//! `/api/queues`: list, show, declare (PUT), delete, purge (DELETE …/contents) and get
//! messages (POST …/get).

use super::fields::{table, to_json};
use super::overview::all_queues;
use super::paging::ListQuery;
use super::{created, in_vhost, no_content, user, Actor, ApiError, ApiResult, State};
use crate::broker::queue::remote_wire::RemoteInfo;
use crate::broker::queue::{self, QueueEntry, Settle};
use crate::broker::runtime::Runtime;
use crate::broker::vhost::QueueSpec;
use actix_web::{web, HttpRequest, HttpResponse};
use broker_core::auth::{Access, User};
use broker_core::names::{check_shortstr, ChannelKey};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/queues", web::get().to(list_all))
        .route("/api/queues/{vhost}", web::get().to(list_vhost))
        .route("/api/queues/{vhost}/{name}", web::get().to(show))
        .route("/api/queues/{vhost}/{name}", web::put().to(declare))
        .route("/api/queues/{vhost}/{name}", web::delete().to(delete))
        .route(
            "/api/queues/{vhost}/{name}/contents",
            web::delete().to(purge),
        )
        .route("/api/queues/{vhost}/{name}/get", web::post().to(get));
}

/// Refuses unless the user's permissions in the vhost allow `kind` on the queue.
pub(super) fn permitted<'a>(
    rt: &Runtime,
    who: impl Into<Actor<'a>>,
    vhost: &str,
    kind: Access,
    what: &str,
    name: &str,
) -> Result<(), ApiError> {
    let u = match who.into() {
        Actor::Broker => return Ok(()),
        Actor::User(u) => u,
    };
    if rt.registry.allows(vhost, &u.name, kind, name) {
        return Ok(());
    }
    // RabbitMQ's API answers a permission refusal with 401 not_authorised
    Err(ApiError::refused(broker_core::auth::refused_text(
        what, name, vhost, &u.name,
    )))
}

async fn queue_json(rt: &Runtime, vhost: &str, q: &Arc<QueueEntry>) -> Value {
    let i = counts(q).await;
    let home: &str = match q.home.as_deref() {
        Some(h) => h,
        None => crate::broker::node::node_name(),
    };
    let c = &q.counters;
    let p = rt
        .policies
        .resolve(vhost, &q.name, broker_core::policy::Target::Queue);
    let mut v = json!({
        "policy": p.policy,
        "operator_policy": p.operator_policy,
        "effective_policy_definition": p.effective,
        "name": q.name.as_ref(),
        "vhost": vhost,
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.exclusive_owner.is_some(),
        "arguments": to_json(&q.arguments),
        "type": q.queue_type().name(),
        "state": "running",
        "node": home,
        "messages": i.ready + i.unacked + i.delayed,
        "messages_ready": i.ready,
        "messages_unacknowledged": i.unacked,
        "messages_delayed": i.delayed,
        "consumers": i.consumers,
        "memory": i.bytes,
        "message_bytes": i.bytes,
        "message_stats": message_stats(c),
    });
    if let (Some(d), Some(stats)) = (&q.dedup, v["message_stats"].as_object_mut()) {
        // LavinMQ's count of duplicates not enqueued
        stats.insert("dedup".into(), json!(d.dropped()));
    }
    if let (true, Some(obj)) = (q.quorum, v.as_object_mut()) {
        // RabbitMQ's quorum queue fields: the group's members (a group of one on its
        // home node unless the record names several), the leader this node knows (the
        // first member when it knows none) as `node`, and the members whose node runs
        let members: Vec<&str> = if q.quorum_members.is_empty() {
            vec![home]
        } else {
            q.quorum_members.iter().map(|m| m.as_ref()).collect()
        };
        let leader = i.leader.clone().unwrap_or_else(|| members[0].to_owned());
        let status = rt
            .node
            .store
            .as_ref()
            .and_then(crate::broker::membership::status);
        let online: Vec<&str> = members
            .iter()
            .copied()
            .filter(|m| {
                status
                    .as_ref()
                    .is_none_or(|st| st.nodes.iter().any(|n| n.name == *m && n.running))
            })
            .collect();
        obj.insert("node".into(), json!(leader));
        obj.insert("leader".into(), json!(leader));
        obj.insert("members".into(), json!(members));
        obj.insert("online".into(), json!(online));
    }
    if let (Some(log), Some(obj)) = (q.stream.as_ref(), v.as_object_mut()) {
        // RabbitMQ's stream fields (one member: this node), and the log's files
        let node = crate::broker::node::node_name();
        let (segments, bytes) = log.disk_use();
        obj.insert("members".into(), json!([node]));
        obj.insert("online".into(), json!([node]));
        obj.insert("readers".into(), json!({ node: i.consumers }));
        obj.insert("memory".into(), json!(0));
        obj.insert("message_bytes".into(), json!(bytes));
        obj.insert("segments".into(), json!(segments));
        obj.insert("disk_size".into(), json!(bytes));
        obj.insert("first_offset".into(), json!(log.first_offset()));
        obj.insert("committed_offset".into(), json!(log.end_offset()));
    }
    v
}

/// How long the counts of a queue of another node are waited for (its node down or
/// slow: the queue is listed with zeros rather than holding the whole list).
const REMOTE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A queue's counts: from its actor on this node, else from its home (for a quorum
/// queue without a member here, a member's), as RabbitMQ's API shows every queue's
/// figures on every node.
pub(super) async fn counts(q: &Arc<QueueEntry>) -> RemoteInfo {
    if q.is_local() {
        let i = q.info().await.unwrap_or_default();
        return RemoteInfo {
            ready: i.ready,
            unacked: i.unacked,
            bytes: i.bytes,
            consumers: i.consumers.len() as u64,
            leader: i.leader,
            delayed: i.delayed,
        };
    }
    match q.remote_info(REMOTE_WAIT).await {
        Ok(i) => i,
        Err(e) => {
            tracing::debug!(queue = %q.name, "no counts from the queue's home: {e}");
            RemoteInfo::default()
        }
    }
}

/// RabbitMQ's message_stats object: counters and `*_details.rate` (per second, sampled
/// every 5 s).
pub(super) fn message_stats(c: &crate::broker::queue::QueueCounters) -> Value {
    let v = c.values();
    let r = c.rates();
    json!({
        "publish": v[0], "publish_details": {"rate": r[0]},
        "deliver_get": v[1], "deliver_get_details": {"rate": r[1]},
        "redeliver": v[2], "redeliver_details": {"rate": r[2]},
        "ack": v[3], "ack_details": {"rate": r[3]},
    })
}

/// Queues whose counts are asked for at once while listing (those of other nodes
/// are a round trip each).
pub(super) const LIST_CONCURRENCY: usize = 32;

/// The queues the user may see (of one vhost, or all), by vhost and name, paged,
/// sorted and filtered as asked: only the page's queues are asked for their counts
/// unless the sort needs every queue's.
async fn list(
    req: &HttpRequest,
    rt: &Runtime,
    u: &User,
    vhost: Option<&str>,
) -> Result<Value, ApiError> {
    let query = ListQuery::parse(req)?;
    let shown: Vec<_> = all_queues(rt)
        .into_iter()
        .filter(|(vh, _)| vhost.is_none_or(|v| v == vh) && super::sees(rt, u, vh))
        .collect();
    query
        .answer_lazy(
            shown,
            |(vh, q)| (vh.as_str(), q.name.as_ref()),
            |(vh, q)| async move { queue_json(rt, &vh, &q).await },
            LIST_CONCURRENCY,
        )
        .await
}

async fn list_all(req: HttpRequest, rt: State) -> ApiResult {
    let u = user(&req, &rt)?;
    Ok(HttpResponse::Ok().json(list(&req, &rt, &u, None).await?))
}

async fn list_vhost(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    let u = user(&req, &rt)?;
    let vhost = path.into_inner();
    in_vhost(&rt, &u, &vhost)?;
    Ok(HttpResponse::Ok().json(list(&req, &rt, &u, Some(&vhost)).await?))
}

/// One basic.get for the management API's channel `key`: from the queue's actor here,
/// or through its home (a quorum queue's member) as a client's basic.get on this node
/// would; its id (the home's, for a settle there), redelivered flag, message and the
/// ready count after it.
pub(super) async fn get_one(
    q: &Arc<QueueEntry>,
    key: ChannelKey,
    no_ack: bool,
) -> Result<Option<crate::broker::queue::RemoteGot>, ApiError> {
    if !q.is_local() {
        return Ok(q.remote_get(key, no_ack).await?);
    }
    let got = q
        .addr
        .send(queue::Get {
            channel: key,
            no_ack,
        })
        .await
        .map_err(|_| ApiError::internal("queue unavailable"))?;
    Ok(got.map(|(entry, msg, remaining)| (entry.id, entry.redelivered, msg, remaining)))
}

/// The queue `name` of `vhost`, if the user may act in the vhost (404 if none).
pub(super) fn find(
    rt: &Runtime,
    u: &User,
    vhost: &str,
    name: &str,
) -> Result<Arc<QueueEntry>, ApiError> {
    let v = in_vhost(rt, u, vhost)?;
    v.queue(name)
        .ok_or_else(|| ApiError::not_found(format!("no queue '{name}' in vhost '{vhost}'")))
}

async fn show(req: HttpRequest, rt: State, path: web::Path<(String, String)>) -> ApiResult {
    let u = user(&req, &rt)?;
    let (vhost, name) = path.into_inner();
    let q = find(&rt, &u, &vhost, &name)?;
    Ok(HttpResponse::Ok().json(queue_json(&rt, &vhost, &q).await))
}

/// Declares a queue from a RabbitMQ queue object. Returns whether it was created.
pub(super) async fn declare_queue(
    rt: &Runtime,
    who: Actor<'_>,
    vhost: &str,
    name: &str,
    body: &Value,
) -> Result<bool, ApiError> {
    let v = in_vhost(rt, who, vhost)?;
    permitted(rt, who, vhost, Access::Configure, "queue", name)?;
    check_shortstr("queue name", name)?;
    let arguments = table(body.get("arguments"))?;
    // they become the exchange and routing key of dead letters (short strings)
    for key in ["x-dead-letter-exchange", "x-dead-letter-routing-key"] {
        if let Some(s) = crate::broker::vhost::string_arg(&arguments, key) {
            check_shortstr(key, &s)?;
        }
    }
    let existed = v.queue(name).is_some();
    broker_core::declare::check_queue_declare_name(name, existed)
        .map_err(|_| ApiError::refused("Access refused."))?;
    v.declare_queue(
        name,
        QueueSpec {
            durable: body
                .get("durable")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            exclusive_owner: None,
            auto_delete: body
                .get("auto_delete")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            arguments,
            worker: None,
        },
        0,
    )
    .await?;
    Ok(!existed)
}

async fn declare(
    req: HttpRequest,
    rt: State,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> ApiResult {
    let u = user(&req, &rt)?;
    let (vhost, name) = path.into_inner();
    let body: Value = super::json_body(&body)?.unwrap_or(Value::Null);
    let new = declare_queue(&rt, Actor::User(&u), &vhost, &name, &body).await?;
    Ok(if new { created() } else { no_content() })
}

#[derive(Deserialize)]
struct DeleteParams {
    #[serde(rename = "if-unused", default)]
    if_unused: Option<String>,
    #[serde(rename = "if-empty", default)]
    if_empty: Option<String>,
}

async fn delete(
    req: HttpRequest,
    rt: State,
    path: web::Path<(String, String)>,
    params: web::Query<DeleteParams>,
) -> ApiResult {
    let u = user(&req, &rt)?;
    let (vhost, name) = path.into_inner();
    let q = find(&rt, &u, &vhost, &name)?;
    permitted(&rt, &u, &vhost, Access::Configure, "queue", &name)?;
    let yes = |s: &Option<String>| s.as_deref() == Some("true");
    let v = in_vhost(&rt, &u, &vhost)?;
    v.delete_queue(&q.name, yes(&params.if_unused), yes(&params.if_empty), 0)
        .await?;
    Ok(no_content())
}

async fn purge(req: HttpRequest, rt: State, path: web::Path<(String, String)>) -> ApiResult {
    let u = user(&req, &rt)?;
    let (vhost, name) = path.into_inner();
    let q = find(&rt, &u, &vhost, &name)?;
    permitted(&rt, &u, &vhost, Access::Read, "queue", &name)?;
    if !q.is_local() {
        q.remote_purge().await?;
        return Ok(no_content());
    }
    if q.stream.is_some() {
        return Err(ApiError::bad_request(format!(
            "queue.purge not supported by stream queues queue '{name}' in vhost '{vhost}'"
        )));
    }
    let _ = q.purge().await;
    Ok(no_content())
}

/// A number sent as a number or as a string (rabbitmqadmin sends strings).
pub(super) fn number(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

async fn get(
    req: HttpRequest,
    rt: State,
    path: web::Path<(String, String)>,
    body: web::Json<Value>,
) -> ApiResult {
    let u = user(&req, &rt)?;
    let (vhost, name) = path.into_inner();
    let q = find(&rt, &u, &vhost, &name)?;
    permitted(&rt, &u, &vhost, Access::Read, "queue", &name)?;
    if q.stream.is_some() {
        return Err(ApiError::bad_request(format!(
            "basic.get not supported by stream queues queue '{name}' in vhost '{vhost}'"
        )));
    }
    let count = number(body.get("count")).unwrap_or(1);
    let truncate = number(body.get("truncate")).map(|t| t as usize);
    let ackmode = body
        .get("ackmode")
        .and_then(Value::as_str)
        .unwrap_or("ack_requeue_true");
    let requeue = match ackmode {
        "ack_requeue_true" | "reject_requeue_true" => true,
        "ack_requeue_false" | "reject_requeue_false" => false,
        other => return Err(ApiError::bad_request(format!("unknown ackmode '{other}'"))),
    };
    let base64_only = body.get("encoding").and_then(Value::as_str) == Some("base64");
    // the management API's own channel key: connection 0 never belongs to a client
    let key = ChannelKey {
        connection: 0,
        channel: 0,
    };
    let mut out = Vec::new();
    let mut taken = Vec::new();
    for _ in 0..count {
        let Some((id, redelivered, msg, remaining)) = get_one(&q, key, !requeue).await? else {
            break;
        };
        let mut v = super::browse::message_json(&msg, redelivered, truncate, base64_only);
        if let Some(o) = v.as_object_mut() {
            o.insert("message_count".into(), json!(remaining));
        }
        out.push(v);
        taken.push(id);
    }
    if requeue && !taken.is_empty() {
        q.settle(Settle::Requeue(taken));
    }
    Ok(HttpResponse::Ok().json(out))
}
