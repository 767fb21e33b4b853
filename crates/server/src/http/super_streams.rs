//! `/api/stream/super-streams`: create (PUT), delete and list partitioned streams
//! (RabbitMQ's super streams). The body of a PUT is RabbitMQ 4.x's
//! (`rabbitmq_stream_management`): `{"partitions": N}` or `{"binding-keys": "a,b"}`,
//! plus this API's `{"routing_keys": ["a", "b"]}`, and optional `arguments`
//! (`max-age`, `max-length-bytes`, `stream-max-segment-size-bytes`,
//! `queue-leader-locator`, `initial-cluster-size`). The work is `broker/super_streams.rs`.

use super::fields::to_json;
use super::queues::{number, permitted};
use super::{created, in_vhost, no_content, user, ApiError, ApiResult, State};
use crate::broker::runtime::Runtime;
use crate::broker::super_streams::{PartitionArgs, SuperStreamInfo, SuperStreamPlan};
use actix_web::{web, HttpRequest, HttpResponse};
use broker_core::auth::{Access, User};
use serde_json::{json, Map, Value};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/stream/super-streams", web::get().to(list_all))
        .route(
            "/api/stream/super-streams/{vhost}",
            web::get().to(list_vhost),
        )
        .route(
            "/api/stream/super-streams/{vhost}/{name}",
            web::get().to(show),
        )
        .route(
            "/api/stream/super-streams/{vhost}/{name}",
            web::put().to(create),
        )
        .route(
            "/api/stream/super-streams/{vhost}/{name}",
            web::delete().to(delete),
        );
}

/// RabbitMQ 4.x's listing object (`rabbit_stream_mgmt_util`): the first partition's
/// arguments stand for all of them.
fn super_stream_json(vhost: &str, s: &SuperStreamInfo) -> Value {
    let arguments = s
        .partitions
        .first()
        .map(|p| to_json(&p.arguments))
        .unwrap_or_else(|| json!({}));
    let partitions: Vec<Value> = s
        .partitions
        .iter()
        .map(|p| {
            json!({"name": p.name.as_ref(), "routing_key": p.routing_key.as_ref(),
                   "order": p.order, "state": "running"})
        })
        .collect();
    json!({"name": s.name.as_ref(), "vhost": vhost, "arguments": arguments,
           "partition_count": partitions.len(), "partitions": partitions})
}

fn list(rt: &Runtime, u: &User, only: Option<&str>) -> Vec<Value> {
    let mut vhosts: Vec<String> = rt.vhosts.iter().map(|v| v.key().clone()).collect();
    vhosts.sort();
    let mut out = Vec::new();
    for vh in vhosts {
        if only.is_some_and(|o| o != vh) || !super::sees(rt, u, &vh) {
            continue;
        }
        let Some(v) = rt.vhost(&vh) else { continue };
        out.extend(v.super_streams().iter().map(|s| super_stream_json(&vh, s)));
    }
    out
}

async fn list_all(req: HttpRequest, rt: State) -> ApiResult {
    let u = user(&req, &rt)?;
    Ok(HttpResponse::Ok().json(list(&rt, &u, None)))
}

async fn list_vhost(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    let u = user(&req, &rt)?;
    let vhost = path.into_inner();
    in_vhost(&rt, &u, &vhost)?;
    Ok(HttpResponse::Ok().json(list(&rt, &u, Some(&vhost))))
}

async fn show(req: HttpRequest, rt: State, path: web::Path<(String, String)>) -> ApiResult {
    let u = user(&req, &rt)?;
    let (vhost, name) = path.into_inner();
    let v = in_vhost(&rt, &u, &vhost)?;
    let s = v.super_stream(&name)?;
    Ok(HttpResponse::Ok().json(super_stream_json(&vhost, &s)))
}

/// The plan a PUT body asks for, with RabbitMQ's texts for what is wrong with it.
fn plan_of(name: &str, body: &Value) -> Result<SuperStreamPlan, ApiError> {
    let arguments = partition_args(body.get("arguments"))?;
    let count = body.get("partitions").filter(|v| !v.is_null());
    let keys = body
        .get("binding-keys")
        .or_else(|| body.get("routing_keys"))
        .filter(|v| !v.is_null());
    let plan = match (count, keys) {
        (None, None) => {
            return Err(ApiError::bad_request(
                "Must specify partitions or binding keys",
            ))
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "Specify partitions or binding keys, not both",
            ))
        }
        (Some(n), None) => {
            let n = signed(n)
                .ok_or_else(|| ApiError::bad_request("The partitions must be a number"))?;
            SuperStreamPlan::numbered(name, n, arguments)?
        }
        (None, Some(k)) => SuperStreamPlan::keyed(name, &key_list(k)?, arguments)?,
    };
    Ok(plan)
}

