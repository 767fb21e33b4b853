//! `/api/definitions`: export and import in RabbitMQ's definitions format (users with
//! their password hashes and limits, vhosts, permissions, topic permissions, policies and operator policies, queues,
//! exchanges, bindings), so a
//! RabbitMQ export imports here and a backup restores on a fresh data dir. Ours adds a
//! top-level `schemas` list (the schema registry, imported before policies and
//! exchanges); an export without it imports as before.

use super::admin::{apply_permission, apply_user, create_vhost};
use super::exchanges::{declare_exchange, set_binding};
use super::fields::to_json;
use super::policies::set_policy;
use super::queues::declare_queue;
use super::{admin, Actor, ApiError, ApiResult, State};
use actix_web::{web, HttpRequest, HttpResponse};
use broker_core::policy::Kind;
use broker_core::routing::Destination;
use serde_json::{json, Value};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/definitions", web::get().to(export))
        .route("/api/definitions", web::post().to(import))
        .route("/api/definitions/{vhost}", web::get().to(export_vhost))
        .route("/api/definitions/{vhost}", web::post().to(import_vhost));
}

async fn export(req: HttpRequest, rt: State) -> ApiResult {
    admin(&req, &rt)?;
    Ok(HttpResponse::Ok().json(definitions(&rt, None)))
}

/// One vhost's queues, exchanges and bindings, without `vhost` fields (RabbitMQ's
/// per-vhost export).
async fn export_vhost(req: HttpRequest, rt: State, path: web::Path<String>) -> ApiResult {
    admin(&req, &rt)?;
    let vhost = path.into_inner();
    if rt.vhost(&vhost).is_none() {
        return Err(ApiError::not_found(format!("vhost '{vhost}' not found")));
    }
    let mut d = definitions(&rt, Some(&vhost));
    // RabbitMQ keeps `vhost` on policies and parameters here
    for key in ["queues", "exchanges", "bindings"] {
        if let Some(Value::Array(a)) = d.get_mut(key) {
            for o in a.iter_mut() {
                if let Some(m) = o.as_object_mut() {
                    m.remove("vhost");
                }
            }
        }
    }
    if let Some(m) = d.as_object_mut() {
        for key in [
            "users",
            "vhosts",
            "permissions",
            "topic_permissions",
            "global_parameters",
        ] {
            m.remove(key);
        }
    }
    Ok(HttpResponse::Ok().json(d))
}

