//! `/api/exchanges` (list, show, declare, delete) and `/api/bindings`; publish is in
//! `publish.rs`.

use super::fields::{table, to_json};
use super::queues::permitted;
use super::{created, in_vhost, no_content, user, Actor, ApiError, ApiResult, State};
use crate::broker::runtime::Runtime;
use crate::broker::vhost::ExchangeSpec;
use actix_web::{web, HttpRequest, HttpResponse};
use broker_core::auth::{exchange_resource, Access, User};
use broker_core::deadletter::DEAD_LETTER_EXCHANGE;
use broker_core::names::check_shortstr;
use broker_core::routing::{Destination, ExchangeKind};
use serde_json::{json, Value};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/exchanges", web::get().to(list_all))
        .route("/api/exchanges/{vhost}", web::get().to(list_vhost))
        .route("/api/exchanges/{vhost}/{name}", web::get().to(show))
        .route("/api/exchanges/{vhost}/{name}", web::put().to(declare))
        .route("/api/exchanges/{vhost}/{name}", web::delete().to(delete))
        .route("/api/bindings", web::get().to(bindings_all))
        .route("/api/bindings/{vhost}", web::get().to(bindings_vhost))
        .route(
            "/api/bindings/{vhost}/e/{src}/{kind}/{dst}",
            web::get().to(bindings_between),
        )
        .route(
            "/api/bindings/{vhost}/e/{src}/{kind}/{dst}",
            web::post().to(bind),
        )
        .route(
            "/api/bindings/{vhost}/e/{src}/{kind}/{dst}/{props}",
            web::get().to(binding_one),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/source",
            web::get().to(exchange_source_bindings),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/destination",
            web::get().to(exchange_destination_bindings),
        )
        .route(
            "/api/bindings/{vhost}/e/{src}/{kind}/{dst}/{props}",
            web::delete().to(unbind),
        )
        .route(
            "/api/queues/{vhost}/{name}/bindings",
            web::get().to(queue_bindings),
        );
}

fn exchange_json(
    vhost: &str,
    name: &str,
    kind: &str,
    durable: bool,
    auto_delete: bool,
    internal: bool,
    args: Value,
) -> Value {
    json!({"name": name, "vhost": vhost, "type": kind, "durable": durable,
           "auto_delete": auto_delete, "internal": internal, "arguments": args,
           "user_who_performed_action": "rmq-internal"})
}

fn list(rt: &Runtime, u: &User, only: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    let mut vhosts: Vec<String> = rt.vhosts.iter().map(|v| v.key().clone()).collect();
    vhosts.sort();
    for vh in vhosts {
        if only.is_some_and(|o| o != vh) || !super::sees(rt, u, &vh) {
            continue;
        }
        let Some(v) = rt.vhost(&vh) else { continue };
        // the default exchange is listed first, as RabbitMQ does
        out.push(exchange_json(
            &vh,
            "",
            "direct",
            true,
            false,
            false,
            json!({}),
        ));
        let mut xs = v.exchanges();
        xs.sort_by(|a, b| a.name.cmp(&b.name));
        for x in xs {
            let j = exchange_json(
                &vh,
                &x.name,
                x.kind.as_str(),
                x.durable,
                x.auto_delete,
                x.internal,
                to_json(&x.arguments),
            );
            out.push(with_schema(
                &x,
                with_dedup(&x, with_policy(rt, &vh, &x.name, j)),
            ));
        }
    }
    out
}

async fn list_all(req: HttpRequest, rt: State) -> ApiResult {
    let u = user(&req, &rt)?;
    let query = super::paging::ListQuery::parse(&req)?;
    Ok(HttpResponse::Ok().json(query.answer(list(&rt, &u, None))?))
}

async fn list_vhost(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    let u = user(&req, &rt)?;
    let vhost = path.into_inner();
    in_vhost(&rt, &u, &vhost)?;
    let query = super::paging::ListQuery::parse(&req)?;
    Ok(HttpResponse::Ok().json(query.answer(list(&rt, &u, Some(&vhost)))?))
}

