//! `POST /api/fault-injection` (cargo feature `fault-injection` only): makes one actor
//! panic on demand, so end-to-end tests can prove what supervision promises
//! (docs/architecture.md, "Supervision"). Administrators only.
//!
//! Body: `{"actor": "connection"|"channel"|"queue"|"exchange", "at":
//! "handler"|"timer"|"continuation", "vhost": "/", "name": "..."}`, with `name` the
//! queue's or exchange's name, or the connection's name as `/api/connections` lists it,
//! and `"channel": N` for a channel of that connection.

use super::{no_content, user, ApiError, ApiResult, State};
use crate::broker::fault::{At, Fault};
use actix_web::{web, HttpRequest};
use serde::Deserialize;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/fault-injection", web::post().to(inject));
}

/// What to make panic, and where.
#[derive(Deserialize)]
struct Request {
    actor: String,
    at: String,
    #[serde(default = "default_vhost")]
    vhost: String,
    name: String,
    channel: Option<u16>,
}

fn default_vhost() -> String {
    "/".to_owned()
}

async fn inject(req: HttpRequest, rt: State, body: web::Json<Request>) -> ApiResult {
    let u = user(&req, &rt)?;
    if !u.is_administrator() {
        return Err(ApiError::refused("fault injection is for administrators"));
    }
    let Some(at) = At::parse(&body.at) else {
        return Err(ApiError::bad_request(
            "at must be handler, timer or continuation",
        ));
    };
    let vhost = || {
        rt.vhost(&body.vhost)
            .ok_or_else(|| ApiError::not_found(format!("vhost '{}' not found", body.vhost)))
    };
    let fault = Fault { at, channel: None };
    match body.actor.as_str() {
        "queue" => match vhost()?.queue(&body.name) {
            Some(q) => q.addr.do_send(fault),
            None => return Err(ApiError::not_found("queue not found")),
        },
        "exchange" => match vhost()?.exchange(&body.name) {
            Some(x) => x.addr.do_send(fault),
            None => return Err(ApiError::not_found("exchange not found")),
        },
        "connection" | "channel" => {
            let channel = if body.actor == "channel" {
                Some(
                    body.channel
                        .ok_or_else(|| ApiError::bad_request("channel is required"))?,
                )
            } else {
                None
            };
            let id = rt
                .conn_info
                .iter()
                .find(|c| c.value().name == body.name)
                .map(|c| *c.key())
                .ok_or_else(|| ApiError::not_found("connection not found"))?;
            match rt.fault_targets.get(&id) {
                Some(t) => t.do_send(Fault { at, channel }),
                None => return Err(ApiError::not_found("connection not found")),
            }
        }
        _ => {
            return Err(ApiError::bad_request(
                "actor must be connection, channel, queue or exchange",
            ))
        }
    }
    Ok(no_content())
}
