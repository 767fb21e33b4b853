//! Vhosts, users, permissions and vhost limits (`/api/vhosts`, `/api/users`,
//! `/api/permissions`, `/api/vhost-limits`). Changes need the administrator tag.

use super::{admin, created, no_content, user, ApiError, ApiResult, State};
use crate::broker::access::VhostRecord;
use crate::broker::runtime::Runtime;
use crate::broker::vhost::VHost;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use broker_core::auth::{hash_password_with, PasswordHashing, Permission, User, SHA256, SHA512};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/vhosts", web::get().to(list_vhosts))
        .route("/api/vhosts/{vhost}", web::get().to(get_vhost))
        .route("/api/vhosts/{vhost}", web::put().to(put_vhost))
        .route("/api/vhosts/{vhost}", web::delete().to(delete_vhost))
        .route(
            "/api/vhosts/{vhost}/permissions",
            web::get().to(vhost_permissions),
        )
        .route("/api/users", web::get().to(list_users))
        .route("/api/users/{user}", web::get().to(get_user))
        .route("/api/users/{user}", web::put().to(put_user))
        .route("/api/users/{user}", web::delete().to(delete_user))
        .route(
            "/api/users/{user}/permissions",
            web::get().to(user_permissions),
        )
        .route("/api/permissions", web::get().to(list_permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            web::get().to(get_permission),
        )
        .route(
            "/api/permissions/{vhost}/{user}",
            web::put().to(put_permission),
        )
        .route(
            "/api/permissions/{vhost}/{user}",
            web::delete().to(delete_permission),
        )
        .route("/api/vhost-limits", web::get().to(list_limits))
        .route("/api/vhost-limits/{vhost}", web::get().to(vhost_limits))
        .route("/api/vhost-limits/{vhost}/{name}", web::put().to(put_limit))
        .route(
            "/api/vhost-limits/{vhost}/{name}",
            web::delete().to(delete_limit),
        );
}

fn store_err(e: broker_core::store::StoreError) -> ApiError {
    ApiError::internal(format!("cannot store the change: {e}"))
}

fn vhost_json(r: &VhostRecord) -> Value {
    json!({"name": r.name, "description": r.description, "tags": r.tags, "tracing": false,
           "limits": r.limits, "metadata": {"description": r.description, "tags": r.tags}})
}

