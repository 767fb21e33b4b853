//! `queues peek` and `queues move`: browsing a queue's messages without taking them
//! (`GET /api/queues/{vhost}/{name}/messages`) and moving messages to where they were
//! dead-lettered from or to another queue (`POST …/move`), the broker's own endpoints.

use clap::{ArgGroup, Args};
use serde_json::{json, Value};

use super::messages::{decoded, normalize};
use super::{in_vhost, Output, VhostArg};
use crate::client::Client;
use crate::commands::queues::queue_path;
use crate::error::CliError;
use crate::output::{cell, pretty, Format};

/// The most messages one move request takes (the API's limit).
const MOVE_REQUEST_MAX: u64 = 10_000;

/// Arguments of `queues peek`.
#[derive(Args, Debug)]
pub struct PeekArgs {
    /// Queue name
    pub name: String,
    #[command(flatten)]
    pub vhost: VhostArg,
    /// Position of the first message to show (0: the head of the queue)
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    /// How many messages to show (1 to 100)
    #[arg(long, short = 'c', default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub count: u32,
    /// Show at most this many bytes of each payload
    #[arg(long)]
    pub truncate: Option<u64>,
    /// Output format (json: the API's answer)
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Shows messages without taking them.
pub fn peek(client: &Client, args: &PeekArgs) -> Output {
    let vhost = &args.vhost.vhost;
    let what = in_vhost("queue", &args.name, vhost);
    let mut path = format!(
        "{}/messages?offset={}&count={}",
        queue_path(vhost, &args.name),
        args.offset,
        args.count
    );
    if let Some(t) = args.truncate {
        path.push_str(&format!("&truncate={t}"));
    }
    let answer = client.get(&path, &what)?;
    if args.format == Format::Json {
        return Ok(pretty(&answer));
    }
    let total = answer.get("total").and_then(Value::as_u64).unwrap_or(0);
    let items: Vec<Value> = match answer.get("items") {
        Some(Value::Array(items)) => items.iter().cloned().map(normalize).collect(),
        _ => Vec::new(),
    };
    Ok(peek_text(&items, total, args.offset, &what))
}

fn peek_text(items: &[Value], total: u64, offset: u64, what: &str) -> String {
    if items.is_empty() {
        return format!("no messages at position {offset} or later in {what} ({total} ready)\n");
    }
    let mut out = String::new();
    for (i, raw) in items.iter().enumerate() {
        let m = decoded(raw);
        let field = |k: &str| cell(m.get(k).unwrap_or(&Value::Null));
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("message {} of {total}\n", field("position")));
        for label in [
            "exchange",
            "routing_key",
            "redelivered",
            "properties",
            "payload_bytes",
        ] {
            let line = format!("  {:<15}{}", format!("{label}:"), field(label));
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let label = if field("payload_encoding") == "base64" {
            "payload (base64)"
        } else {
            "payload"
        };
        let payload = m.get("payload").and_then(Value::as_str).unwrap_or("");
        out.push_str(&format!("  {label}:\n{payload}\n"));
    }
    out
}

/// Arguments of `queues move`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("destination").required(true).args(["to_origin", "to_queue"])))]
pub struct MoveArgs {
    /// Queue name (usually a dead-letter queue)
    pub name: String,
    #[command(flatten)]
    pub vhost: VhostArg,
    /// Move each message back to the exchange and routing key it was dead-lettered from
    /// (its latest x-death entry)
    #[arg(long)]
    pub to_origin: bool,
    /// Move the messages to this queue (through the default exchange)
    #[arg(long, value_name = "QUEUE")]
    pub to_queue: Option<String>,
    /// How many messages to move at most
    #[arg(long, short = 'c', default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
}

/// Moves messages, 10,000 per request, until `count` moved, the queue is empty or
/// a message cannot be moved (then exit 6 with the broker's reason).
pub fn move_messages(client: &Client, args: &MoveArgs) -> Output {
    let vhost = &args.vhost.vhost;
    let what = in_vhost("queue", &args.name, vhost);
    let path = format!("{}/move", queue_path(vhost, &args.name));
    let (mut moved, mut remaining) = (0u64, 0u64);
    while moved < args.count {
        let n = (args.count - moved).min(MOVE_REQUEST_MAX);
        let body = match &args.to_queue {
            Some(q) => json!({"count": n, "destination": "queue", "queue": q}),
            None => json!({"count": n, "destination": "origin"}),
        };
        let answer = client.post(&path, &body, &what)?.unwrap_or(Value::Null);
        let k = answer.get("moved").and_then(Value::as_u64).unwrap_or(0);
        moved += k;
        remaining = answer.get("remaining").and_then(Value::as_u64).unwrap_or(0);
        if let Some(why) = answer.get("stopped").and_then(Value::as_str) {
            return Err(CliError::Conflict(format!(
                "moved {moved} message(s) from {what}, then stopped: {why} ({remaining} left)"
            )));
        }
        if k < n {
            break;
        }
    }
    let to = match &args.to_queue {
        Some(q) => format!("queue '{q}'"),
        None => "their origin".to_owned(),
    };
    Ok(format!(
        "moved {moved} message(s) from {what} to {to} ({remaining} left)\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_text_shows_positions_and_payloads() {
        let m = json!({"position": 3, "payload_bytes": 2, "redelivered": false, "exchange": "x",
                       "routing_key": "k", "properties": {}, "payload": "hi",
                       "payload_encoding": "string"});
        let out = peek_text(&[m], 7, 3, "queue 'q'");
        assert!(
            out.starts_with("message 3 of 7\n  exchange:      x\n"),
            "{out}"
        );
        assert!(out.ends_with("  payload:\nhi\n"), "{out}");
        let none = peek_text(&[], 2, 5, "queue 'q'");
        assert_eq!(
            none,
            "no messages at position 5 or later in queue 'q' (2 ready)\n"
        );
    }
}
