//! The management HTTP API (RabbitMQ's paths and field names, so rabbitmqadmin and
//! monitoring scripts work unchanged) and Prometheus `/metrics`, served by actix-web from
//! the broker process on `--http-listen`.
//!
//! Every `/api` request carries HTTP basic auth checked against the broker's users before
//! anything else happens (`gate`): before the body is read, before the path names a vhost
//! or an object, so an unauthenticated caller learns nothing and costs nothing. Users in
//! `--loopback-users` are refused from other addresses, as over AMQP. The user's tags
//! decide what it may do (administrator: everything; monitoring: read everything;
//! management: its own vhosts), and vhost permissions apply as over AMQP. Request bodies
//! over `--http-max-body` are refused (413) without being buffered, and at most
//! `BODY_SLOTS` requests with a body are served at once (503 beyond), so slow or large
//! uploads cannot take the broker's memory.

mod admin;
mod browse;
mod cert_health;
mod connections;
mod definitions;
mod exchanges;
#[cfg(feature = "fault-injection")]
mod fault;
mod fields;
pub mod fuzzing;
mod health;
mod move_messages;
mod nodes;
mod overview;
mod paging;
mod policies;
mod publish;
mod queues;
mod schemas;
mod shovels;
mod super_streams;
mod topic_perms;
mod ui;
mod user_limits;

use crate::broker::runtime::Runtime;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpMessage, HttpRequest, HttpResponse, HttpServer, ResponseError};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use broker_core::auth::User;
use broker_core::AmqpError;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Requests with a body served at once. Each may buffer up to `--http-max-body` (16 MiB
/// by default), so this bounds what uploads can hold (128 MiB by default); a request
/// beyond it is refused with 503 before its body is read, never queued.
const BODY_SLOTS: usize = 8;

/// Who acts in a request: a user who logged in, or the broker itself (a definitions
/// import creates objects whatever the importing administrator's vhost permissions, as
/// RabbitMQ's does). A variant of its own, never a user name, so no login can be it.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// An authenticated user, with its tags and permissions.
    User(&'a User),
    /// The broker's own operations: no permission checks.
    Broker,
}

impl<'a> From<&'a User> for Actor<'a> {
    fn from(u: &'a User) -> Self {
        Actor::User(u)
    }
}

/// The user `gate` authenticated, kept with the request for the handlers.
#[derive(Clone)]
struct Authenticated(User);

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
    /// An error with RabbitMQ's own `error` word for the case (paging's
    /// `page_out_of_range`, say).
    pub fn with_error(status: StatusCode, error: &'static str, reason: String) -> ApiError {
        ApiError {
            status,
            error,
            reason,
        }
    }
    /// 503: every body slot is taken; the client may try again.
    pub fn busy() -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: "service_unavailable",
            reason: format!(
                "too many requests with a body at once (at most {BODY_SLOTS}); try again"
            ),
        }
    }
    /// 503: a resource alarm is on (`reason` as connection.blocked gives it). AMQP
    /// publishers are not read until it clears; an HTTP publish is answered at once
    /// rather than held open.
    pub fn alarm(reason: &str) -> ApiError {
        let reason = if reason == "low on disk" {
            "disk alarm: publishing is blocked until free disk space is back above the limit"
        } else {
            "memory alarm: publishing is blocked until memory use falls below the high watermark"
        };
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: "service_unavailable",
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

/// The authenticated user of a request, who may use the API at all (`gate` checked it
/// before the handler ran; checked here again for a request that did not pass it).
pub fn user(req: &HttpRequest, rt: &Runtime) -> Result<User, ApiError> {
    if let Some(Authenticated(u)) = req.extensions().get::<Authenticated>() {
        return Ok(u.clone());
    }
    authenticate(req, rt)
}

/// Checks a request's HTTP basic auth as RabbitMQ does: the password, then where the user
/// logs in from (`--loopback-users`), then the tags that open the API.
fn authenticate(req: &HttpRequest, rt: &Runtime) -> Result<User, ApiError> {
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
        .check_password(name, password)
        .ok_or_else(|| ApiError::unauthorised("Login failed"))?;
    // no peer address (never over TCP) counts as remote: refused for loopback users
    let local = req
        .peer_addr()
        .is_some_and(|p| rt.registry.may_log_in_from(&u.name, p.ip()));
    if !local {
        return Err(ApiError::refused("User can only log in via localhost"));
    }
    if !u.may_manage() {
        return Err(ApiError::refused("Not management user"));
    }
    Ok(u)
}

/// Whether a request comes with a body to read.
fn has_body(req: &ServiceRequest) -> bool {
    let h = req.headers();
    h.contains_key("transfer-encoding")
        || h.get("content-length")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// Runs before every handler (and so before any extractor reads the body): `/api`
/// requests are authenticated first, and a request with a body takes one of the
/// `BODY_SLOTS` for as long as its handler runs.
async fn gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if !req.path().starts_with("/api") {
        return next.call(req).await.map(|r| r.map_into_boxed_body());
    }
    let (Some(rt), Some(slots)) = (
        req.app_data::<State>().cloned(),
        req.app_data::<web::Data<BodySlots>>().cloned(),
    ) else {
        return Ok(req.error_response(ApiError::internal("API state missing")));
    };
    let quiet = from_script(req.request());
    let u = match authenticate(req.request(), &rt) {
        Ok(u) => u,
        Err(e) => return Ok(without_prompt(req.error_response(e), quiet)),
    };
    req.extensions_mut().insert(Authenticated(u));
    if let Err(e) = json_only(&req) {
        return Ok(req.error_response(e));
    }
    let _slot = if has_body(&req) {
        match slots.0.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => return Ok(req.error_response(ApiError::busy())),
        }
    } else {
        None
    };
    next.call(req)
        .await
        .map(|r| without_prompt(r, quiet).map_into_boxed_body())
}