async fn list_vhosts(req: HttpRequest, rt: State) -> ApiResult {
    let u = user(&req, &rt)?;
    let list: Vec<Value> = rt
        .registry
        .vhosts()
        .iter()
        .filter(|v| super::sees(&rt, &u, &v.name))
        .map(vhost_json)
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

async fn get_vhost(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    let u = user(&req, &rt)?;
    let name = path.into_inner();
    match rt.registry.vhost(&name) {
        Some(v) if super::sees(&rt, &u, &name) => Ok(HttpResponse::Ok().json(vhost_json(&v))),
        _ => Err(ApiError::not_found(format!("vhost '{name}' not found"))),
    }
}

/// The body of PUT /api/vhosts/{name}.
#[derive(Deserialize, Default)]
pub(super) struct VhostBody {
    #[serde(default)]
    pub(super) description: String,
    #[serde(default)]
    pub(super) tags: Option<Value>,
}

/// Creates a vhost (registry, store, and its exchanges).
pub(super) async fn create_vhost(
    rt: &Arc<Runtime>,
    name: &str,
    description: String,
) -> Result<bool, ApiError> {
    // the name travels in connection.open (a short string)
    broker_core::names::check_shortstr("vhost name", name)?;
    let existed = rt.registry.vhost(name);
    let limits = existed.as_ref().map(|r| r.limits).unwrap_or_default();
    rt.registry
        .put_vhost(VhostRecord {
            name: name.to_owned(),
            description,
            limits,
            tags: existed.as_ref().map(|r| r.tags.clone()).unwrap_or_default(),
        })
        .await
        .map_err(store_err)?;
    if rt.vhost(name).is_none() {
        rt.vhosts
            .insert(name.to_owned(), VHost::new(name, rt.node.clone()));
    }
    Ok(existed.is_none())
}

async fn put_vhost(
    req: HttpRequest,
    rt: State,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult {
    let me = admin(&req, &rt)?;
    let name = path.into_inner();
    let body: VhostBody = super::json_body::<VhostBody>(&body)?.unwrap_or_default();
    let new = create_vhost(&rt, &name, body.description).await?;
    if let Some(tags) = body.tags {
        if let Some(mut r) = rt.registry.vhost(&name) {
            r.tags = parse_tags(Some(&tags));
            rt.registry.put_vhost(r).await.map_err(store_err)?;
        }
    }
    // as RabbitMQ: the creating user gets full permissions in a new vhost
    if new {
        rt.registry
            .set_permission(&name, &me.name, Permission::all())
            .await
            .map_err(store_err)?;
    }
    Ok(if new { created() } else { no_content() })
}

async fn delete_vhost(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    admin(&req, &rt)?;
    let name = path.into_inner();
    let Some(v) = rt.vhost(&name) else {
        return Err(ApiError::not_found(format!("vhost '{name}' not found")));
    };
    // its connections go first (as RabbitMQ: 320 CONNECTION_FORCED)
    for c in rt.conn_info.iter().filter(|c| c.vhost == name) {
        if let Some(r) = rt.connections.get(&c.id) {
            r.do_send(crate::broker::messages::ForceClose {
                reason: format!("vhost '{name}' is deleted"),
            });
        }
    }
    for q in v.queues() {
        let _ = v.delete_queue(&q.name, false, false, 0).await;
    }
    for x in v.exchanges() {
        if !x.name.starts_with("amq.") {
            let _ = v.delete_exchange(&x.name, false).await;
        }
    }
    rt.policies.delete_vhost(&name).await.map_err(store_err)?;
    rt.shovels.delete_vhost(&name).await.map_err(store_err)?;
    rt.schemas.delete_vhost(&name).await.map_err(store_err)?;
    rt.registry.delete_vhost(&name).await.map_err(store_err)?;
    rt.vhosts.remove(&name);
    Ok(no_content())
}

/// A user as RabbitMQ shows it (also in definitions), with its limits.
pub(super) fn user_json(rt: &Runtime, u: &User) -> Value {
    json!({"name": u.name, "password_hash": u.password_hash,
           "hashing_algorithm": u.hashing_algorithm.name(), "tags": u.tags,
           "limits": rt.registry.user_limits.get(&u.name)})
}

async fn list_users(req: HttpRequest, rt: State) -> ApiResult {
    admin(&req, &rt)?;
    let list: Vec<Value> = rt
        .registry
        .users()
        .iter()
        .map(|u| user_json(&rt, u))
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

async fn get_user(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    admin(&req, &rt)?;
    let name = path.into_inner();
    let u = rt
        .registry
        .user(&name)
        .ok_or_else(|| ApiError::not_found(format!("user '{name}' not found")))?;
    Ok(HttpResponse::Ok().json(user_json(&rt, &u)))
}

/// Tags as RabbitMQ accepts them: "a,b" or ["a","b"].
pub(super) fn parse_tags(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s
            .split(',')
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Creates or updates a user from a RabbitMQ user object (password or password_hash).
/// The reserved `rmq-internal` and names over 255 bytes are refused (400).
pub(super) async fn apply_user(rt: &Runtime, name: &str, body: &Value) -> Result<bool, ApiError> {
    broker_core::auth::check_user_name(name)?;
    let existing = rt.registry.user(name);
    if body.get("tags").is_none() {
        return Err(ApiError::bad_request("tags_not_present"));
    }
    if body.get("password").is_some() && body.get("password_hash").is_some() {
        return Err(ApiError::bad_request(
            "both_password_and_password_hash_are_provided",
        ));
    }
    if let Some(h) = body.get("password_hash").and_then(Value::as_str) {
        if !h.is_empty() && B64.decode(h).is_err() {
            return Err(ApiError::bad_request("not_base64"));
        }
    }
    let tags = parse_tags(body.get("tags"));
    let (password_hash, hashing_algorithm) =
        if let Some(p) = body.get("password").and_then(Value::as_str) {
            let alg = rt.config.password_hashing;
            (hash_password_with(alg, p, rand::random()), alg)
        } else if let Some(h) = body.get("password_hash").and_then(Value::as_str) {
            // without a hashing_algorithm, the configured one, as RabbitMQ does
            let alg = match body.get("hashing_algorithm").and_then(Value::as_str) {
                None => rt.config.password_hashing,
                Some(alg) => PasswordHashing::parse(alg).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "unsupported hashing algorithm '{alg}' (only {SHA256} or {SHA512})"
                    ))
                })?,
            };
            (h.to_owned(), alg)
        } else if let Some(u) = &existing {
            (u.password_hash.clone(), u.hashing_algorithm)
        } else {
            return Err(ApiError::bad_request(
                "Must specify password or password_hash",
            ));
        };
    rt.registry
        .put_user(User {
            name: name.to_owned(),
            password_hash,
            hashing_algorithm,
            tags,
        })
        .await
        .map_err(store_err)?;
    Ok(existing.is_none())
}

