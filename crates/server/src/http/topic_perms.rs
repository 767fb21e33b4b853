//! `/api/topic-permissions`: per (vhost, user, exchange) write and read patterns on routing
//! keys (RabbitMQ's `set_topic_permissions`), with RabbitMQ 3.10's answers. Changes need
//! the administrator tag.

use super::{admin, created, no_content, ApiError, ApiResult, State};
use crate::broker::runtime::Runtime;
use crate::broker::topic_perms::TopicPermission;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/topic-permissions", web::get().to(list))
        .route("/api/topic-permissions/{vhost}/{user}", web::get().to(get))
        .route("/api/topic-permissions/{vhost}/{user}", web::put().to(put))
        .route(
            "/api/topic-permissions/{vhost}/{user}",
            web::delete().to(delete),
        )
        .route(
            "/api/users/{user}/topic-permissions",
            web::get().to(of_user),
        )
        .route(
            "/api/vhosts/{vhost}/topic-permissions",
            web::get().to(of_vhost),
        );
}

/// One permission as RabbitMQ lists it (also in definitions).
pub(super) fn entry(vhost: &str, user: &str, p: &TopicPermission) -> Value {
    json!({"user": user, "vhost": vhost, "exchange": p.exchange, "write": p.write, "read": p.read})
}

fn listed(rt: &Runtime, keep: impl Fn(&str, &str) -> bool) -> Vec<Value> {
    rt.registry
        .topic_perms
        .all()
        .iter()
        .filter(|(v, u, _)| keep(v, u))
        .map(|(v, u, p)| entry(v, u, p))
        .collect()
}

async fn list(req: HttpRequest, rt: State) -> ApiResult {
    admin(&req, &rt)?;
    Ok(HttpResponse::Ok().json(listed(&rt, |_, _| true)))
}

async fn get(req: HttpRequest, rt: State, path: web::Path<(String, String)>) -> ApiResult {
    admin(&req, &rt)?;
    let (vhost, user) = path.into_inner();
    let list = listed(&rt, |v, u| v == vhost && u == user);
    if list.is_empty() {
        return Err(ApiError::not_found("topic permission not found"));
    }
    Ok(HttpResponse::Ok().json(list))
}

async fn of_user(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    admin(&req, &rt)?;
    let user = path.into_inner();
    if rt.registry.user(&user).is_none() {
        return Err(ApiError::not_found(format!("user '{user}' not found")));
    }
    Ok(HttpResponse::Ok().json(listed(&rt, |_, u| u == user)))
}

async fn of_vhost(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    admin(&req, &rt)?;
    let vhost = path.into_inner();
    if rt.registry.vhost(&vhost).is_none() {
        return Err(ApiError::not_found(format!("vhost '{vhost}' not found")));
    }
    Ok(HttpResponse::Ok().json(listed(&rt, |v, _| v == vhost)))
}

/// Sets a topic permission from a RabbitMQ topic permission object; whether it is new.
pub(super) async fn apply_topic_permission(
    rt: &Runtime,
    vhost: &str,
    user: &str,
    body: &Value,
) -> Result<bool, ApiError> {
    let field = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    let (exchange, write, read) = (field("exchange"), field("write"), field("read"));
    let missing: Vec<String> = [("exchange", &exchange), ("write", &write), ("read", &read)]
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| format!("{{key_missing,{k}}}"))
        .collect();
    let (Some(exchange), Some(write), Some(read)) = (exchange, write, read) else {
        return Err(ApiError::bad_request(format!("[{}]", missing.join(","))));
    };
    if rt.registry.vhost(vhost).is_none() || rt.registry.user(user).is_none() {
        return Err(ApiError::bad_request("vhost_or_user_not_found"));
    }
    let p = TopicPermission {
        exchange,
        write,
        read,
    };
    rt.registry
        .set_topic_permission(vhost, user, p)
        .await
        .map_err(|e| match e {
            Ok(reason) => ApiError::bad_request(reason),
            Err(e) => ApiError::internal(format!("cannot store the change: {e}")),
        })
}

async fn put(
    req: HttpRequest,
    rt: State,
    path: web::Path<(String, String)>,
    body: web::Json<Value>,
) -> ApiResult {
    admin(&req, &rt)?;
    let (vhost, user) = path.into_inner();
    let new = apply_topic_permission(&rt, &vhost, &user, &body).await?;
    Ok(if new { created() } else { no_content() })
}

async fn delete(req: HttpRequest, rt: State, path: web::Path<(String, String)>) -> ApiResult {
    admin(&req, &rt)?;
    let (vhost, user) = path.into_inner();
    let existed = rt
        .registry
        .clear_topic_permissions(&vhost, &user)
        .await
        .map_err(|e| ApiError::internal(format!("cannot store the change: {e}")))?;
    if !existed {
        return Err(ApiError::not_found("topic permission not found"));
    }
    Ok(no_content())
}