/// Whether the caller is a page's script (it sends `X-Requested-With`, as the UI does):
/// its 401s must not make the browser pop up its own login dialog, which would then
/// cache the credentials and send them with any later request to the broker.
fn from_script(req: &HttpRequest) -> bool {
    req.headers().contains_key("x-requested-with")
}

/// Drops `WWW-Authenticate` from a 401 answered to a script (see [`from_script`]), and
/// tells browsers never to take an answer for anything but the JSON it says it is.
fn without_prompt<B>(mut r: ServiceResponse<B>, quiet: bool) -> ServiceResponse<B> {
    let h = r.headers_mut();
    if quiet {
        h.remove("www-authenticate");
    }
    h.insert(
        actix_web::http::header::X_CONTENT_TYPE_OPTIONS,
        actix_web::http::header::HeaderValue::from_static("nosniff"),
    );
    r
}

/// Refuses (415) a state-changing call whose body is not declared as JSON, so that no
/// page of another site can make a browser change anything here: a cross-site form or
/// a `no-cors` fetch can only send a POST (with a form's or text content type, or none),
/// and a JSON content type or a PUT, PATCH or DELETE needs a CORS preflight, which this
/// API never grants. So a POST always needs `Content-Type: application/json`, and a PUT,
/// PATCH or DELETE that has a body needs it too. Stricter than RabbitMQ, which takes any
/// content type (docs/compatibility.md).
fn json_only(req: &ServiceRequest) -> Result<(), ApiError> {
    use actix_web::http::Method;
    let m = req.method();
    let needs = *m == Method::POST
        || ((*m == Method::PUT || *m == Method::PATCH || *m == Method::DELETE) && has_body(req));
    if !needs {
        return Ok(());
    }
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    let got = if ct.is_empty() {
        "none".to_owned()
    } else {
        format!("'{}'", ct.chars().take(100).collect::<String>())
    };
    Err(ApiError {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        error: "unsupported_media_type",
        reason: format!(
            "{m} requests must send a JSON body with 'Content-Type: application/json' (got {got})"
        ),
    })
}

/// The permits of `BODY_SLOTS`, shared by the API's workers.
struct BodySlots(Arc<Semaphore>);

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

/// Refuses unless the actor may act in the vhost (the broker, an administrator or a
/// permission there), and the vhost exists.
pub fn in_vhost<'a>(
    rt: &Runtime,
    who: impl Into<Actor<'a>>,
    vhost: &str,
) -> Result<Arc<crate::broker::vhost::VHost>, ApiError> {
    let v = rt
        .vhost(vhost)
        .ok_or_else(|| ApiError::not_found(format!("vhost '{vhost}' not found")))?;
    if let Actor::User(u) = who.into() {
        if !u.is_administrator() && rt.registry.permission(vhost, &u.name).is_none() {
            return Err(ApiError::refused(format!(
                "access to vhost '{vhost}' refused for user '{}'",
                u.name
            )));
        }
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

/// The fault-injection endpoint, in test builds with the feature only.
fn fault_routes(cfg: &mut web::ServiceConfig) {
    #[cfg(feature = "fault-injection")]
    fault::routes(cfg);
    #[cfg(not(feature = "fault-injection"))]
    let _ = cfg;
}

/// Starts the API on `addr`, over HTTPS with `tls`. Returns the bound address.
pub fn start(
    rt: Arc<Runtime>,
    addr: &str,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<std::net::SocketAddr> {
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
    let slots = web::Data::new(BodySlots(Arc::new(Semaphore::new(BODY_SLOTS))));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(slots.clone())
            .wrap(from_fn(gate))
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
            .configure(browse::routes)
            .configure(move_messages::routes)
            .configure(exchanges::routes)
            .configure(publish::routes)
            .configure(connections::routes)
            .configure(definitions::routes)
            .configure(policies::routes)
            .configure(shovels::routes)
            .configure(schemas::routes)
            .configure(health::routes)
            .configure(cert_health::routes)
            .configure(nodes::routes)
            .configure(user_limits::routes)
            .configure(topic_perms::routes)
            .configure(super_streams::routes)
            .configure(ui::routes)
            .configure(fault_routes)
    })
    .workers(1)
    .disable_signals();
    // HTTPS only when configured: the certificate follows SIGHUP reloads through the
    // configuration's resolver (crate::tls)
    let server = match tls {
        Some(config) => server.bind_rustls_0_23(addr, Arc::unwrap_or_clone(config))?,
        None => server.bind(addr)?,
    };
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
