//! `GET /api/queues/{vhost}/{name}/messages`: browsing a queue's ready messages without
//! taking them (ours, not RabbitMQ's: its API can only get and requeue, which marks
//! messages redelivered and moves them). Needs read permission on the queue, as
//! `POST …/get` does. The queue's actor (or its home, for a queue of another node)
//! copies the messages at `offset..offset + count` in delivery order: classic queues
//! from memory, spill files and the store, quorum queues from their state machine.

use super::fields::properties_json;
use super::queues::{find, permitted};
use super::{user, ApiError, ApiResult, State};
use crate::broker::queue::PEEK_MAX;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use broker_core::auth::Access;
use broker_core::Message;
use serde::Deserialize;
use serde_json::{json, Value};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/queues/{vhost}/{name}/messages", web::get().to(browse));
}

/// The browse's query parameters (numbers as text, checked here for clear errors).
#[derive(Deserialize)]
struct BrowseParams {
    offset: Option<String>,
    count: Option<String>,
    truncate: Option<String>,
}

/// Messages shown when `count` is not given.
const DEFAULT_COUNT: usize = 20;

fn parse(name: &str, v: Option<&str>, default: usize) -> Result<usize, ApiError> {
    match v {
        None => Ok(default),
        Some(s) => s.trim().parse::<usize>().map_err(|_| {
            ApiError::bad_request(format!("{name} must be a non-negative integer, not '{s}'"))
        }),
    }
}

async fn browse(
    req: HttpRequest,
    rt: State,
    path: web::Path<(String, String)>,
    params: web::Query<BrowseParams>,
) -> ApiResult {
    let u = user(&req, &rt)?;
    let (vhost, name) = path.into_inner();
    let q = find(&rt, &u, &vhost, &name)?;
    permitted(&rt, &u, &vhost, Access::Read, "queue", &name)?;
    let offset = parse("offset", params.offset.as_deref(), 0)?;
    let count = parse("count", params.count.as_deref(), DEFAULT_COUNT)?;
    if !(1..=PEEK_MAX).contains(&count) {
        return Err(ApiError::bad_request(format!(
            "count must be between 1 and {PEEK_MAX}, not {count}"
        )));
    }
    let truncate = params
        .truncate
        .as_deref()
        .map(|t| parse("truncate", Some(t), 0))
        .transpose()?;
    let peeked = q.peek(offset, count).await?;
    let items: Vec<Value> = peeked
        .items
        .iter()
        .enumerate()
        .map(|(i, (redelivered, m))| {
            let mut v = message_json(m, *redelivered, truncate, false);
            if let Some(o) = v.as_object_mut() {
                o.insert("position".into(), json!(offset + i));
            }
            v
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "total": peeked.total,
        "offset": offset,
        "items": items,
    })))
}

/// A message as RabbitMQ's `POST …/get` shows it: the payload as a string when it is
/// UTF-8 (and base64 was not asked for), else base64; cut to `truncate` bytes.
pub(super) fn message_json(
    msg: &Message,
    redelivered: bool,
    truncate: Option<usize>,
    base64_only: bool,
) -> Value {
    let mut payload = msg.body.to_vec();
    if let Some(t) = truncate {
        payload.truncate(t);
    }
    let (payload, encoding) = match String::from_utf8(payload) {
        Ok(s) if !base64_only => (s, "string"),
        Ok(s) => (B64.encode(s), "base64"),
        Err(e) => (B64.encode(e.into_bytes()), "base64"),
    };
    json!({
        "payload_bytes": msg.body.len(),
        "redelivered": redelivered,
        "exchange": msg.exchange.as_ref(),
        "routing_key": msg.routing_key.as_ref(),
        "properties": properties_json(&msg.properties),
        "payload": payload,
        "payload_encoding": encoding,
    })
}