async fn put_user(
    req: HttpRequest,
    rt: State,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> ApiResult {
    admin(&req, &rt)?;
    let new = apply_user(&rt, &path.into_inner(), &body).await?;
    Ok(if new { created() } else { no_content() })
}

async fn delete_user(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    admin(&req, &rt)?;
    let name = path.into_inner();
    if !rt.registry.delete_user(&name).await.map_err(store_err)? {
        return Err(ApiError::not_found(format!("user '{name}' not found")));
    }
    for c in rt.conn_info.iter().filter(|c| c.user == name) {
        if let Some(r) = rt.connections.get(&c.id) {
            r.do_send(crate::broker::messages::ForceClose {
                reason: format!("user '{name}' is deleted"),
            });
        }
    }
    Ok(no_content())
}

fn perm_json(vhost: &str, user: &str, p: &Permission) -> Value {
    json!({"user": user, "vhost": vhost, "configure": p.configure, "write": p.write, "read": p.read})
}

/// The permissions `keep(vhost, user)` selects, as RabbitMQ lists them.
fn permissions_where(rt: &Runtime, keep: impl Fn(&str, &str) -> bool) -> HttpResponse {
    let list: Vec<Value> = rt
        .registry
        .permissions()
        .iter()
        .filter(|(v, u, _)| keep(v, u))
        .map(|(v, u, p)| perm_json(v, u, p))
        .collect();
    HttpResponse::Ok().json(list)
}

async fn list_permissions(req: HttpRequest, rt: State) -> ApiResult {
    admin(&req, &rt)?;
    Ok(permissions_where(&rt, |_, _| true))
}

async fn vhost_permissions(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    admin(&req, &rt)?;
    let vhost = path.into_inner();
    if rt.registry.vhost(&vhost).is_none() {
        return Err(ApiError::not_found(format!("vhost '{vhost}' not found")));
    }
    Ok(permissions_where(&rt, |v, _| v == vhost))
}

async fn user_permissions(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    admin(&req, &rt)?;
    let user = path.into_inner();
    if rt.registry.user(&user).is_none() {
        return Err(ApiError::not_found(format!("user '{user}' not found")));
    }
    Ok(permissions_where(&rt, |_, u| u == user))
}

async fn get_permission(
    req: HttpRequest,
    rt: State,
    path: web::Path<(String, String)>,
) -> ApiResult {
    admin(&req, &rt)?;
    let (vhost, user) = path.into_inner();
    let p = rt
        .registry
        .permission(&vhost, &user)
        .ok_or_else(|| ApiError::not_found("permission not found"))?;
    Ok(HttpResponse::Ok().json(perm_json(&vhost, &user, &p)))
}

/// Sets a permission from a RabbitMQ permission object.
pub(super) async fn apply_permission(
    rt: &Runtime,
    vhost: &str,
    user: &str,
    body: &Value,
) -> Result<bool, ApiError> {
    if rt.registry.vhost(vhost).is_none() || rt.registry.user(user).is_none() {
        return Err(ApiError::bad_request("vhost_or_user_not_found"));
    }
    let field = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ApiError::bad_request(format!("key_missing: {k}")))
    };
    let p = Permission::new(&field("configure")?, &field("write")?, &field("read")?)
        .map_err(ApiError::bad_request)?;
    let new = rt.registry.permission(vhost, user).is_none();
    rt.registry
        .set_permission(vhost, user, p)
        .await
        .map_err(store_err)?;
    Ok(new)
}

