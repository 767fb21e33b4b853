//! JSON ⇄ AMQP field tables and message properties, as RabbitMQ's API converts them.
//! Strings that become AMQP short strings are checked here (over 255 bytes: 400).

use super::ApiError;
use broker_core::names::check_shortstr;
use broker_wire::protocol::basic::AMQPProperties;
use broker_wire::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{json, Map, Value};

/// A JSON object as a field table (integers as long, floats as double, strings as
/// longstr, objects as tables, arrays as arrays). A key over 255 bytes cannot be a field
/// name (a short string): 400, never a panic.
pub fn table(v: Option<&Value>) -> Result<FieldTable, ApiError> {
    let mut t = FieldTable::default();
    if let Some(Value::Object(m)) = v {
        for (k, v) in m {
            t.insert(short("field name", k)?, value(v)?);
        }
    }
    Ok(t)
}

/// `s` as a short string, or 400 naming `what` when it is over 255 bytes.
pub fn short(what: &str, s: &str) -> Result<ShortString, ApiError> {
    check_shortstr(what, s)?;
    Ok(broker_core::names::shortstr(what, s)?)
}

fn value(v: &Value) -> Result<AMQPValue, ApiError> {
    Ok(match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        Value::Array(a) => AMQPValue::FieldArray(FieldArray::from(
            a.iter().map(value).collect::<Result<Vec<_>, _>>()?,
        )),
        Value::Object(_) => AMQPValue::FieldTable(table(Some(v))?),
    })
}

/// A field table as JSON.
pub fn to_json(t: &FieldTable) -> Value {
    let mut m = Map::new();
    for (k, v) in t.inner() {
        m.insert(k.to_string(), amqp_json(v));
    }
    Value::Object(m)
}

fn amqp_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::Float(f) => json!(f),
        AMQPValue::Double(f) => json!(f),
        AMQPValue::DecimalValue(d) => json!(format!("{d:?}")),
        AMQPValue::LongString(_) | AMQPValue::ShortString(_) => {
            json!(broker_core::args::str_value(v).unwrap_or_default())
        }
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(amqp_json).collect()),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldTable(t) => to_json(t),
        AMQPValue::ByteArray(b) => json!(String::from_utf8_lossy(b.as_slice())),
        AMQPValue::Void => Value::Null,
        other => match broker_core::args::int_value(other) {
            Some(i) => json!(i as i64),
            None => Value::Null,
        },
    }
}

/// Message properties as RabbitMQ's API shows them.
pub fn properties_json(p: &AMQPProperties) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    if let Some(v) = p.content_type() {
        put("content_type", json!(v.as_str()));
    }
    if let Some(v) = p.content_encoding() {
        put("content_encoding", json!(v.as_str()));
    }
    if let Some(v) = p.headers() {
        put("headers", to_json(v));
    }
    if let Some(v) = p.delivery_mode() {
        put("delivery_mode", json!(v));
    }
    if let Some(v) = p.priority() {
        put("priority", json!(v));
    }
    if let Some(v) = p.correlation_id() {
        put("correlation_id", json!(v.as_str()));
    }
    if let Some(v) = p.reply_to() {
        put("reply_to", json!(v.as_str()));
    }
    if let Some(v) = p.expiration() {
        put("expiration", json!(v.as_str()));
    }
    if let Some(v) = p.message_id() {
        put("message_id", json!(v.as_str()));
    }
    if let Some(v) = p.timestamp() {
        put("timestamp", json!(v));
    }
    if let Some(v) = p.kind() {
        put("type", json!(v.as_str()));
    }
    if let Some(v) = p.user_id() {
        put("user_id", json!(v.as_str()));
    }
    if let Some(v) = p.app_id() {
        put("app_id", json!(v.as_str()));
    }
    Value::Object(m)
}

/// Message properties from the API's JSON (publish). A string property over 255 bytes
/// cannot be sent in a content header: 400 naming it.
pub fn properties(v: Option<&Value>) -> Result<AMQPProperties, ApiError> {
    let mut p = AMQPProperties::default();
    let Some(Value::Object(m)) = v else {
        return Ok(p);
    };
    let s = |k: &str| -> Result<Option<ShortString>, ApiError> {
        m.get(k)
            .and_then(Value::as_str)
            .map(|v| short(&format!("property {k}"), v))
            .transpose()
    };
    if let Some(v) = s("content_type")? {
        p = p.with_content_type(v);
    }
    if let Some(v) = s("content_encoding")? {
        p = p.with_content_encoding(v);
    }
    if m.contains_key("headers") {
        p = p.with_headers(table(m.get("headers"))?);
    }
    if let Some(v) = m.get("delivery_mode").and_then(Value::as_u64) {
        p = p.with_delivery_mode(v as u8);
    }
    if let Some(v) = m.get("priority").and_then(Value::as_u64) {
        p = p.with_priority(v as u8);
    }
    if let Some(v) = s("correlation_id")? {
        p = p.with_correlation_id(v);
    }
    if let Some(v) = s("reply_to")? {
        p = p.with_reply_to(v);
    }
    if let Some(v) = s("expiration")? {
        p = p.with_expiration(v);
    }
    if let Some(v) = s("message_id")? {
        p = p.with_message_id(v);
    }
    if let Some(v) = m.get("timestamp").and_then(Value::as_u64) {
        p = p.with_timestamp(v);
    }
    if let Some(v) = s("type")? {
        p = p.with_type(v);
    }
    if let Some(v) = s("user_id")? {
        p = p.with_user_id(v);
    }
    if let Some(v) = s("app_id")? {
        p = p.with_app_id(v);
    }
    Ok(p)
}
