//! `/api/schemas`: the registry of named JSON Schemas per vhost (ours: RabbitMQ has no
//! such thing, so the paths and answers follow its policies'). Anyone with API access
//! reads the schemas of the vhosts they can see; adding, replacing and deleting one
//! takes the policymaker or administrator tag and access to the vhost. A schema is
//! compiled on PUT (400 with the compiler's message if it does not compile, or if its
//! JSON is over 1 MiB), and a PUT that replaces one applies at once to the exchanges that
//! use it. A schema that an exchange (by `x-schema` or a policy) or a policy names cannot
//! be deleted: 409 with the names.

use super::{created, in_vhost, no_content, sees, user, ApiError, ApiResult, State};
use crate::broker::runtime::Runtime;
use crate::broker::schemas::StoredSchema;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use broker_core::policy::Kind;
use broker_core::schema::{MAX_NAME_BYTES, MAX_SCHEMA_BYTES};
use serde_json::Value;

/// Longest description (bytes).
const MAX_DESCRIPTION_BYTES: usize = 4096;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/schemas", web::get().to(list_all))
        .route("/api/schemas/{vhost}", web::get().to(list_vhost))
        .route("/api/schemas/{vhost}/{name}", web::get().to(get))
        .route("/api/schemas/{vhost}/{name}", web::put().to(put))
        .route("/api/schemas/{vhost}/{name}", web::delete().to(delete));
}

/// `{vhost}/{name}` of a path.
type Names = web::Path<(String, String)>;

fn store_err(e: broker_core::store::StoreError) -> ApiError {
    ApiError::internal(format!("cannot store the change: {e}"))
}

async fn list_all(req: HttpRequest, rt: State) -> ApiResult {
    list(&req, &rt, None)
}

async fn list_vhost(req: HttpRequest, rt: State, p: web::Path<String>) -> ApiResult {
    list(&req, &rt, Some(p.into_inner()))
}

fn list(req: &HttpRequest, rt: &Runtime, vhost: Option<String>) -> ApiResult {
    let u = user(req, rt)?;
    if let Some(v) = &vhost {
        in_vhost(rt, &u, v)?;
    }
    let out: Vec<Value> = rt
        .schemas
        .list(vhost.as_deref())
        .iter()
        .filter(|s| sees(rt, &u, &s.vhost))
        .map(|s| s.to_json())
        .collect();
    Ok(HttpResponse::Ok().json(out))
}

async fn get(req: HttpRequest, rt: State, path: Names) -> ApiResult {
    let u = user(&req, &rt)?;
    let (vhost, name) = path.into_inner();
    in_vhost(&rt, &u, &vhost)?;
    match rt.schemas.get(&vhost, &name) {
        Some(s) => Ok(HttpResponse::Ok().json(s.to_json())),
        None => Err(ApiError::not_found("Not Found")),
    }
}

/// Who may change the schemas of `vhost`: as policies (policymaker or administrator).
fn may_change(req: &HttpRequest, rt: &Runtime, vhost: &str) -> Result<(), ApiError> {
    let u = user(req, rt)?;
    if !u.is_administrator() && !u.tags.iter().any(|t| t == "policymaker") {
        return Err(ApiError::refused("User not authorised to access object"));
    }
    if rt.vhost(vhost).is_none() {
        return Err(ApiError::not_found("vhost_not_found"));
    }
    in_vhost(rt, &u, vhost).map(|_| ())
}

async fn put(req: HttpRequest, rt: State, path: Names, body: web::Bytes) -> ApiResult {
    let (vhost, name) = path.into_inner();
    may_change(&req, &rt, &vhost)?;
    let body: Value = super::json_body(&body)?.unwrap_or(Value::Null);
    let new = set_schema(&rt, &vhost, &name, &body).await?;
    Ok(if new { created() } else { no_content() })
}

/// Checks, compiles and stores a schema, then brings the vhost's exchanges to it (also
/// the definitions import's way in). Returns whether it is new.
pub(super) async fn set_schema(
    rt: &Runtime,
    vhost: &str,
    name: &str,
    body: &Value,
) -> Result<bool, ApiError> {
    let Some(v) = rt.vhost(vhost) else {
        return Err(ApiError::not_found("vhost_not_found"));
    };
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(ApiError::bad_request(format!(
            "a schema name is 1 to {MAX_NAME_BYTES} bytes"
        )));
    }
    let Some(schema) = body.get("schema") else {
        return Err(ApiError::bad_request(
            "give the schema as {\"schema\": {...}, \"description\": \"...\"}",
        ));
    };
    let size = schema.to_string().len();
    if size > MAX_SCHEMA_BYTES {
        return Err(ApiError::bad_request(format!(
            "schema too large: {size} bytes of JSON, at most {MAX_SCHEMA_BYTES}"
        )));
    }
    let description = match body.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) if s.len() <= MAX_DESCRIPTION_BYTES => s.clone(),
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "description must be a string of at most {MAX_DESCRIPTION_BYTES} bytes"
            )))
        }
    };
    let stored = StoredSchema::new(vhost, name, schema.clone(), description)
        .map_err(|e| ApiError::bad_request(format!("invalid schema: {e}")))?;
    let _changing = rt.schemas.changing.lock().await;
    let new = rt.schemas.put(stored).await.map_err(store_err)?;
    let _policies = rt.policies.changing.lock().await;
    v.apply_policies().await;
    Ok(new)
}

async fn delete(req: HttpRequest, rt: State, path: Names) -> ApiResult {
    let (vhost, name) = path.into_inner();
    may_change(&req, &rt, &vhost)?;
    let _changing = rt.schemas.changing.lock().await;
    if rt.schemas.get(&vhost, &name).is_none() {
        return Err(ApiError::not_found("Not Found"));
    }
    if let Some(why) = in_use(&rt, &vhost, &name) {
        return Err(ApiError::with_error(StatusCode::CONFLICT, "conflict", why));
    }
    rt.schemas.delete(&vhost, &name).await.map_err(store_err)?;
    Ok(no_content())
}

/// Why schema `name` cannot go: the exchanges and policies of the vhost that name it.
fn in_use(rt: &Runtime, vhost: &str, name: &str) -> Option<String> {
    let exchanges: Vec<String> = rt
        .vhost(vhost)
        .map(|v| v.exchanges())
        .unwrap_or_default()
        .iter()
        .filter(|x| x.schema.load().as_ref().is_some_and(|a| a.name == name))
        .map(|x| x.name.to_string())
        .collect();
    let policies: Vec<String> = rt
        .policies
        .list(Kind::Policy, Some(vhost))
        .iter()
        .filter(|p| p.definition.get("schema").and_then(Value::as_str) == Some(name))
        .map(|p| p.name.clone())
        .collect();
    if exchanges.is_empty() && policies.is_empty() {
        return None;
    }
    Some(format!(
        "schema '{name}' in vhost '{vhost}' is in use (exchanges: {}; policies: {}): \
         remove it from them first",
        list_or_none(&exchanges),
        list_or_none(&policies)
    ))
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        return "none".into();
    }
    let mut shown: Vec<String> = names.iter().take(20).map(|n| format!("'{n}'")).collect();
    if names.len() > 20 {
        shown.push(format!("and {} more", names.len() - 20));
    }
    shown.join(", ")
}
