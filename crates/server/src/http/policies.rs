//! `/api/policies` and `/api/operator-policies`: list, show, set and clear, with
//! RabbitMQ's answers (201 on create, 204 on update and delete, 400 with RabbitMQ's
//! validation text). Anyone with API access reads the policies of the vhosts they can
//! see; setting a policy takes the policymaker or administrator tag and access to the
//! vhost, an operator policy the administrator tag. A change applies at once to the
//! vhost's queues and exchanges (`VHost::apply_policies`).

use super::{admin, created, in_vhost, no_content, sees, user, ApiError, ApiResult, State};
use crate::broker::runtime::Runtime;
use actix_web::{web, HttpRequest, HttpResponse};
use broker_core::policy::{Kind, Policy};
use serde_json::Value;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    for (base, kind) in [
        ("/api/policies", Kind::Policy),
        ("/api/operator-policies", Kind::Operator),
    ] {
        cfg.route(
            base,
            web::get().to(move |req: HttpRequest, rt: State| list(req, rt, kind, None)),
        )
        .route(
            &format!("{base}/{{vhost}}"),
            web::get().to(move |req: HttpRequest, rt: State, p: web::Path<String>| {
                list(req, rt, kind, Some(p.into_inner()))
            }),
        )
        .route(
            &format!("{base}/{{vhost}}/{{name}}"),
            web::get().to(move |req: HttpRequest, rt: State, p: Names| get(req, rt, kind, p)),
        )
        .route(
            &format!("{base}/{{vhost}}/{{name}}"),
            web::put().to(
                move |req: HttpRequest, rt: State, p: Names, b: web::Bytes| {
                    put(req, rt, kind, p, b)
                },
            ),
        )
        .route(
            &format!("{base}/{{vhost}}/{{name}}"),
            web::delete().to(move |req: HttpRequest, rt: State, p: Names| delete(req, rt, kind, p)),
        );
    }
}

/// `{vhost}/{name}` of a path.
type Names = web::Path<(String, String)>;

/// 404 for a vhost that does not exist, as RabbitMQ words it here.
fn no_vhost() -> ApiError {
    ApiError {
        status: actix_web::http::StatusCode::NOT_FOUND,
        error: "not_found",
        reason: "vhost_not_found".into(),
    }
}

fn store_err(e: broker_core::store::StoreError) -> ApiError {
    ApiError::internal(format!("cannot store the change: {e}"))
}

async fn list(req: HttpRequest, rt: State, kind: Kind, vhost: Option<String>) -> ApiResult {
    let u = user(&req, &rt)?;
    if let Some(v) = &vhost {
        in_vhost(&rt, &u, v)?;
    }
    let out: Vec<Value> = rt
        .policies
        .list(kind, vhost.as_deref())
        .iter()
        .filter(|p| sees(&rt, &u, &p.vhost))
        .map(|p| p.to_json())
        .collect();
    Ok(HttpResponse::Ok().json(out))
}

async fn get(req: HttpRequest, rt: State, kind: Kind, path: Names) -> ApiResult {
    let u = user(&req, &rt)?;
    let (vhost, name) = path.into_inner();
    in_vhost(&rt, &u, &vhost)?;
    match rt.policies.get(kind, &vhost, &name) {
        Some(p) => Ok(HttpResponse::Ok().json(p.to_json())),
        None => Err(ApiError::not_found("Not Found")),
    }
}

/// Who may change policies of this kind in `vhost` (RabbitMQ's texts).
fn may_change(req: &HttpRequest, rt: &Runtime, kind: Kind, vhost: &str) -> Result<(), ApiError> {
    let u = match kind {
        Kind::Operator => admin(req, rt)?,
        Kind::Policy => {
            let u = user(req, rt)?;
            if !u.is_administrator() && !u.tags.iter().any(|t| t == "policymaker") {
                return Err(ApiError::refused("User not authorised to access object"));
            }
            u
        }
    };
    if rt.vhost(vhost).is_none() {
        return Err(no_vhost());
    }
    in_vhost(rt, &u, vhost).map(|_| ())
}

async fn put(req: HttpRequest, rt: State, kind: Kind, path: Names, body: web::Bytes) -> ApiResult {
    let (vhost, name) = path.into_inner();
    may_change(&req, &rt, kind, &vhost)?;
    let body: Value = super::json_body(&body)?.unwrap_or(Value::Null);
    let new = set_policy(&rt, kind, &vhost, &name, &body).await?;
    Ok(if new { created() } else { no_content() })
}

/// Checks and sets a policy, then applies it to the vhost (also the definitions
/// import's way in). Returns whether it is new.
pub(super) async fn set_policy(
    rt: &Runtime,
    kind: Kind,
    vhost: &str,
    name: &str,
    body: &Value,
) -> Result<bool, ApiError> {
    let Some(v) = rt.vhost(vhost) else {
        return Err(no_vhost());
    };
    let p = Policy::parse(kind, vhost, name, body).map_err(ApiError::bad_request)?;
    let _changing = rt.policies.changing.lock().await;
    let new = rt.policies.put(kind, p).await.map_err(store_err)?;
    v.apply_policies().await;
    Ok(new)
}

async fn delete(req: HttpRequest, rt: State, kind: Kind, path: Names) -> ApiResult {
    let (vhost, name) = path.into_inner();
    may_change(&req, &rt, kind, &vhost)?;
    let _changing = rt.policies.changing.lock().await;
    if !rt
        .policies
        .delete(kind, &vhost, &name)
        .await
        .map_err(store_err)?
    {
        return Err(ApiError::not_found("Not Found"));
    }
    if let Some(v) = rt.vhost(&vhost) {
        v.apply_policies().await;
    }
    Ok(no_content())
}