/// The API names the default exchange `amq.default`.
pub(super) fn real_name(name: String) -> String {
    if name == "amq.default" {
        String::new()
    } else {
        name
    }
}

async fn show(req: HttpRequest, rt: State, path: web::Path<(String, String)>) -> ApiResult {
    let u = user(&req, &rt)?;
    let (vhost, name) = path.into_inner();
    let name = real_name(name);
    let v = in_vhost(&rt, &u, &vhost)?;
    if name.is_empty() {
        return Ok(HttpResponse::Ok().json(exchange_json(
            &vhost,
            "",
            "direct",
            true,
            false,
            false,
            json!({}),
        )));
    }
    let x = v
        .exchange(&name)
        .ok_or_else(|| ApiError::not_found(format!("no exchange '{name}' in vhost '{vhost}'")))?;
    let j = exchange_json(
        &vhost,
        &x.name,
        x.kind.as_str(),
        x.durable,
        x.auto_delete,
        x.internal,
        to_json(&x.arguments),
    );
    Ok(HttpResponse::Ok().json(with_schema(
        &x,
        with_dedup(&x, with_policy(&rt, &vhost, &x.name, j)),
    )))
}

/// Adds LavinMQ's `message_stats.dedup` (duplicates not routed) to a deduplicating
/// exchange's object, and to a delayed exchange's its waiting messages
/// (`messages_delayed`) and when the next is due (`next_due`, ms since the epoch, or
/// null).
fn with_dedup(x: &crate::broker::exchange::ExchangeEntry, mut j: Value) -> Value {
    if let (Some(d), Some(m)) = (&x.dedup, j.as_object_mut()) {
        m.insert("message_stats".into(), json!({"dedup": d.dropped()}));
    }
    if let (Some((n, due)), Some(m)) = (x.delayed_stats(), j.as_object_mut()) {
        m.insert("messages_delayed".into(), json!(n));
        m.insert("next_due".into(), json!(due));
    }
    j
}

/// Adds the schema an exchange checks publishes with (`schema`, and `schema_status`:
/// `ok`, or `missing` while the name is not in the registry) and
/// `message_stats.schema_invalid` (messages that failed it).
fn with_schema(x: &crate::broker::exchange::ExchangeEntry, mut j: Value) -> Value {
    let attached = x.schema.load_full();
    let invalid = x.schema_invalid.load(std::sync::atomic::Ordering::Relaxed);
    let Some(m) = j.as_object_mut() else {
        return j;
    };
    if let Some(a) = &attached {
        m.insert("schema".into(), json!(a.name));
        let status = if a.compiled.is_some() {
            "ok"
        } else {
            "missing"
        };
        m.insert("schema_status".into(), json!(status));
    }
    if attached.is_some() || invalid > 0 {
        let stats = m.entry("message_stats").or_insert_with(|| json!({}));
        if let Some(stats) = stats.as_object_mut() {
            stats.insert("schema_invalid".into(), json!(invalid));
        }
    }
    j
}

/// Adds `policy` to an exchange's object when one applies, as RabbitMQ shows it.
fn with_policy(rt: &Runtime, vhost: &str, name: &str, mut j: Value) -> Value {
    let r = rt
        .policies
        .resolve(vhost, name, broker_core::policy::Target::Exchange);
    if let (Some(p), Some(m)) = (r.policy, j.as_object_mut()) {
        m.insert("policy".into(), json!(p));
    }
    j
}

