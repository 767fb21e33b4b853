//! A dynamic shovel's definition: the `value` of `/api/parameters/shovel/{vhost}/{name}`
//! with RabbitMQ's keys (rabbit_shovel_parameters' AMQP 0-9-1 set, its pre-3.7 names
//! `delete-after`, `prefetch-count`, `add-forward-headers`, `add-timestamp-header` and
//! `publish-properties` read as the new ones), checked and given RabbitMQ's defaults.
//! Pure: no I/O, so every rule is unit-tested here.

use serde_json::{Map, Value};

/// RabbitMQ's default `src-prefetch-count`.
pub const DEFAULT_PREFETCH: u16 = 1000;
/// RabbitMQ's default `reconnect-delay`, in seconds.
pub const DEFAULT_RECONNECT_DELAY: f64 = 5.0;
/// Most URIs a side may list (each is tried in turn).
const MAX_URIS: usize = 16;
/// Longest `reconnect-delay` accepted (one day): the back-off never waits longer.
const MAX_RECONNECT_DELAY: f64 = 86_400.0;

/// Where a shovel takes messages from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A queue (declared durable if it does not exist, as RabbitMQ does).
    Queue(String),
    /// An exchange: the shovel binds a queue of its own to it with `key`.
    Exchange { name: String, key: String },
}

/// Where a shovel puts them.
#[derive(Debug, Clone, PartialEq)]
pub enum Dest {
    /// A queue, through the default exchange (declared durable if absent).
    Queue(String),
    /// An exchange, with `key` or else each message's own routing key.
    Exchange { name: String, key: Option<String> },
    /// Neither given: each message's own exchange and routing key.
    Same,
}

/// When the source is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// After the destination confirmed the message (no loss).
    OnConfirm,
    /// After it was written to the destination's connection.
    OnPublish,
    /// Consumed without acknowledgements.
    NoAck,
}

impl AckMode {
    /// RabbitMQ's name.
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::OnConfirm => "on-confirm",
            AckMode::OnPublish => "on-publish",
            AckMode::NoAck => "no-ack",
        }
    }
}

/// When the shovel deletes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteAfter {
    /// Runs until deleted.
    Never,
    /// After moving as many messages as the source queue held at start.
    QueueLength,
    /// After moving this many.
    Count(u64),
}

/// A checked shovel definition.
#[derive(Debug, Clone, PartialEq)]
pub struct ShovelDef {
    /// Source URIs, tried in turn (the first that connects wins).
    pub src_uris: Vec<String>,
    /// The source.
    pub src: Source,
    /// Arguments of a declared source queue.
    pub src_queue_args: Map<String, Value>,
    /// basic.qos of the source: the most messages in flight.
    pub prefetch: u16,
    /// When to stop.
    pub delete_after: DeleteAfter,
    /// Destination URIs, tried in turn.
    pub dest_uris: Vec<String>,
    /// The destination.
    pub dest: Dest,
    /// Arguments of a declared destination queue.
    pub dest_queue_args: Map<String, Value>,
    /// Add RabbitMQ's `x-shovelled` header.
    pub add_forward_headers: bool,
    /// Add `x-shovelled-timestamp`.
    pub add_timestamp_header: bool,
    /// Properties set on every forwarded message (RabbitMQ's names: `delivery_mode`, …).
    pub publish_properties: Map<String, Value>,
    /// When the source is acknowledged.
    pub ack_mode: AckMode,
    /// Seconds between reconnection attempts (doubled on each failure, capped).
    pub reconnect_delay: f64,
}

/// Every key RabbitMQ's AMQP 0-9-1 shovel knows (and its old names).
const KNOWN: &[&str] = &[
    "src-protocol",
    "src-uri",
    "src-queue",
    "src-queue-args",
    "src-consumer-args",
    "src-exchange",
    "src-exchange-key",
    "src-prefetch-count",
    "prefetch-count",
    "src-delete-after",
    "delete-after",
    "dest-protocol",
    "dest-uri",
    "dest-queue",
    "dest-queue-args",
    "dest-exchange",
    "dest-exchange-key",
    "dest-add-forward-headers",
    "add-forward-headers",
    "dest-add-timestamp-header",
    "add-timestamp-header",
    "dest-publish-properties",
    "publish-properties",
    "ack-mode",
    "reconnect-delay",
];