async fn put_permission(
    req: HttpRequest,
    rt: State,
    path: web::Path<(String, String)>,
    body: web::Json<Value>,
) -> ApiResult {
    admin(&req, &rt)?;
    let (vhost, user) = path.into_inner();
    let new = apply_permission(&rt, &vhost, &user, &body).await?;
    Ok(if new { created() } else { no_content() })
}

async fn delete_permission(
    req: HttpRequest,
    rt: State,
    path: web::Path<(String, String)>,
) -> ApiResult {
    admin(&req, &rt)?;
    let (vhost, user) = path.into_inner();
    if !rt
        .registry
        .clear_permission(&vhost, &user)
        .await
        .map_err(store_err)?
    {
        return Err(ApiError::not_found("permission not found"));
    }
    Ok(no_content())
}

fn limits_json(r: &VhostRecord) -> Value {
    json!({"vhost": r.name, "value": r.limits})
}

async fn list_limits(req: HttpRequest, rt: State) -> ApiResult {
    admin(&req, &rt)?;
    let list: Vec<Value> = rt
        .registry
        .vhosts()
        .iter()
        .filter(|r| r.limits != Default::default())
        .map(limits_json)
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

async fn vhost_limits(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    admin(&req, &rt)?;
    let vhost = path.into_inner();
    let r = rt
        .registry
        .vhost(&vhost)
        .ok_or_else(|| ApiError::not_found(format!("vhost '{vhost}' not found")))?;
    let list: Vec<Value> = if r.limits == Default::default() {
        Vec::new()
    } else {
        vec![limits_json(&r)]
    };
    Ok(HttpResponse::Ok().json(list))
}

/// Sets (or with `None` lifts) one vhost limit.
async fn set_limit(rt: &Runtime, vhost: &str, name: &str, value: Option<u64>) -> ApiResult {
    let mut r = rt
        .registry
        .vhost(vhost)
        .ok_or_else(|| ApiError::not_found(format!("vhost '{vhost}' not found")))?;
    match name {
        "max-connections" => r.limits.max_connections = value,
        "max-queues" => r.limits.max_queues = value,
        other => return Err(ApiError::bad_request(format!("unknown limit '{other}'"))),
    }
    rt.registry.put_vhost(r).await.map_err(store_err)?;
    Ok(no_content())
}

async fn put_limit(
    req: HttpRequest,
    rt: State,
    path: web::Path<(String, String)>,
    body: web::Json<Value>,
) -> ApiResult {
    admin(&req, &rt)?;
    let (vhost, name) = path.into_inner();
    let value = body
        .get("value")
        .and_then(Value::as_i64)
        .ok_or_else(|| ApiError::bad_request("value must be an integer"))?;
    // a negative limit means no limit, as in RabbitMQ
    set_limit(&rt, &vhost, &name, u64::try_from(value).ok()).await
}

async fn delete_limit(req: HttpRequest, rt: State, path: web::Path<(String, String)>) -> ApiResult {
    admin(&req, &rt)?;
    let (vhost, name) = path.into_inner();
    set_limit(&rt, &vhost, &name, None).await
}