/// Imports one vhost's definitions (objects without `vhost` go into it).
async fn import_vhost(
    req: HttpRequest,
    rt: State,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> ApiResult {
    let vhost = path.into_inner();
    if rt.vhost(&vhost).is_none() {
        return Err(ApiError::not_found(format!("vhost '{vhost}' not found")));
    }
    let mut body = body.into_inner();
    for key in [
        "queues",
        "exchanges",
        "bindings",
        "policies",
        "parameters",
        "schemas",
    ] {
        if let Some(Value::Array(a)) = body.get_mut(key) {
            for o in a.iter_mut() {
                if let Some(m) = o.as_object_mut() {
                    m.insert("vhost".into(), json!(vhost));
                }
            }
        }
    }
    if let Some(m) = body.as_object_mut() {
        for key in ["users", "vhosts", "permissions", "topic_permissions"] {
            m.remove(key);
        }
    }
    import(req, rt, web::Json(body)).await
}

fn definitions(rt: &crate::broker::runtime::Runtime, only: Option<&str>) -> Value {
    let users: Vec<Value> = rt
        .registry
        .users()
        .iter()
        .map(|u| super::admin::user_json(rt, u))
        .collect();
    let vhosts: Vec<Value> = rt
        .registry
        .vhosts()
        .iter()
        .map(|v| json!({"name": v.name, "description": v.description, "limits": [], "metadata": {"description": v.description, "tags": []}}))
        .collect();
    let permissions: Vec<Value> = rt
        .registry
        .permissions()
        .iter()
        .map(|(v, u, p)| json!({"user": u, "vhost": v, "configure": p.configure, "write": p.write, "read": p.read}))
        .collect();
    let mut queues = Vec::new();
    let mut exchanges = Vec::new();
    let mut bindings = Vec::new();
    let mut names: Vec<String> = rt.vhosts.iter().map(|v| v.key().clone()).collect();
    names.sort();
    for vh in names {
        if only.is_some_and(|o| o != vh) {
            continue;
        }
        let Some(v) = rt.vhost(&vh) else { continue };
        let mut qs = v.queues();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        // as RabbitMQ: durable, non-exclusive entities only
        for q in qs
            .iter()
            .filter(|q| q.durable && q.exclusive_owner.is_none())
        {
            queues.push(json!({"name": q.name.as_ref(), "vhost": vh, "durable": true, "auto_delete": q.auto_delete, "arguments": to_json(&q.arguments)}));
        }
        let mut xs = v.exchanges();
        xs.sort_by(|a, b| a.name.cmp(&b.name));
        for x in xs
            .iter()
            .filter(|x| x.durable && !x.name.starts_with("amq."))
        {
            exchanges.push(json!({"name": x.name.as_ref(), "vhost": vh, "type": x.kind.as_str(), "durable": true, "auto_delete": x.auto_delete, "internal": x.internal, "arguments": to_json(&x.arguments)}));
        }
        for x in xs.iter().filter(|x| x.durable) {
            for b in x.bindings.load().all() {
                let (dest, kind, durable) = match &b.destination {
                    Destination::Queue(n) => (
                        n.clone(),
                        "queue",
                        v.queue(n)
                            .is_some_and(|q| q.durable && q.exclusive_owner.is_none()),
                    ),
                    Destination::Exchange(n) => (
                        n.clone(),
                        "exchange",
                        v.exchange(n).is_some_and(|e| e.durable),
                    ),
                };
                if durable {
                    bindings.push(json!({"source": x.name.as_ref(), "vhost": vh, "destination": dest.as_ref(), "destination_type": kind, "routing_key": b.routing_key.as_ref(), "arguments": to_json(&b.arguments)}));
                }
            }
        }
    }
    let (policies, parameters) = policy_definitions(rt, only);
    let topic_permissions: Vec<Value> = rt
        .registry
        .topic_perms
        .all()
        .iter()
        .map(|(v, u, p)| super::topic_perms::entry(v, u, p))
        .collect();
    json!({
        "rabbit_version": "3.10.8",
        "rabbitmq_version": "3.10.8",
        "product_name": "broker",
        "product_version": env!("CARGO_PKG_VERSION"),
        "users": users,
        "vhosts": vhosts,
        "permissions": permissions,
        "topic_permissions": topic_permissions,
        "parameters": parameters,
        "global_parameters": [],
        "policies": policies,
        "schemas": rt.schemas.list(only).iter().map(|s| s.to_json()).collect::<Vec<_>>(),
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })
}

/// Policies (RabbitMQ's `policies`) and operator policies (RabbitMQ keeps them as
/// `parameters` of component `operator_policy`).
fn policy_definitions(
    rt: &crate::broker::runtime::Runtime,
    only: Option<&str>,
) -> (Vec<Value>, Vec<Value>) {
    let policies = rt.policies.list(Kind::Policy, only);
    let operator = rt.policies.list(Kind::Operator, only);
    let mut parameters: Vec<Value> = operator
        .iter()
        .map(|p| {
            json!({"value": {"pattern": p.pattern, "definition": p.definition,
                "priority": p.priority, "apply-to": p.apply_to.as_str()},
                "vhost": p.vhost, "component": "operator_policy", "name": p.name})
        })
        .collect();
    for (vhost, name, value) in rt.shovels.list(only) {
        parameters
            .push(json!({"value": value, "vhost": vhost, "component": "shovel", "name": name}));
    }
    (policies.iter().map(|p| p.to_json()).collect(), parameters)
}

/// Imports policies and operator policies (before queues and exchanges, as RabbitMQ
/// does, so they are created under them).
async fn import_policies(
    rt: &crate::broker::runtime::Runtime,
    body: &Value,
) -> Result<(), ApiError> {
    let fail = |what: String, e: ApiError| ApiError::bad_request(format!("{what}: {e}"));
    for p in items(body, "policies") {
        let (vh, name) = (text(p, "vhost"), text(p, "name"));
        set_policy(rt, Kind::Policy, vh, name, p)
            .await
            .map_err(|e| fail(format!("policy '{name}' in '{vh}'"), e))?;
    }
    for p in items(body, "parameters").filter(|p| text(p, "component") == "operator_policy") {
        let (vh, name) = (text(p, "vhost"), text(p, "name"));
        let value = p.get("value").cloned().unwrap_or(Value::Null);
        set_policy(rt, Kind::Operator, vh, name, &value)
            .await
            .map_err(|e| fail(format!("operator policy '{name}' in '{vh}'"), e))?;
    }
    Ok(())
}

fn items<'a>(body: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    body.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter())
        .into_iter()
        .flatten()
}