/// The properties `dest-publish-properties` may set (RabbitMQ's basic properties names).
pub const PROPERTIES: &[&str] = &[
    "content_type",
    "content_encoding",
    "headers",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
    "cluster_id",
];

fn string(v: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{key} should be a string, actually was {other}")),
    }
}

fn boolean(v: &Map<String, Value>, keys: &[&str]) -> Result<bool, String> {
    for key in keys {
        match v.get(*key) {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => return Ok(*b),
            Some(other) => return Err(format!("{key} should be boolean, actually was {other}")),
        }
    }
    Ok(false)
}

fn table(v: &Map<String, Value>, keys: &[&str]) -> Result<Map<String, Value>, String> {
    for key in keys {
        match v.get(*key) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                fits_field_table(key, m, 0)?;
                return Ok(m.clone());
            }
            Some(other) => return Err(format!("{key} should be a table, actually was {other}")),
        }
    }
    Ok(Map::new())
}

/// A table becomes an AMQP field table: its keys (at every level) are short strings of
/// at most 255 bytes, and it nests at most [`MAX_TABLE_DEPTH`] deep.
fn fits_field_table(key: &str, m: &Map<String, Value>, depth: usize) -> Result<(), String> {
    if depth >= MAX_TABLE_DEPTH {
        return Err(format!(
            "{key} nests tables more than {MAX_TABLE_DEPTH} deep"
        ));
    }
    for (k, v) in m {
        if k.len() > 255 {
            return Err(format!("{key} has a key longer than 255 bytes"));
        }
        let nested = match v {
            Value::Object(inner) => vec![inner],
            Value::Array(a) => a.iter().filter_map(Value::as_object).collect(),
            _ => Vec::new(),
        };
        for inner in nested {
            fits_field_table(key, inner, depth + 1)?;
        }
    }
    Ok(())
}

/// How deep the tables of `src-queue-args`, `dest-queue-args` and the publish
/// properties' headers may nest (a field table's parser recurses).
const MAX_TABLE_DEPTH: usize = 16;

/// `src-uri`/`dest-uri`: a string or a non-empty list of strings, each an AMQP URI.
fn uris(v: &Map<String, Value>, key: &str, name: &str) -> Result<Vec<String>, String> {
    let list = match v.get(key) {
        None | Some(Value::Null) => return Err(format!("Key \"{key}\" not found in {name}")),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= MAX_URIS => a
            .iter()
            .map(|u| match u {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("{key} should be a string, actually was {other}")),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(format!(
                "{key} should be a URI or a list of 1 to {MAX_URIS} URIs, actually was {other}"
            ))
        }
    };
    for u in &list {
        super::uri::parse(u).map_err(|e| format!("{key}: {e}"))?;
    }
    Ok(list)
}

fn protocol(v: &Map<String, Value>, key: &str) -> Result<(), String> {
    match string(v, key)?.as_deref() {
        None | Some("amqp091") => Ok(()),
        Some(p @ ("amqp10" | "local")) => Err(format!(
            "{key} \"{p}\" is not supported by this broker: only \"amqp091\""
        )),
        Some(p) => Err(format!(
            "{key} should be one of [\"amqp091\",\"amqp10\",\"local\"], actually was \"{p}\""
        )),
    }
}

fn delete_after(v: &Map<String, Value>) -> Result<DeleteAfter, String> {
    for key in ["src-delete-after", "delete-after"] {
        match v.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) if s == "never" => return Ok(DeleteAfter::Never),
            Some(Value::String(s)) if s == "queue-length" => return Ok(DeleteAfter::QueueLength),
            Some(Value::Number(n)) if n.as_u64().is_some() => {
                return Ok(DeleteAfter::Count(n.as_u64().unwrap_or(0)))
            }
            Some(other) => {
                return Err(format!(
                    "{key} should be a number greater than or equal to 0 or \"never\" or \"queue-length\", actually was {other}"
                ))
            }
        }
    }
    Ok(DeleteAfter::Never)
}

