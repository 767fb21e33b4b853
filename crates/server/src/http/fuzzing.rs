//! The management API's request bodies, parsed and validated as the handlers do it but
//! without the HTTP server or a runtime: the entry point of the `http_bodies` fuzz target
//! (crates/fuzz-harness, docs/fuzzing.md). It lives here so that it calls the handlers' own
//! private parsers and converters rather than copies of them.
//!
//! What is checked beyond "no panic": field tables built from JSON survive the store's
//! encoding (a durable queue's or exchange's arguments are written with amq-protocol's
//! generator and read back at start-up), and properties built from JSON for a publish
//! encode into a content header that the broker's own decoder accepts with the same
//! properties (consumers receive those bytes verbatim).

use super::admin::{parse_tags, VhostBody};
use super::exchanges::properties_key;
use super::fields::{properties, table};
use super::queues::number;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use broker_core::args::{check_exchange_args, QueueArgs};
use broker_core::auth::Permission;
use broker_core::routing::ExchangeKind;
use broker_wire::types::generation::gen_field_table;
use broker_wire::types::parsing::parse_field_table;
use broker_wire::types::FieldTable;
use broker_wire::{Frame, FrameDecoder};
use serde_json::{json, Value};

/// Runs one body: the first byte picks the endpoint, the rest is the request body.
pub fn body(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    if sel % 10 == 0 {
        // PUT /api/vhosts/{name} reads an optional body (json_body)
        if let Ok(Some(v)) = super::json_body::<VhostBody>(body) {
            let _ = parse_tags(v.tags.as_ref());
        }
        return;
    }
    // the other handlers take web::Json<Value> or json_body::<Value>: serde_json's parse
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    match sel % 10 {
        1 => user(&v),
        2 => permission(&v),
        3 => {
            // PUT /api/vhost-limits/{vhost}/{name}
            let _ = v.get("value").and_then(Value::as_i64).map(u64::try_from);
        }
        4 => exchange(&v),
        5 => queue(&v),
        6 => binding(&v),
        7 => publish(&v),
        8 => {
            // POST /api/queues/{vhost}/{name}/get
            let _ = (number(v.get("count")), number(v.get("truncate")));
            let _ = v.get("ackmode").and_then(Value::as_str);
        }
        _ => definitions(&v),
    }
}

/// The parts of `apply_user` that read the body (the rest writes the registry).
fn user(v: &Value) {
    let _ = parse_tags(v.get("tags"));
    if let Some(h) = v.get("password_hash").and_then(Value::as_str) {
        let _ = B64.decode(h);
    }
    if let Some(p) = v.get("password").and_then(Value::as_str) {
        let _ = broker_core::auth::hash_password(p, [0; 4]);
    }
}

/// `apply_permission`'s body: three regular expressions.
fn permission(v: &Value) {
    let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
    let _ = Permission::new(field("configure"), field("write"), field("read"));
}

/// A field table as the store writes and reads it back: must be unchanged.
fn store_round_trip(t: &FieldTable) {
    let Ok((bytes, _)) = cookie_factory::gen(gen_field_table(t), Vec::new()) else {
        panic!("cannot encode {t:?}");
    };
    match parse_field_table(&bytes[..]) {
        Ok((rest, back)) => {
            assert!(rest.is_empty(), "bytes left after a stored table");
            assert_eq!(
                format!("{t:?}"),
                format!("{back:?}"),
                "stored table changed"
            );
        }
        Err(e) => panic!("stored table {t:?} does not parse back: {e:?}"),
    }
}

/// `declare_exchange`'s body: type, flags, arguments.
fn exchange(v: &Value) {
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("direct");
    let _ = ExchangeKind::parse(kind);
    // refused (400) when a name is over 255 bytes: nothing more to check
    let Ok(args) = table(v.get("arguments")) else {
        return;
    };
    let _ = check_exchange_args(&args, "x", "/");
    store_round_trip(&args);
}

/// `declare_queue`'s body: flags and arguments, validated as queue.declare does.
fn queue(v: &Value) {
    let Ok(args) = table(v.get("arguments")) else {
        return;
    };
    let _ = QueueArgs::parse(&args, "q", "/");
    store_round_trip(&args);
}

/// `bind`'s body: routing key and arguments, and the properties_key of the Location.
fn binding(v: &Value) {
    let rk = v.get("routing_key").and_then(Value::as_str).unwrap_or("");
    let args = v.get("arguments").cloned().unwrap_or(json!({}));
    let _ = properties_key(rk, &args);
    if let Ok(t) = table(Some(&args)) {
        store_round_trip(&t);
    }
}

/// `publish`'s body: payload and properties; the properties must reach consumers intact.
fn publish(v: &Value) {
    let payload = v.get("payload").and_then(Value::as_str).unwrap_or("");
    if v.get("payload_encoding").and_then(Value::as_str) == Some("base64") {
        let _ = B64.decode(payload);
    }
    let Ok(props) = properties(v.get("properties")) else {
        return;
    };
    let raw = broker_wire::encode::properties(&props);
    let mut frame = vec![2u8, 0, 1];
    frame.extend_from_slice(&((12 + raw.len()) as u32).to_be_bytes());
    frame.extend_from_slice(&[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    frame.extend_from_slice(&raw);
    frame.push(0xCE);
    let mut buf = bytes::BytesMut::from(&frame[..]);
    match FrameDecoder::new(u32::MAX).decode(&mut buf) {
        Ok(Some(Frame::Header { properties: p, .. })) => {
            assert_eq!(
                format!("{:?}", *p),
                format!("{props:?}"),
                "published properties changed on the wire"
            )
        }
        other => panic!("properties {props:?} from the API do not decode: {other:?}"),
    }
}

/// POST /api/definitions: every item through its handler's parsing, in import order.
fn definitions(v: &Value) {
    let items = |k: &str| {
        v.get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter())
            .into_iter()
            .flatten()
    };
    for u in items("users") {
        user(u);
    }
    for p in items("permissions") {
        permission(p);
    }
    for x in items("exchanges") {
        exchange(x);
    }
    for q in items("queues") {
        queue(q);
    }
    for b in items("bindings") {
        binding(b);
    }
}