/// A user's `limits` object, as RabbitMQ exports it (`{"max-connections": 10}`); empty
/// or null lifts them, absent (older exports) leaves them as they are.
async fn import_user_limits(
    rt: &crate::broker::runtime::Runtime,
    name: &str,
    u: &Value,
) -> Result<(), ApiError> {
    let limits = match u.get("limits") {
        None => return Ok(()),
        Some(Value::Null) => Default::default(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| ApiError::bad_request(format!("invalid limits: {e}")))?,
    };
    rt.registry
        .replace_user_limits(name, limits)
        .await
        .map_err(|e| ApiError::internal(format!("cannot store the change: {e}")))
}

fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// Imports definitions: vhosts, users, permissions, exchanges, queues, bindings, in that
/// order. Existing objects are updated; the first failure stops the import with 400.
async fn import(req: HttpRequest, rt: State, body: web::Json<Value>) -> ApiResult {
    let who = admin(&req, &rt)?;
    let body = body.into_inner();
    let fail = |what: String, e: ApiError| ApiError::bad_request(format!("{what}: {e}"));
    for v in items(&body, "vhosts") {
        let name = text(v, "name");
        create_vhost(&rt, name, text(v, "description").to_owned())
            .await
            .map_err(|e| fail(format!("vhost '{name}'"), e))?;
    }
    for u in items(&body, "users") {
        let name = text(u, "name");
        apply_user(&rt, name, u)
            .await
            .map_err(|e| fail(format!("user '{name}'"), e))?;
        import_user_limits(&rt, name, u)
            .await
            .map_err(|e| fail(format!("user '{name}'"), e))?;
    }
    for p in items(&body, "permissions") {
        let (vh, user) = (text(p, "vhost"), text(p, "user"));
        apply_permission(&rt, vh, user, p)
            .await
            .map_err(|e| fail(format!("permission of '{user}' in '{vh}'"), e))?;
    }
    for p in items(&body, "topic_permissions") {
        let (vh, user) = (text(p, "vhost"), text(p, "user"));
        super::topic_perms::apply_topic_permission(&rt, vh, user, p)
            .await
            .map_err(|e| fail(format!("topic permission of '{user}' in '{vh}'"), e))?;
    }
    // schemas before the policies and exchanges that name them
    for s in items(&body, "schemas") {
        let (vh, name) = (text(s, "vhost"), text(s, "name"));
        super::schemas::set_schema(&rt, vh, name, s)
            .await
            .map_err(|e| fail(format!("schema '{name}' in '{vh}'"), e))?;
    }
    import_policies(&rt, &body).await?;
    // exchanges, queues and bindings are created by the broker itself (as RabbitMQ's
    // import does), whatever the importing administrator's vhost permissions
    let me = Actor::Broker;
    for x in items(&body, "exchanges") {
        let (vh, name) = (text(x, "vhost"), text(x, "name"));
        declare_exchange(&rt, me, vh, name, x)
            .await
            .map_err(|e| fail(format!("exchange '{name}' in '{vh}'"), e))?;
    }
    for q in items(&body, "queues") {
        let (vh, name) = (text(q, "vhost"), text(q, "name"));
        declare_queue(&rt, me, vh, name, q)
            .await
            .map_err(|e| fail(format!("queue '{name}' in '{vh}'"), e))?;
    }
    for b in items(&body, "bindings") {
        let (vh, src, dst) = (text(b, "vhost"), text(b, "source"), text(b, "destination"));
        let kind = if text(b, "destination_type") == "exchange" {
            "e"
        } else {
            "q"
        };
        let args = b.get("arguments").cloned().unwrap_or(json!({}));
        set_binding(
            &rt,
            me,
            vh,
            src,
            kind,
            dst,
            text(b, "routing_key"),
            &args,
            true,
        )
        .await
        .map_err(|e| fail(format!("binding {src} -> {dst} in '{vh}'"), e))?;
    }
    // shovels last, so the queues and exchanges they use exist when they start
    for p in items(&body, "parameters").filter(|p| text(p, "component") == "shovel") {
        let (vh, name) = (text(p, "vhost"), text(p, "name"));
        super::shovels::set_shovel(&rt, &who, vh, name, p)
            .await
            .map_err(|e| fail(format!("shovel '{name}' in '{vh}'"), e))?;
    }
    Ok(super::no_content())
}
