//! The management HTTP API (RabbitMQ's paths and field names, so rabbitmqadmin and
//! monitoring scripts work unchanged) and Prometheus `/metrics`, served by actix-web from
//! the broker process on `--http-listen`.
//!
//! Every request carries HTTP basic auth checked against the broker's users; the user's
//! tags decide what it may do (administrator: everything; monitoring: read everything;
//! management: its own vhosts), and vhost permissions apply as over AMQP. Request bodies
//! over `--http-max-body` are refused (413) without being buffered.

mod admin;
mod connections;
mod definitions;
mod exchanges;
mod fields;
pub mod fuzzing;
mod overview;
mod queues;

use crate::runtime::Runtime;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer, ResponseError};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use broker_core::auth::User;
use broker_core::AmqpError;
use serde_json::json;
use std::sync::Arc;

/// The acting user of the broker's own operations (definitions import), as RabbitMQ
/// names it; no login can have this name (it has no password).
pub const INTERNAL_USER: &str = "rmq-internal";

/// Shared state of the handlers.
pub type State = web::Data<Arc<Runtime>>;

/// An API error: status, RabbitMQ's `error` word and a reason.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    reason: String,
}

impl ApiError {
    /// 401: no or wrong credentials ("not_authorized", as RabbitMQ spells it there).
    pub fn unauthorised(reason: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            error: "not_authorized",
            reason: reason.into(),
        }
    }

    /// 401: authenticated but not allowed ("not_authorised", as RabbitMQ spells it here).
    pub fn refused(reason: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            error: "not_authorised",
            reason: reason.into(),
        }
    }
    /// 404.
    pub fn not_found(reason: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error: "Object Not Found",
            reason: reason.into(),
        }
    }
    /// 400.
    pub fn bad_request(reason: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error: "bad_request",
            reason: reason.into(),
        }
    }
    /// 500.
    pub fn internal(reason: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "internal_error",
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.reason)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            r.insert_header(("WWW-Authenticate", "Basic realm=\"RabbitMQ Management\""));
        }
        r.json(json!({"error": self.error, "reason": self.reason}))
    }
}

/// AMQP errors map onto HTTP statuses as RabbitMQ's API maps them.
impl From<AmqpError> for ApiError {
    fn from(e: AmqpError) -> ApiError {
        use broker_core::ReplyCode as C;
        let (status, error) = match e.code {
            C::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            C::AccessRefused => (StatusCode::FORBIDDEN, "access_refused"),
            C::ResourceLocked => (StatusCode::BAD_REQUEST, "resource_locked"),
            C::PreconditionFailed => (StatusCode::BAD_REQUEST, "bad_request"),
            C::NotAllowed => (StatusCode::BAD_REQUEST, "not_allowed"),
            _ => (StatusCode::BAD_REQUEST, "bad_request"),
        };
        ApiError {
            status,
            error,
            reason: e.text.clone(),
        }
    }
}

/// The result type of handlers.
pub type ApiResult = Result<HttpResponse, ApiError>;

/// The authenticated user of a request (HTTP basic auth), who may use the API at all.
pub fn user(req: &HttpRequest, rt: &Runtime) -> Result<User, ApiError> {
    let header = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
        .ok_or_else(|| ApiError::unauthorised("Not_Authorized"))?;
    let raw = B64
        .decode(header.trim())
        .map_err(|_| ApiError::unauthorised("Not_Authorized"))?;
    let text = String::from_utf8_lossy(&raw);
    let (name, password) = text
        .split_once(':')
        .ok_or_else(|| ApiError::unauthorised("Not_Authorized"))?;
    let u = rt
        .registry
        .user(name)
        .filter(|u| u.check_password(password))
        .ok_or_else(|| ApiError::unauthorised("Login failed"))?;
    if !u.may_manage() {
        return Err(ApiError::refused("Not management user"));
    }
    Ok(u)
}

/// Refuses unless the user is an administrator.
pub fn admin(req: &HttpRequest, rt: &Runtime) -> Result<User, ApiError> {
    let u = user(req, rt)?;
    if !u.is_administrator() {
        return Err(ApiError::refused("Not administrator user"));
    }
    Ok(u)
}

/// Whether the user may see a vhost's objects (monitoring sees all; others need a
/// permission there).
pub fn sees(rt: &Runtime, u: &User, vhost: &str) -> bool {
    u.is_monitoring() || rt.registry.permission(vhost, &u.name).is_some()
}

/// Refuses unless the user may act in the vhost (administrator or a permission there),
/// and the vhost exists.
pub fn in_vhost(rt: &Runtime, u: &User, vhost: &str) -> Result<Arc<crate::vhost::VHost>, ApiError> {
    let v = rt
        .vhost(vhost)
        .ok_or_else(|| ApiError::not_found(format!("vhost '{vhost}' not found")))?;
    if !u.is_administrator()
        && u.name != INTERNAL_USER
        && rt.registry.permission(vhost, &u.name).is_none()
    {
        return Err(ApiError::refused(format!(
            "access to vhost '{vhost}' refused for user '{}'",
            u.name
        )));
    }
    Ok(v)
}

/// An optional JSON request body: empty is `None`, malformed is 400 `not_json` (as
/// RabbitMQ answers), never silently ignored. Oversized bodies never get here (413).
pub fn json_body<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<Option<T>, ApiError> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(b).map(Some).map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        error: "bad_request",
        reason: format!("not_json: {e}"),
    })
}

/// 204 No Content, what RabbitMQ answers to updates.
pub fn no_content() -> HttpResponse {
    HttpResponse::NoContent().finish()
}

/// 201 Created, what RabbitMQ answers when a PUT creates something.
pub fn created() -> HttpResponse {
    HttpResponse::Created().finish()
}

/// Starts the API on `addr`. Returns the bound address.
pub fn start(rt: Arc<Runtime>, addr: &str) -> std::io::Result<std::net::SocketAddr> {
    let max_body = rt.config.http_max_body;
    // message rates: every queue's counters sampled every 5 s, as RabbitMQ does
    let sampler = rt.clone();
    actix::spawn(async move {
        loop {
            for (_, q) in overview::all_queues(&sampler) {
                q.counters.sample();
            }
            actix_rt::time::sleep(std::time::Duration::from_secs(5)).await;
        }
    });
    let data = web::Data::new(rt);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(max_body)
                    .error_handler(|e, _| {
                        let status = match &e {
                            actix_web::error::JsonPayloadError::Overflow { .. }
                            | actix_web::error::JsonPayloadError::OverflowKnownLength { .. } => {
                                StatusCode::PAYLOAD_TOO_LARGE
                            }
                            _ => StatusCode::BAD_REQUEST,
                        };
                        ApiError {
                            status,
                            error: "bad_request",
                            reason: e.to_string(),
                        }
                        .into()
                    }),
            )
            .app_data(web::PayloadConfig::new(max_body))
            .configure(overview::routes)
            .configure(admin::routes)
            .configure(queues::routes)
            .configure(exchanges::routes)
            .configure(connections::routes)
            .configure(definitions::routes)
    })
    .workers(1)
    .disable_signals()
    .bind(addr)?;
    let bound = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("no address bound"))?;
    actix::spawn(async move {
        if let Err(e) = server.run().await {
            tracing::error!("management API stopped: {e}");
        }
    });
    Ok(bound)
}