fn prefetch(v: &Map<String, Value>) -> Result<u16, String> {
    for key in ["src-prefetch-count", "prefetch-count"] {
        match v.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::Number(n)) => {
                return n
                    .as_u64()
                    .filter(|n| (1..=u64::from(u16::MAX)).contains(n))
                    .map(|n| n as u16)
                    .ok_or_else(|| {
                        format!("{key} should be a number from 1 to 65535, actually was {n}")
                    })
            }
            Some(other) => return Err(format!("{key} should be a number, actually was {other}")),
        }
    }
    Ok(DEFAULT_PREFETCH)
}

fn ack_mode(v: &Map<String, Value>) -> Result<AckMode, String> {
    match string(v, "ack-mode")?.as_deref() {
        None | Some("on-confirm") => Ok(AckMode::OnConfirm),
        Some("on-publish") => Ok(AckMode::OnPublish),
        Some("no-ack") => Ok(AckMode::NoAck),
        Some(other) => Err(format!(
            "ack-mode should be one of [\"no-ack\",\"on-publish\",\"on-confirm\"], actually was \"{other}\""
        )),
    }
}

fn reconnect_delay(v: &Map<String, Value>) -> Result<f64, String> {
    match v.get("reconnect-delay") {
        None | Some(Value::Null) => Ok(DEFAULT_RECONNECT_DELAY),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|d| (0.0..=MAX_RECONNECT_DELAY).contains(d))
            .ok_or_else(|| {
                format!("reconnect-delay should be a number from 0 to {MAX_RECONNECT_DELAY}, actually was {n}")
            }),
        Some(other) => Err(format!(
            "reconnect-delay should be a number, actually was {other}"
        )),
    }
}

fn source(v: &Map<String, Value>) -> Result<Source, String> {
    match (string(v, "src-queue")?, string(v, "src-exchange")?) {
        (None, None) => Err("Must specify 'src-queue' or 'src-exchange'".into()),
        (Some(_), Some(_)) => Err("Cannot specify 'src-exchange' and 'src-queue'".into()),
        (Some(q), None) => Ok(Source::Queue(q)),
        (None, Some(x)) => Ok(Source::Exchange {
            name: x,
            key: string(v, "src-exchange-key")?.unwrap_or_else(|| "#".into()),
        }),
    }
}

fn dest(v: &Map<String, Value>) -> Result<Dest, String> {
    match (string(v, "dest-queue")?, string(v, "dest-exchange")?) {
        (Some(_), Some(_)) => Err("Cannot specify 'dest-exchange' and 'dest-queue'".into()),
        (Some(q), None) => Ok(Dest::Queue(q)),
        (None, Some(x)) => Ok(Dest::Exchange {
            name: x,
            key: string(v, "dest-exchange-key")?,
        }),
        (None, None) => Ok(Dest::Same),
    }
}

fn publish_properties(v: &Map<String, Value>) -> Result<Map<String, Value>, String> {
    let props = table(v, &["dest-publish-properties", "publish-properties"])?;
    if let Some(k) = props.keys().find(|k| !PROPERTIES.contains(&k.as_str())) {
        return Err(format!(
            "dest-publish-properties: unknown property \"{k}\" (one of {})",
            PROPERTIES.join(", ")
        ));
    }
    for (k, v) in &props {
        let fits = match k.as_str() {
            "delivery_mode" | "priority" => v.as_u64().is_some_and(|n| n <= 255),
            "timestamp" => v.as_u64().is_some(),
            "headers" => v.is_object(),
            _ => v.as_str().is_some_and(|s| s.len() <= 255),
        };
        if !fits {
            return Err(format!(
                "dest-publish-properties: \"{k}\" cannot be {v} (a number from 0 to 255 for delivery_mode and priority, seconds for timestamp, a table for headers, else a string up to 255 bytes)"
            ));
        }
    }
    Ok(props)
}

