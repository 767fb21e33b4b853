//! Runtime parameters (`/api/parameters`, RabbitMQ's paths: the `shovel` component, and
//! operator policies listed as the `operator_policy` component) and the shovels' status
//! (`/api/shovels`, RabbitMQ's shovel management plugin). Parameters take the
//! policymaker or administrator tag and access to the vhost, as RabbitMQ's
//! `is_authorized_policies`; a local URI (`amqp://` without a host) also needs the
//! creating user's access to the vhost it names, since the shovel acts with the broker's
//! rights there. Status is readable by any management user for the vhosts they see.

use super::{created, in_vhost, no_content, sees, user, ApiError, ApiResult, State};
use crate::broker::runtime::Runtime;
use crate::broker::shovel::params::{self, Dest, Source};
use crate::broker::shovel::{format_timestamp, uri};
use actix_web::{web, HttpRequest, HttpResponse};
use broker_core::auth::User;
use broker_core::policy::Kind;
use serde_json::{json, Map, Value};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/parameters", web::get().to(list_all))
        .route("/api/parameters/{component}", web::get().to(list_component))
        .route(
            "/api/parameters/{component}/{vhost}",
            web::get().to(list_vhost),
        )
        .route(
            "/api/parameters/{component}/{vhost}/{name}",
            web::get().to(get),
        )
        .route(
            "/api/parameters/{component}/{vhost}/{name}",
            web::put().to(put),
        )
        .route(
            "/api/parameters/{component}/{vhost}/{name}",
            web::delete().to(delete),
        )
        .route("/api/shovels", web::get().to(status_all))
        .route("/api/shovels/{vhost}", web::get().to(status_vhost))
        .route(
            "/api/shovels/vhost/{vhost}/{name}",
            web::get().to(status_one),
        )
        .route(
            "/api/shovels/vhost/{vhost}/{name}",
            web::delete().to(delete_shovel),
        )
        .route(
            "/api/shovels/vhost/{vhost}/{name}/restart",
            web::delete().to(restart),
        );
}

const SHOVEL: &str = "shovel";
const OPERATOR: &str = "operator_policy";

/// A user who may manage parameters (RabbitMQ's texts).
fn policymaker(req: &HttpRequest, rt: &Runtime) -> Result<User, ApiError> {
    let u = user(req, rt)?;
    if !u.is_administrator() && !u.has_tag("policymaker") {
        return Err(ApiError::refused("User not authorised to access object"));
    }
    Ok(u)
}

fn store_err(e: broker_core::store::StoreError) -> ApiError {
    ApiError::internal(format!("cannot store the change: {e}"))
}

/// Every parameter of `component` (all known ones when `None`) in `vhost` (or all).
fn parameters(rt: &Runtime, u: &User, component: Option<&str>, vhost: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    if component.is_none_or(|c| c == SHOVEL) {
        for (v, n, value) in rt.shovels.list(vhost) {
            out.push(json!({"value": value, "vhost": v, "component": SHOVEL, "name": n}));
        }
    }
    if component.is_none_or(|c| c == OPERATOR) {
        for p in rt.policies.list(Kind::Operator, vhost) {
            out.push(
                json!({"value": {"pattern": p.pattern, "definition": p.definition,
                "priority": p.priority, "apply-to": p.apply_to.as_str()},
                "vhost": p.vhost, "component": OPERATOR, "name": p.name}),
            );
        }
    }
    out.retain(|p| p["vhost"].as_str().is_some_and(|v| sees(rt, u, v)));
    out
}

async fn list_all(req: HttpRequest, rt: State) -> ApiResult {
    let u = policymaker(&req, &rt)?;
    Ok(HttpResponse::Ok().json(parameters(&rt, &u, None, None)))
}

async fn list_component(req: HttpRequest, rt: State, p: web::Path<String>) -> ApiResult {
    let u = policymaker(&req, &rt)?;
    Ok(HttpResponse::Ok().json(parameters(&rt, &u, Some(&p.into_inner()), None)))
}

async fn list_vhost(req: HttpRequest, rt: State, p: web::Path<(String, String)>) -> ApiResult {
    let u = policymaker(&req, &rt)?;
    let (component, vhost) = p.into_inner();
    in_vhost(&rt, &u, &vhost)?;
    Ok(HttpResponse::Ok().json(parameters(&rt, &u, Some(&component), Some(&vhost))))
}

