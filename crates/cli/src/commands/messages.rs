//! `queues get`: fetching messages through `POST /api/queues/{vhost}/{name}/get`
//! and showing them (payload as text when it is UTF-8).

use base64::Engine;
use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use super::{in_vhost, Output, VhostArg};
use crate::client::Client;
use crate::columns::Selected;
use crate::commands::queues::queue_path;
use crate::output::{cell, pretty, render, Format};

/// What happens to fetched messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AckMode {
    /// Put them back in the queue (ackmode ack_requeue_true; they come back redelivered)
    Requeue,
    /// Acknowledge them: they are removed (ackmode ack_requeue_false)
    Ack,
    /// Reject them without requeueing: dead-lettered if so configured (reject_requeue_false)
    Reject,
}

impl AckMode {
    /// The API's `ackmode` value.
    pub fn api_value(self) -> &'static str {
        match self {
            AckMode::Requeue => "ack_requeue_true",
            AckMode::Ack => "ack_requeue_false",
            AckMode::Reject => "reject_requeue_false",
        }
    }
}

/// Arguments of `queues get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// Queue name
    pub name: String,
    #[command(flatten)]
    pub vhost: VhostArg,
    /// How many messages to fetch at most
    #[arg(long, short = 'c', default_value_t = 1)]
    pub count: u32,
    /// What to do with the fetched messages
    #[arg(long, value_enum, default_value_t = AckMode::Requeue)]
    pub ack_mode: AckMode,
    /// Output format (json: the API's message objects)
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Fetches and prints messages.
pub fn get(client: &Client, args: &GetArgs) -> Output {
    let vhost = &args.vhost.vhost;
    let body =
        json!({"count": args.count, "ackmode": args.ack_mode.api_value(), "encoding": "auto"});
    let what = in_vhost("queue", &args.name, vhost);
    let answer = client.post(
        &format!("{}/get", queue_path(vhost, &args.name)),
        &body,
        &what,
    )?;
    let messages: Vec<Value> = match answer {
        Some(Value::Array(items)) => items.into_iter().map(normalize).collect(),
        _ => Vec::new(),
    };
    Ok(match args.format {
        Format::Json => pretty(&Value::Array(messages)),
        Format::Tsv => render(
            &messages.iter().map(decoded).collect::<Vec<_>>(),
            &tsv_columns(),
            Format::Tsv,
        ),
        Format::Table => text(&messages, &what),
    })
}

/// RabbitMQ sends empty properties as `[]`; make them `{}`.
pub(crate) fn normalize(mut message: Value) -> Value {
    if let Some(props) = message.get_mut("properties") {
        if props.as_array().is_some_and(Vec::is_empty) || props.is_null() {
            *props = json!({});
        }
    }
    message
}

/// The message with a base64 payload decoded when the bytes are UTF-8.
pub(crate) fn decoded(message: &Value) -> Value {
    let mut message = message.clone();
    let is_base64 = message.get("payload_encoding").and_then(Value::as_str) == Some("base64");
    let payload = message
        .get("payload")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let (true, Some(p)) = (is_base64, payload) {
        let text = base64::engine::general_purpose::STANDARD
            .decode(p.as_bytes())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok());
        if let (Some(t), Value::Object(map)) = (text, &mut message) {
            map.insert("payload".into(), Value::String(t));
            map.insert("payload_encoding".into(), Value::String("string".into()));
        }
    }
    message
}

fn tsv_columns() -> Vec<Selected> {
    [
        "exchange",
        "routing_key",
        "redelivered",
        "payload_bytes",
        "payload_encoding",
        "payload",
        "properties",
    ]
    .iter()
    .map(|c| Selected {
        name: c.to_string(),
        path: vec![c.to_string()],
    })
    .collect()
}

fn text(messages: &[Value], what: &str) -> String {
    if messages.is_empty() {
        return format!("no messages in {what}\n");
    }
    let total = messages.len();
    let mut out = String::new();
    for (i, raw) in messages.iter().enumerate() {
        let m = decoded(raw);
        let field = |k: &str| cell(m.get(k).unwrap_or(&Value::Null));
        let encoding = field("payload_encoding");
        let payload_label = if encoding == "base64" {
            "payload (base64)"
        } else {
            "payload"
        };
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("message {} of {total}\n", i + 1));
        for (label, value) in [
            ("exchange", field("exchange")),
            ("routing_key", field("routing_key")),
            ("redelivered", field("redelivered")),
            ("properties", field("properties")),
            ("payload_bytes", field("payload_bytes")),
            ("left_in_queue", field("message_count")),
        ] {
            let line = format!("  {:<15}{value}", format!("{label}:"));
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let payload = m.get("payload").and_then(Value::as_str).unwrap_or("");
        out.push_str(&format!("  {payload_label}:\n{payload}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_modes_map_to_the_api() {
        assert_eq!(AckMode::Requeue.api_value(), "ack_requeue_true");
        assert_eq!(AckMode::Ack.api_value(), "ack_requeue_false");
        assert_eq!(AckMode::Reject.api_value(), "reject_requeue_false");
    }

    #[test]
    fn utf8_payloads_are_shown_as_text() {
        let m =
            normalize(json!({"payload": "aMOp", "payload_encoding": "base64", "properties": []}));
        assert_eq!(m["properties"], json!({}));
        let d = decoded(&m);
        assert_eq!(d["payload"], "hé");
        let bin = decoded(&json!({"payload": "/w==", "payload_encoding": "base64"}));
        assert_eq!(bin["payload"], "/w==");
        let out = text(&[bin], "q");
        assert!(out.contains("payload (base64):\n/w==\n"), "{out}");
    }

    #[test]
    fn text_lists_each_message() {
        let m = json!({"payload_bytes": 5, "redelivered": false, "exchange": "", "routing_key": "q",
                       "message_count": 0, "properties": {"content_type": "text/plain"},
                       "payload": "hello", "payload_encoding": "string"});
        let out = text(&[m], "queue 'q'");
        assert!(
            out.starts_with("message 1 of 1\n  exchange:\n  routing_key:   q\n"),
            "{out}"
        );
        assert!(
            out.contains("  properties:    {\"content_type\":\"text/plain\"}\n"),
            "{out}"
        );
        assert!(out.ends_with("  payload:\nhello\n"), "{out}");
        assert_eq!(text(&[], "queue 'q'"), "no messages in queue 'q'\n");
    }
}