/// Checks a shovel's `value` (RabbitMQ's texts where it has them).
pub fn parse(name: &str, value: &Value) -> Result<ShovelDef, String> {
    let Value::Object(v) = value else {
        return Err(format!(
            "shovel value should be a JSON object, actually was {value}"
        ));
    };
    let unknown: Vec<&str> = v
        .keys()
        .map(String::as_str)
        .filter(|k| !KNOWN.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(format!("Unrecognised terms {unknown:?} in {name}"));
    }
    protocol(v, "src-protocol")?;
    protocol(v, "dest-protocol")?;
    Ok(ShovelDef {
        src_uris: uris(v, "src-uri", name)?,
        src: source(v)?,
        src_queue_args: table(v, &["src-queue-args"])?,
        prefetch: prefetch(v)?,
        delete_after: delete_after(v)?,
        dest_uris: uris(v, "dest-uri", name)?,
        dest: dest(v)?,
        dest_queue_args: table(v, &["dest-queue-args"])?,
        add_forward_headers: boolean(v, &["dest-add-forward-headers", "add-forward-headers"])?,
        add_timestamp_header: boolean(v, &["dest-add-timestamp-header", "add-timestamp-header"])?,
        publish_properties: publish_properties(v)?,
        ack_mode: ack_mode(v)?,
        reconnect_delay: reconnect_delay(v)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(v: Value) -> ShovelDef {
        parse("s", &v).unwrap_or_else(|e| panic!("{v}: {e}"))
    }

    fn err(v: Value) -> String {
        parse("s", &v).expect_err("refused")
    }

    #[test]
    fn defaults_are_rabbitmqs() {
        let d = ok(json!({"src-uri": "amqp://", "src-queue": "a", "dest-uri": "amqp://"}));
        assert_eq!(d.src, Source::Queue("a".into()));
        assert_eq!(d.dest, Dest::Same);
        assert_eq!(d.ack_mode, AckMode::OnConfirm);
        assert_eq!(d.prefetch, DEFAULT_PREFETCH);
        assert_eq!(d.delete_after, DeleteAfter::Never);
        assert_eq!(d.reconnect_delay, DEFAULT_RECONNECT_DELAY);
        assert!(!d.add_forward_headers);
    }

    #[test]
    fn old_names_are_read() {
        let d = ok(
            json!({"src-uri": ["amqp://", "amqp://h"], "src-exchange": "x",
            "dest-uri": "amqp://", "dest-exchange": "y", "dest-exchange-key": "k",
            "delete-after": 5, "prefetch-count": 10, "add-forward-headers": true}),
        );
        assert_eq!(d.src_uris.len(), 2);
        assert_eq!(
            d.src,
            Source::Exchange {
                name: "x".into(),
                key: "#".into()
            }
        );
        assert_eq!(
            d.dest,
            Dest::Exchange {
                name: "y".into(),
                key: Some("k".into())
            }
        );
        assert_eq!(d.delete_after, DeleteAfter::Count(5));
        assert_eq!(d.prefetch, 10);
        assert!(d.add_forward_headers);
    }

    #[test]
    fn bad_values_are_refused_with_clear_texts() {
        let base = json!({"src-uri": "amqp://", "src-queue": "a", "dest-uri": "amqp://"});
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            err(b)
        };
        assert!(err(json!({"src-queue": "a", "dest-uri": "amqp://"})).contains("src-uri"));
        assert!(with("src-exchange", json!("x")).contains("Cannot specify"));
        assert!(with("ack-mode", json!("sometimes")).contains("ack-mode"));
        assert!(with("src-delete-after", json!(-1)).contains("queue-length"));
        assert!(with("src-protocol", json!("amqp10")).contains("not supported"));
        assert!(with("src-uri", json!("http://x")).contains("src-uri"));
        assert!(with("bogus", json!(1)).contains("Unrecognised terms"));
        assert!(with("src-prefetch-count", json!(0)).contains("src-prefetch-count"));
        assert!(with("dest-publish-properties", json!({"nope": 1})).contains("nope"));
        assert!(err(json!({"src-uri": "amqp://", "dest-uri": "amqp://"})).contains("Must specify"));
    }
}
