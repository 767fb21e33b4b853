//! `POST /api/exchanges/{vhost}/{name}/publish`: RabbitMQ's API publish, through the path
//! every publish takes (`crate::broker::publish`), so it is checked as an AMQP publish is: write
//! permission, user_id, expiration, internal exchange, full reject-publish queues, the
//! memory alarm, and short strings over 255 bytes.

use super::exchanges::real_name;
use super::fields::properties;
use super::{in_vhost, user, ApiError, ApiResult, State};
use crate::broker::publish::{self, Routed};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use broker_core::auth::{exchange_resource, Access};
use broker_core::names::check_shortstr;
use broker_core::Message;
use broker_wire::protocol::basic::AMQPProperties;
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/api/exchanges/{vhost}/{name}/publish",
        web::post().to(publish),
    );
}

/// POST …/publish: RabbitMQ's API publish, through the path AMQP publishes take
/// (`crate::broker::publish`), with RabbitMQ's answers: a refused publish is 400 carrying the
/// AMQP code and text, a full reject-publish queue 400 "rejected", and `routed` tells
/// whether any queue took the message.
async fn publish(
    req: HttpRequest,
    rt: State,
    path: web::Path<(String, String)>,
    body: web::Json<Value>,
) -> ApiResult {
    let u = user(&req, &rt)?;
    let (vhost, name) = path.into_inner();
    let name = real_name(name);
    let v = in_vhost(&rt, &u, &vhost)?;
    if !rt
        .registry
        .allows(&vhost, &u.name, Access::Write, exchange_resource(&name))
    {
        return Err(refused_publish(broker_core::AmqpError::access_refused(
            broker_core::auth::refused_text("exchange", exchange_resource(&name), &vhost, &u.name),
        )));
    }
    let (routing_key, payload, props) = publish_body(&body)?;
    rt.registry
        .topic_perms
        .check_user(&v, &u.name, true, &name, routing_key)
        .map_err(refused_publish)?;
    publish::check_client(&props, &u.name).map_err(refused_publish)?;
    if let Some(reason) = rt.alarm() {
        return Err(ApiError::alarm(reason));
    }
    let mut queues = Vec::new();
    publish::client_route(&v, &name, routing_key, Some(&props), &mut queues)
        .map_err(refused_publish)?;
    let (queues, props) = check_schema(&v, &name, routing_key, queues, props, &payload)?;
    let routed = Routed::new(queues.into(), props.headers().as_ref(), payload.len());
    let mut msg = Message {
        exchange: name.as_str().into(),
        routing_key: routing_key.into(),
        raw_properties: broker_wire::encode::properties(&props),
        properties: props.into(),
        body: Bytes::from(payload),
        persist_id: None,
        arrival_ms: crate::broker::runtime::now_ms(),
    };
    routed
        .store(rt.store.as_ref(), &mut msg)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    routed.deliver(&Arc::new(msg), |_| {});
    if routed.refused() {
        // RabbitMQ's answer when its confirm comes back as a nack
        return Err(ApiError::bad_request(
            "rejected Unable to publish message. Check queue limits.",
        ));
    }
    Ok(HttpResponse::Ok().json(json!({"routed": !routed.queues.is_empty()})))
}

/// The AMQP publish's schema check (`amqp/channel/schema.rs`): a message that fails
/// goes to the exchange's invalid exchange, marked, or is refused with 400 and the
/// error.
fn check_schema(
    v: &crate::broker::vhost::VHost,
    exchange: &str,
    routing_key: &str,
    queues: Vec<Arc<crate::broker::queue::QueueEntry>>,
    props: AMQPProperties,
    body: &[u8],
) -> Result<(Vec<Arc<crate::broker::queue::QueueEntry>>, AMQPProperties), ApiError> {
    let Some(s) = publish::exchange_schema(v, exchange) else {
        return Ok((queues, props));
    };
    let Err(error) = s.check(&props, body) else {
        return Ok((queues, props));
    };
    match publish::schema_reroute(v, &s, routing_key, &props) {
        Some(to) => Ok((to, s.mark(props, &error))),
        None => Err(ApiError::bad_request(format!(
            "rejected {}",
            s.refusal(exchange, &v.name, &error)
        ))),
    }
}

/// RabbitMQ's API answer to a publish its channel refused: 400 with "CODE NAME - text".
fn refused_publish(e: broker_core::AmqpError) -> ApiError {
    ApiError::bad_request(format!("{} {} - {}", e.code.code(), e.code.name(), e.text))
}

/// The routing key, payload and properties of a publish request.
fn publish_body(body: &Value) -> Result<(&str, Vec<u8>, AMQPProperties), ApiError> {
    let routing_key = body
        .get("routing_key")
        .and_then(Value::as_str)
        .unwrap_or("");
    check_shortstr("routing key", routing_key)?;
    let payload = body.get("payload").and_then(Value::as_str).unwrap_or("");
    let payload = match body
        .get("payload_encoding")
        .and_then(Value::as_str)
        .unwrap_or("string")
    {
        "base64" => B64
            .decode(payload)
            .map_err(|e| ApiError::bad_request(format!("payload is not base64: {e}")))?,
        "string" => payload.as_bytes().to_vec(),
        _ => return Err(ApiError::bad_request("unsupported_encoding")),
    };
    Ok((routing_key, payload, properties(body.get("properties"))?))
}
