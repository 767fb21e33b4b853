//! `/api/user-limits`: per-user `max-connections` and `max-channels` (RabbitMQ's
//! `set_user_limits`), with RabbitMQ 3.10's answers. Administrators only.

use super::{admin, no_content, ApiError, ApiResult, State};
use crate::broker::user_limits::UserLimits;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/user-limits", web::get().to(list))
        .route("/api/user-limits/{user}", web::get().to(of_user))
        .route("/api/user-limits/{user}/{name}", web::put().to(put))
        .route("/api/user-limits/{user}/{name}", web::delete().to(delete));
}

fn entry(user: &str, l: &UserLimits) -> Value {
    json!({"user": user, "value": l})
}

fn store_err(e: broker_core::store::StoreError) -> ApiError {
    ApiError::internal(format!("cannot store the change: {e}"))
}

async fn list(req: HttpRequest, rt: State) -> ApiResult {
    admin(&req, &rt)?;
    let all = rt.registry.user_limits.all();
    let list: Vec<Value> = all.iter().map(|(u, l)| entry(u, l)).collect();
    Ok(HttpResponse::Ok().json(list))
}

async fn of_user(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    admin(&req, &rt)?;
    let user = path.into_inner();
    if rt.registry.user(&user).is_none() {
        return Err(ApiError::not_found(format!("user '{user}' not found")));
    }
    let l = rt.registry.user_limits.get(&user);
    let list: Vec<Value> = if l.is_empty() {
        Vec::new()
    } else {
        vec![entry(&user, &l)]
    };
    Ok(HttpResponse::Ok().json(list))
}

/// The limit value of a PUT body: an integer (negative: no limit, kept as set).
fn value(name: &str, body: &Value) -> Result<i64, ApiError> {
    let v = body
        .get("value")
        .ok_or_else(|| ApiError::bad_request("[{key_missing,value}]"))?;
    v.as_i64().ok_or_else(|| {
        ApiError::bad_request(format!("{name} should be a number, actually was {v}"))
    })
}

async fn put(
    req: HttpRequest,
    rt: State,
    path: web::Path<(String, String)>,
    body: web::Json<Value>,
) -> ApiResult {
    admin(&req, &rt)?;
    let (user, name) = path.into_inner();
    let v = value(&name, &body)?;
    if rt.registry.user(&user).is_none() {
        return Err(ApiError::bad_request(format!("no_such_user: {user}")));
    }
    if !rt
        .registry
        .set_user_limit(&user, &name, Some(v))
        .await
        .map_err(store_err)?
    {
        return Err(ApiError::bad_request(format!(
            "Unrecognised terms [{{<<\"{name}\">>,{v}}}] in user-limits"
        )));
    }
    Ok(no_content())
}

async fn delete(req: HttpRequest, rt: State, path: web::Path<(String, String)>) -> ApiResult {
    admin(&req, &rt)?;
    let (user, name) = path.into_inner();
    if rt.registry.user(&user).is_none() {
        return Err(ApiError::not_found(format!("user '{user}' not found")));
    }
    // clearing a limit that is not set (or no limit at all) is 204, as in RabbitMQ
    rt.registry
        .set_user_limit(&user, &name, None)
        .await
        .map_err(store_err)?;
    Ok(no_content())
}