type Names = web::Path<(String, String, String)>;

async fn get(req: HttpRequest, rt: State, p: Names) -> ApiResult {
    let u = policymaker(&req, &rt)?;
    let (component, vhost, name) = p.into_inner();
    in_vhost(&rt, &u, &vhost)?;
    parameters(&rt, &u, Some(&component), Some(&vhost))
        .into_iter()
        .find(|p| p["name"] == name.as_str())
        .map(|p| HttpResponse::Ok().json(p))
        .ok_or_else(|| ApiError::not_found("Not Found"))
}

/// The change's vhost exists and the user may change parameters in it.
fn may_change(
    req: &HttpRequest,
    rt: &Runtime,
    component: &str,
    vhost: &str,
) -> Result<User, ApiError> {
    let u = policymaker(req, rt)?;
    if rt.vhost(vhost).is_none() {
        return Err(ApiError::not_found("vhost_not_found"));
    }
    in_vhost(rt, &u, vhost)?;
    if component != SHOVEL {
        return Err(ApiError::bad_request(format!(
            "Validation failed\n\ncomponent {component} not found (this broker has the \"shovel\" component; operator policies are set at /api/operator-policies)\n"
        )));
    }
    Ok(u)
}

async fn put(req: HttpRequest, rt: State, p: Names, body: web::Bytes) -> ApiResult {
    let (component, vhost, name) = p.into_inner();
    let u = may_change(&req, &rt, &component, &vhost)?;
    let body: Value = super::json_body(&body)?.unwrap_or(Value::Null);
    let new = set_shovel(&rt, &u, &vhost, &name, &body).await?;
    Ok(if new { created() } else { no_content() })
}

/// Checks and sets a shovel from a parameter body (`{"value": {...}}`, also the
/// definitions import's way in). Returns whether it is new.
pub(super) async fn set_shovel(
    rt: &Runtime,
    u: &User,
    vhost: &str,
    name: &str,
    body: &Value,
) -> Result<bool, ApiError> {
    if name.is_empty() || name.len() > 255 {
        return Err(ApiError::bad_request("a shovel's name is 1 to 255 bytes"));
    }
    let value = body.get("value").cloned().unwrap_or(Value::Null);
    let def = params::parse(name, &value)
        .map_err(|e| ApiError::bad_request(format!("Validation failed\n\n{e}\n")))?;
    for raw in def.src_uris.iter().chain(&def.dest_uris) {
        let parsed = uri::parse(raw).map_err(ApiError::bad_request)?;
        if parsed.host.is_none() {
            local_access(rt, u, &parsed.vhost)?;
        }
    }
    rt.shovels.put(vhost, name, &value).await.map_err(store_err)
}

/// A local URI's vhost exists and the creating user may use it.
fn local_access(rt: &Runtime, u: &User, vhost: &str) -> Result<(), ApiError> {
    if rt.vhost(vhost).is_none() {
        return Err(ApiError::bad_request(format!(
            "Validation failed\n\nvhost \"{vhost}\" of a local URI (amqp://) does not exist\n"
        )));
    }
    let allowed = u.name == broker_core::auth::INTERNAL_USER
        || rt.registry.permission(vhost, &u.name).is_some();
    if !allowed {
        return Err(ApiError::bad_request(format!(
            "Validation failed\n\nuser \"{}\" has no access to vhost \"{vhost}\" of a local URI (amqp://)\n",
            u.name
        )));
    }
    Ok(())
}

async fn delete(req: HttpRequest, rt: State, p: Names) -> ApiResult {
    let (component, vhost, name) = p.into_inner();
    may_change(&req, &rt, &component, &vhost)?;
    if !rt.shovels.delete(&vhost, &name).await.map_err(store_err)? {
        return Err(ApiError::not_found("Not Found"));
    }
    Ok(no_content())
}