/// Declares an exchange from a RabbitMQ exchange object. Returns whether it was created.
pub(super) async fn declare_exchange(
    rt: &Runtime,
    who: Actor<'_>,
    vhost: &str,
    name: &str,
    body: &Value,
) -> Result<bool, ApiError> {
    let v = in_vhost(rt, who, vhost)?;
    permitted(rt, who, vhost, Access::Configure, "exchange", name)?;
    check_shortstr("exchange name", name)?;
    let arguments = table(body.get("arguments"))?;
    let kind_name = body.get("type").and_then(Value::as_str).unwrap_or("direct");
    let kind = ExchangeKind::parse(kind_name)
        .ok_or_else(|| ApiError::bad_request(format!("unknown exchange type '{kind_name}'")))?;
    broker_core::declare::check_exchange_declare_name(name, v.exchange(name).is_some())
        .map_err(|_| ApiError::refused("Access refused."))?;
    let existed = v.exchange(name).is_some();
    v.declare_exchange(
        name,
        ExchangeSpec {
            kind,
            durable: body
                .get("durable")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            auto_delete: body
                .get("auto_delete")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            internal: body
                .get("internal")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            arguments,
        },
    )
    .await?;
    Ok(!existed)
}

async fn declare(
    req: HttpRequest,
    rt: State,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> ApiResult {
    let u = user(&req, &rt)?;
    let (vhost, name) = path.into_inner();
    let body: Value = super::json_body(&body)?.unwrap_or(Value::Null);
    let new = declare_exchange(&rt, Actor::User(&u), &vhost, &name, &body).await?;
    Ok(if new { created() } else { no_content() })
}

#[derive(serde::Deserialize)]
struct DeleteParams {
    #[serde(rename = "if-unused", default)]
    if_unused: Option<String>,
}

async fn delete(
    req: HttpRequest,
    rt: State,
    path: web::Path<(String, String)>,
    params: web::Query<DeleteParams>,
) -> ApiResult {
    let u = user(&req, &rt)?;
    let (vhost, name) = path.into_inner();
    let v = in_vhost(&rt, &u, &vhost)?;
    if v.exchange(&name).is_none() {
        return Err(ApiError::not_found(format!(
            "no exchange '{name}' in vhost '{vhost}'"
        )));
    }
    permitted(&rt, &u, &vhost, Access::Configure, "exchange", &name)?;
    broker_core::declare::check_exchange_delete_name(&name, &vhost)
        .map_err(|_| ApiError::refused("Access refused."))?;
    v.delete_exchange(&name, params.if_unused.as_deref() == Some("true"))
        .await?;
    Ok(no_content())
}

/// Every binding of a vhost, the default exchange's implicit ones first.
fn vhost_bindings(rt: &Runtime, vhost: &str) -> Vec<Value> {
    let Some(v) = rt.vhost(vhost) else {
        return vec![];
    };
    let mut out = Vec::new();
    let mut queues = v.queues();
    queues.sort_by(|a, b| a.name.cmp(&b.name));
    for q in queues {
        out.push(binding_json(
            vhost,
            "",
            &Destination::Queue(q.name.clone()),
            &q.name,
            &json!({}),
        ));
    }
    let mut xs = v.exchanges();
    xs.sort_by(|a, b| a.name.cmp(&b.name));
    for x in xs {
        for b in x.bindings.load().all() {
            out.push(binding_json(
                vhost,
                &x.name,
                &b.destination,
                &b.routing_key,
                &to_json(&b.arguments),
            ));
        }
    }
    out
}

/// RabbitMQ's properties_key: the routing key (escaped), plus "~" and a hash when the
/// binding has arguments.
pub(super) fn properties_key(routing_key: &str, args: &Value) -> String {
    let rk = if routing_key.is_empty() {
        "~".to_owned()
    } else {
        percent_encode(routing_key, true)
    };
    match args.as_object() {
        Some(m) if !m.is_empty() => {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            args.to_string().hash(&mut h);
            format!("{rk}~{:x}", h.finish() & 0xffff_ffff)
        }
        _ => rk,
    }
}

/// Percent-encodes `s`: as a URL path segment (RFC 3986: `~` stays), or as RabbitMQ
/// form-encodes a routing key in a properties_key (`~` escaped, space as `+`).
fn percent_encode(s: &str, form: bool) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            b'~' if !form => "~".to_owned(),
            b' ' if form => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A URL path segment.
fn url_quote(s: &str) -> String {
    percent_encode(s, false)
}

fn binding_json(vhost: &str, source: &str, dest: &Destination, rk: &str, args: &Value) -> Value {
    let (dname, dkind) = match dest {
        Destination::Queue(q) => (q.as_ref(), "queue"),
        Destination::Exchange(x) => (x.as_ref(), "exchange"),
    };
    json!({"source": source, "vhost": vhost, "destination": dname, "destination_type": dkind,
           "routing_key": rk, "arguments": args, "properties_key": properties_key(rk, args)})
}

async fn bindings_all(req: HttpRequest, rt: State) -> ApiResult {
    let u = user(&req, &rt)?;
    let mut vhosts: Vec<String> = rt.vhosts.iter().map(|v| v.key().clone()).collect();
    vhosts.sort();
    let mut out = Vec::new();
    for vh in vhosts.iter().filter(|vh| super::sees(&rt, &u, vh)) {
        out.extend(vhost_bindings(&rt, vh));
    }
    Ok(HttpResponse::Ok().json(out))
}

async fn bindings_vhost(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    let u = user(&req, &rt)?;
    let vhost = path.into_inner();
    in_vhost(&rt, &u, &vhost)?;
    Ok(HttpResponse::Ok().json(vhost_bindings(&rt, &vhost)))
}

fn dest_kind(kind: &str) -> Result<&'static str, ApiError> {
    match kind {
        "q" => Ok("queue"),
        "e" => Ok("exchange"),
        other => Err(ApiError::not_found(format!(
            "unknown destination kind '{other}'"
        ))),
    }
}

