//! `status`: a short summary of `GET /api/overview`.

use clap::Args;
use serde_json::Value;

use super::Output;
use crate::client::Client;
use crate::columns::lookup;
use crate::output::{render_pairs, Format};

/// Arguments of `status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// The summary lines: (name, path in the overview).
const FIELDS: &[(&str, &str)] = &[
    ("product", "product_name"),
    ("version", "product_version"),
    ("management_version", "management_version"),
    ("node", "node"),
    ("cluster_name", "cluster_name"),
    ("connections", "object_totals.connections"),
    ("channels", "object_totals.channels"),
    ("consumers", "object_totals.consumers"),
    ("exchanges", "object_totals.exchanges"),
    ("queues", "object_totals.queues"),
    ("messages", "queue_totals.messages"),
    ("messages_ready", "queue_totals.messages_ready"),
    (
        "messages_unacknowledged",
        "queue_totals.messages_unacknowledged",
    ),
];

/// Prints the summary.
pub fn run(client: &Client, args: &StatusArgs) -> Output {
    let overview = client.get("overview", "overview")?;
    Ok(render_pairs(&summary(&overview), args.format))
}

/// Picks the summary fields out of an overview (absent ones are null).
pub fn summary(overview: &Value) -> Vec<(&'static str, Value)> {
    FIELDS
        .iter()
        .map(|(name, path)| {
            let segments: Vec<String> = path.split('.').map(str::to_string).collect();
            (*name, lookup(overview, &segments).clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summary_picks_totals() {
        let overview = json!({"product_name": "RabbitMQ", "product_version": "3.10.8", "node": "n@h",
            "object_totals": {"connections": 2, "queues": 5}, "queue_totals": {"messages": 9}});
        let s = summary(&overview);
        assert_eq!(s[0], ("product", json!("RabbitMQ")));
        assert!(s.contains(&("queues", json!(5))));
        assert!(s.contains(&("messages", json!(9))));
        assert!(s.contains(&("channels", Value::Null)));
    }
}