/// One shovel as `/api/shovels` shows it (RabbitMQ's fields, with the counters of
/// RabbitMQ 4.1's status: forwarded, remaining, remaining_unacked, pending).
fn shovel_json(
    vhost: &str,
    name: &str,
    def: &params::ShovelDef,
    status: Option<&crate::broker::shovel::Status>,
) -> Value {
    let mut m = Map::new();
    let node = crate::broker::node::node_name();
    let (state, reason, since) = match status {
        Some(s) => s.get(),
        None => (
            crate::broker::shovel::ShovelState::Starting,
            None,
            crate::broker::runtime::now_ms(),
        ),
    };
    m.insert("node".into(), json!(node));
    m.insert("timestamp".into(), json!(format_timestamp(since)));
    m.insert("name".into(), json!(name));
    m.insert("vhost".into(), json!(vhost));
    m.insert("type".into(), json!("dynamic"));
    m.insert("state".into(), json!(state.as_str()));
    if let Some(r) = reason {
        m.insert("reason".into(), json!(r));
    }
    let first = |l: &[String]| l.first().map(|u| uri::masked(u)).unwrap_or_default();
    m.insert("src_uri".into(), json!(first(&def.src_uris)));
    m.insert("src_protocol".into(), json!("amqp091"));
    m.insert("dest_protocol".into(), json!("amqp091"));
    m.insert("dest_uri".into(), json!(first(&def.dest_uris)));
    match &def.src {
        Source::Queue(q) => drop(m.insert("src_queue".into(), json!(q))),
        Source::Exchange { name, key } => {
            m.insert("src_exchange".into(), json!(name));
            m.insert("src_exchange_key".into(), json!(key));
        }
    }
    match &def.dest {
        Dest::Queue(q) => drop(m.insert("dest_queue".into(), json!(q))),
        Dest::Exchange { name, key } => {
            m.insert("dest_exchange".into(), json!(name));
            if let Some(k) = key {
                m.insert("dest_exchange_key".into(), json!(k));
            }
        }
        Dest::Same => {}
    }
    m.insert("ack_mode".into(), json!(def.ack_mode.as_str()));
    let remaining = status.and_then(|s| s.remaining());
    m.insert(
        "remaining".into(),
        remaining.map_or(json!("unlimited"), |r| json!(r)),
    );
    m.insert(
        "remaining_unacked".into(),
        json!(status.map_or(0, |s| s.remaining_unacked())),
    );
    m.insert("pending".into(), json!(0));
    m.insert(
        "forwarded".into(),
        json!(status.map_or(0, |s| s.forwarded_count())),
    );
    Value::Object(m)
}

fn statuses(rt: &Runtime, u: &User, vhost: Option<&str>, name: Option<&str>) -> Vec<Value> {
    rt.shovels
        .statuses(vhost)
        .iter()
        .filter(|(v, n, _, _)| sees(rt, u, v) && name.is_none_or(|x| x == n))
        .map(|(v, n, def, st)| shovel_json(v, n, def, st.as_deref()))
        .collect()
}

async fn status_all(req: HttpRequest, rt: State) -> ApiResult {
    let u = user(&req, &rt)?;
    Ok(HttpResponse::Ok().json(statuses(&rt, &u, None, None)))
}

async fn status_vhost(req: HttpRequest, rt: State, p: web::Path<String>) -> ApiResult {
    let u = user(&req, &rt)?;
    let vhost = p.into_inner();
    in_vhost(&rt, &u, &vhost)?;
    Ok(HttpResponse::Ok().json(statuses(&rt, &u, Some(&vhost), None)))
}

/// RabbitMQ 3.10 answers this path with a list of the one shovel.
async fn status_one(req: HttpRequest, rt: State, p: web::Path<(String, String)>) -> ApiResult {
    let u = user(&req, &rt)?;
    let (vhost, name) = p.into_inner();
    in_vhost(&rt, &u, &vhost)?;
    let found = statuses(&rt, &u, Some(&vhost), Some(&name));
    if found.is_empty() {
        return Err(ApiError::not_found("Not Found"));
    }
    Ok(HttpResponse::Ok().json(found))
}

async fn delete_shovel(req: HttpRequest, rt: State, p: web::Path<(String, String)>) -> ApiResult {
    let (vhost, name) = p.into_inner();
    may_change(&req, &rt, SHOVEL, &vhost)?;
    if !rt.shovels.delete(&vhost, &name).await.map_err(store_err)? {
        return Err(ApiError::not_found("Not Found"));
    }
    Ok(no_content())
}

async fn restart(req: HttpRequest, rt: State, p: web::Path<(String, String)>) -> ApiResult {
    let (vhost, name) = p.into_inner();
    may_change(&req, &rt, SHOVEL, &vhost)?;
    if !rt.shovels.restart(&vhost, &name) {
        return Err(ApiError::not_found("Not Found"));
    }
    Ok(no_content())
}