async fn bindings_between(
    req: HttpRequest,
    rt: State,
    path: web::Path<(String, String, String, String)>,
) -> ApiResult {
    let u = user(&req, &rt)?;
    let (vhost, src, kind, dst) = path.into_inner();
    in_vhost(&rt, &u, &vhost)?;
    let kind = dest_kind(&kind)?;
    let list: Vec<Value> = vhost_bindings(&rt, &vhost)
        .into_iter()
        .filter(|b| b["source"] == src && b["destination"] == dst && b["destination_type"] == kind)
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

async fn binding_one(
    req: HttpRequest,
    rt: State,
    path: web::Path<(String, String, String, String, String)>,
) -> ApiResult {
    let u = user(&req, &rt)?;
    let (vhost, src, kind, dst, props) = path.into_inner();
    in_vhost(&rt, &u, &vhost)?;
    let kind = dest_kind(&kind)?;
    vhost_bindings(&rt, &vhost)
        .into_iter()
        .find(|b| {
            b["source"] == src.as_str()
                && b["destination"] == dst.as_str()
                && b["destination_type"] == kind
                && b["properties_key"] == props.as_str()
        })
        .map(|b| HttpResponse::Ok().json(b))
        .ok_or_else(|| ApiError::not_found("binding not found"))
}

async fn exchange_source_bindings(
    req: HttpRequest,
    rt: State,
    path: web::Path<(String, String)>,
) -> ApiResult {
    exchange_bindings(req, rt, path, "source").await
}

async fn exchange_destination_bindings(
    req: HttpRequest,
    rt: State,
    path: web::Path<(String, String)>,
) -> ApiResult {
    exchange_bindings(req, rt, path, "destination").await
}

async fn exchange_bindings(
    req: HttpRequest,
    rt: State,
    path: web::Path<(String, String)>,
    side: &str,
) -> ApiResult {
    let u = user(&req, &rt)?;
    let (vhost, name) = path.into_inner();
    let name = real_name(name);
    let v = in_vhost(&rt, &u, &vhost)?;
    if !name.is_empty() && v.exchange(&name).is_none() {
        return Err(ApiError::not_found(format!(
            "no exchange '{name}' in vhost '{vhost}'"
        )));
    }
    let list: Vec<Value> = vhost_bindings(&rt, &vhost)
        .into_iter()
        .filter(|b| {
            if side == "source" {
                b["source"] == name.as_str()
            } else {
                b["destination"] == name.as_str() && b["destination_type"] == "exchange"
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

async fn queue_bindings(
    req: HttpRequest,
    rt: State,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let u = user(&req, &rt)?;
    let (vhost, q) = path.into_inner();
    let v = in_vhost(&rt, &u, &vhost)?;
    if v.queue(&q).is_none() {
        return Err(ApiError::not_found(format!(
            "no queue '{q}' in vhost '{vhost}'"
        )));
    }
    let list: Vec<Value> = vhost_bindings(&rt, &vhost)
        .into_iter()
        .filter(|b| b["destination"] == q && b["destination_type"] == "queue")
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

/// Binds or unbinds `src` to a queue or exchange, with permission checks as over AMQP.
pub(super) async fn set_binding(
    rt: &Runtime,
    who: Actor<'_>,
    vhost: &str,
    src: &str,
    kind: &str,
    dst: &str,
    rk: &str,
    args: &Value,
    bind: bool,
) -> Result<(), ApiError> {
    let v = in_vhost(rt, who, vhost)?;
    let kind = dest_kind(kind)?;
    permitted(rt, who, vhost, Access::Write, kind, dst)?;
    permitted(
        rt,
        who,
        vhost,
        Access::Read,
        "exchange",
        exchange_resource(src),
    )?;
    let dest = if kind == "queue" {
        if v.queue(dst).is_none() {
            return Err(ApiError::not_found(format!(
                "no queue '{dst}' in vhost '{vhost}'"
            )));
        }
        Destination::Queue(dst.into())
    } else {
        Destination::Exchange(dst.into())
    };
    check_shortstr("routing key", rk)?;
    if let Actor::User(u) = who {
        rt.registry
            .topic_perms
            .check_user(&v, &u.name, false, src, rk)
            // 401 not_authorised as RabbitMQ's API answers it, with our text
            .map_err(|e| ApiError::refused(e.text))?;
    }
    if let (Actor::User(u), true) = (who, bind && src == DEAD_LETTER_EXCHANGE) {
        rt.registry.check_dead_letter_binding(vhost, &u.name, rk)?;
    }
    v.bind(src, dest, rk, table(Some(args))?, bind).await?;
    Ok(())
}

async fn bind(
    req: HttpRequest,
    rt: State,
    path: web::Path<(String, String, String, String)>,
    body: web::Bytes,
) -> ApiResult {
    let u = user(&req, &rt)?;
    let (vhost, src, kind, dst) = path.into_inner();
    let body: Value = super::json_body(&body)?.unwrap_or(Value::Null);
    let rk = body
        .get("routing_key")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let args = body.get("arguments").cloned().unwrap_or(json!({}));
    set_binding(
        &rt,
        Actor::User(&u),
        &vhost,
        &src,
        &kind,
        &dst,
        &rk,
        &args,
        true,
    )
    .await?;
    // relative to the request path: .../e/{src}/q/{dst} → .../e/{src}/q/{dst}/{key}
    let location = format!(
        "{}/{}",
        url_quote(&dst),
        url_quote(&properties_key(&rk, &args))
    );
    Ok(HttpResponse::Created()
        .insert_header(("Location", location))
        .finish())
}

async fn unbind(
    req: HttpRequest,
    rt: State,
    path: web::Path<(String, String, String, String, String)>,
) -> ApiResult {
    let u = user(&req, &rt)?;
    let (vhost, src, kind, dst, props) = path.into_inner();
    let dkind = dest_kind(&kind)?;
    let found = vhost_bindings(&rt, &vhost).into_iter().find(|b| {
        b["source"] == src.as_str()
            && b["destination"] == dst.as_str()
            && b["destination_type"] == dkind
            && b["properties_key"] == props.as_str()
    });
    let Some(b) = found else {
        return Err(ApiError::not_found("binding not found"));
    };
    let rk = b["routing_key"].as_str().unwrap_or("").to_owned();
    set_binding(
        &rt,
        Actor::User(&u),
        &vhost,
        &src,
        &kind,
        &dst,
        &rk,
        &b["arguments"],
        false,
    )
    .await?;
    Ok(no_content())
}
