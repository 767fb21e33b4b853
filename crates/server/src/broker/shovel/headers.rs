//! What a shovel changes on the messages it forwards: `dest-publish-properties` set over
//! the message's own properties, RabbitMQ's `x-shovelled` header (a table per shovel
//! the message passed, the newest first) with `dest-add-forward-headers`, and
//! `x-shovelled-timestamp` (seconds) with `dest-add-timestamp-header`. Everything else
//! is forwarded unchanged.

use super::params::{Dest, Source};
use super::run::RunCtx;
use super::uri::masked;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use serde_json::Value;

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// RabbitMQ's `x-shovelled` entry for this shovel.
fn shovelled(ctx: &RunCtx) -> FieldTable {
    let def = &ctx.def;
    let mut t = FieldTable::default();
    let mut put = |k: &str, v: &str| {
        t.insert(ShortString::from(k), long(v));
    };
    put("shovelled-by", &ctx.node);
    put("shovel-type", "dynamic");
    put("shovel-name", &ctx.name);
    put("shovel-vhost", &ctx.vhost);
    put(
        "src-uri",
        &def.src_uris.first().map(|u| masked(u)).unwrap_or_default(),
    );
    match &def.src {
        Source::Queue(q) => put("src-queue", q),
        Source::Exchange { name, key } => {
            put("src-exchange", name);
            put("src-exchange-key", key);
        }
    }
    put(
        "dest-uri",
        &def.dest_uris.first().map(|u| masked(u)).unwrap_or_default(),
    );
    match &def.dest {
        Dest::Queue(q) => put("dest-queue", q),
        Dest::Exchange { name, key } => {
            put("dest-exchange", name);
            if let Some(k) = key {
                put("dest-exchange-key", k);
            }
        }
        Dest::Same => {}
    }
    t
}

fn short(v: &Value) -> Option<ShortString> {
    v.as_str().map(ShortString::from)
}

/// Sets one of `dest-publish-properties` (checked by `params`).
fn set_property(p: BasicProperties, key: &str, v: &Value) -> BasicProperties {
    let byte = || v.as_u64().and_then(|n| u8::try_from(n).ok());
    match key {
        "delivery_mode" => match byte() {
            Some(b) => p.with_delivery_mode(b),
            None => p,
        },
        "priority" => match byte() {
            Some(b) => p.with_priority(b),
            None => p,
        },
        "timestamp" => match v.as_u64() {
            Some(t) => p.with_timestamp(t),
            None => p,
        },
        _ => {
            let Some(s) = short(v) else {
                return p;
            };
            match key {
                "content_type" => p.with_content_type(s),
                "content_encoding" => p.with_content_encoding(s),
                "correlation_id" => p.with_correlation_id(s),
                "reply_to" => p.with_reply_to(s),
                "expiration" => p.with_expiration(s),
                "message_id" => p.with_message_id(s),
                "type" => p.with_type(s),
                "user_id" => p.with_user_id(s),
                "app_id" => p.with_app_id(s),
                "cluster_id" => p.with_cluster_id(s),
                _ => p,
            }
        }
    }
}

/// The properties a forwarded message is published with.
pub fn outgoing(ctx: &RunCtx, mut p: BasicProperties) -> BasicProperties {
    let def = &ctx.def;
    let mut headers = p.headers().clone();
    for (k, v) in &def.publish_properties {
        if k == "headers" {
            if let Value::Object(m) = v {
                let h = headers.get_or_insert_with(FieldTable::default);
                for (hk, hv) in super::run::to_table(m).inner() {
                    h.insert(hk.clone(), hv.clone());
                }
            }
        } else {
            p = set_property(p, k, v);
        }
    }
    if def.add_forward_headers {
        let h = headers.get_or_insert_with(FieldTable::default);
        let mut list = vec![AMQPValue::FieldTable(shovelled(ctx))];
        if let Some(AMQPValue::FieldArray(old)) = h.inner().get("x-shovelled") {
            list.extend(old.as_slice().iter().cloned());
        }
        h.insert(
            "x-shovelled".into(),
            AMQPValue::FieldArray(FieldArray::from(list)),
        );
    }
    if def.add_timestamp_header {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        headers.get_or_insert_with(FieldTable::default).insert(
            "x-shovelled-timestamp".into(),
            AMQPValue::LongLongInt(secs as i64),
        );
    }
    match headers {
        Some(h) => p.with_headers(h),
        None => p,
    }
}