/// An integer sent as a number or a string.
fn signed(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Binding keys as RabbitMQ sends them (one comma-separated string) or as a list.
fn key_list(v: &Value) -> Result<Vec<String>, ApiError> {
    let bad = || {
        ApiError::bad_request("binding keys must be a comma-separated string or a list of strings")
    };
    match v {
        Value::String(s) => Ok(s.split(',').map(str::to_owned).collect()),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned).ok_or_else(bad))
            .collect(),
        _ => Err(bad()),
    }
}

/// The partitions' arguments. Keys RabbitMQ does not know are refused here (RabbitMQ
/// ignores them, which turns a typo into a stream without the retention meant).
fn partition_args(v: Option<&Value>) -> Result<PartitionArgs, ApiError> {
    let mut out = PartitionArgs::default();
    let map = match v {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(ApiError::bad_request("arguments must be a JSON object")),
    };
    for (k, val) in map {
        let size = || {
            number(Some(val)).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid value for argument '{k}': expected a non-negative integer"
                ))
            })
        };
        match k.as_str() {
            "max-age" => out.max_age = Some(text(k, val)?),
            "max-length-bytes" => out.max_length_bytes = Some(size()?),
            "stream-max-segment-size-bytes" => out.segment_bytes = Some(size()?),
            "queue-leader-locator" => out.leader_locator = Some(text(k, val)?),
            "initial-cluster-size" => {
                match size()? {
                    0 => return Err(ApiError::bad_request(
                        "invalid value for argument 'initial-cluster-size': it must be positive",
                    )),
                    n => out.initial_cluster_size = Some(n),
                }
            }
            other => return Err(unknown_argument(other)),
        }
    }
    Ok(out)
}

fn text(key: &str, v: &Value) -> Result<String, ApiError> {
    v.as_str().map(str::to_owned).ok_or_else(|| {
        ApiError::bad_request(format!(
            "invalid value for argument '{key}': expected a string"
        ))
    })
}

fn unknown_argument(key: &str) -> ApiError {
    ApiError::bad_request(format!(
        "unknown argument '{key}'; a super stream takes max-age, max-length-bytes, \
         stream-max-segment-size-bytes, queue-leader-locator, initial-cluster-size \
         (without the x- prefix)"
    ))
}

/// RabbitMQ's checks (`check_super_stream_management_permitted`): configure on the
/// exchange and on each partition, read on the exchange and write on each partition
/// (the bindings).
fn check_permissions(
    rt: &Runtime,
    u: &User,
    vhost: &str,
    exchange: &str,
    streams: &[&str],
) -> Result<(), ApiError> {
    permitted(rt, u, vhost, Access::Configure, "exchange", exchange)?;
    for s in streams {
        permitted(rt, u, vhost, Access::Configure, "queue", s)?;
    }
    permitted(rt, u, vhost, Access::Read, "exchange", exchange)?;
    for s in streams {
        permitted(rt, u, vhost, Access::Write, "queue", s)?;
    }
    Ok(())
}

async fn create(
    req: HttpRequest,
    rt: State,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> ApiResult {
    let u = user(&req, &rt)?;
    let (vhost, name) = path.into_inner();
    let v = in_vhost(&rt, &u, &vhost)?;
    // as RabbitMQ: configure on the exchange before the body is looked at
    permitted(&rt, &u, &vhost, Access::Configure, "exchange", &name)?;
    let body: Value = super::json_body(&body)?.unwrap_or(Value::Object(Map::new()));
    if !body.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let plan = plan_of(&name, &body)?;
    let streams: Vec<&str> = plan.partitions.iter().map(|(s, _)| s.as_str()).collect();
    check_permissions(&rt, &u, &vhost, &name, &streams)?;
    v.add_super_stream(&plan).await?;
    Ok(created())
}

async fn delete(req: HttpRequest, rt: State, path: web::Path<(String, String)>) -> ApiResult {
    let u = user(&req, &rt)?;
    let (vhost, name) = path.into_inner();
    let v = in_vhost(&rt, &u, &vhost)?;
    let s = v.super_stream(&name)?;
    permitted(&rt, &u, &vhost, Access::Configure, "exchange", &name)?;
    for p in &s.partitions {
        permitted(&rt, &u, &vhost, Access::Configure, "queue", &p.name)?;
    }
    v.delete_super_stream(&name).await?;
    Ok(no_content())
}
