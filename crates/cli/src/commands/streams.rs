//! `streams add-partitioned|delete-partitioned|list-partitioned`: partitioned streams
//! (RabbitMQ's super streams, `rabbitmq-streams add_super_stream`), through the API's
//! `/api/stream/super-streams`.

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::{fetch, in_vhost, ListArgs, Output, VhostArg};
use crate::client::{seg, Client};
use crate::columns::{col, Column, ColumnSet};
use crate::output::render;

const KNOWN: &[Column] = &[
    col("name"),
    col("vhost"),
    col("partition_count"),
    col("partition_names"),
    col("partitions"),
    col("arguments"),
];

/// The columns of `streams list-partitioned`.
pub const COLUMNS: ColumnSet = ColumnSet {
    resource: "partitioned streams",
    known: KNOWN,
    defaults: &[
        "name",
        "vhost",
        "partition_count",
        "partition_names",
        "arguments",
    ],
};

/// The stream subcommands.
// the "-partitioned" suffix says what they act on: `streams add` alone would
// read as a plain stream
#[allow(clippy::enum_variant_names)]
#[derive(Subcommand, Debug)]
pub enum StreamsCommand {
    /// Create a partitioned stream: a direct exchange NAME and streams NAME-0 … NAME-(N-1)
    /// (or NAME-KEY per routing key) bound to it
    AddPartitioned(AddArgs),
    /// Delete a partitioned stream: its exchange and its partition streams
    DeletePartitioned(NameArgs),
    /// List partitioned streams with their partitions
    ListPartitioned(ListArgs),
}

/// Arguments of `streams add-partitioned`.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// Name of the partitioned stream (its exchange; partitions are NAME-0, NAME-1 …)
    pub name: String,
    #[command(flatten)]
    pub vhost: VhostArg,
    /// Number of partitions [default: 3, as rabbitmq-streams]
    #[arg(long, conflicts_with = "routing_keys")]
    pub partitions: Option<i64>,
    /// Comma-separated routing keys, one partition NAME-KEY each (instead of --partitions)
    #[arg(long, value_delimiter = ',')]
    pub routing_keys: Option<Vec<String>>,
    /// How long each partition keeps messages: <digits><Y|M|D|h|m|s>, e.g. 7D
    #[arg(long)]
    pub max_age: Option<String>,
    /// The most bytes each partition keeps
    #[arg(long)]
    pub max_length_bytes: Option<u64>,
    /// Segment file size of each partition, in bytes
    #[arg(long)]
    pub segment_size: Option<u64>,
}

/// A partitioned stream's name and its vhost.
#[derive(Args, Debug)]
pub struct NameArgs {
    /// Name of the partitioned stream
    pub name: String,
    #[command(flatten)]
    pub vhost: VhostArg,
}

/// Runs one stream subcommand.
pub fn run(client: &Client, cmd: &StreamsCommand) -> Output {
    match cmd {
        StreamsCommand::AddPartitioned(args) => add(client, args),
        StreamsCommand::DeletePartitioned(args) => delete(client, args),
        StreamsCommand::ListPartitioned(args) => list(client, args),
    }
}

fn path(vhost: &str, name: &str) -> String {
    format!("stream/super-streams/{}/{}", seg(vhost), seg(name))
}

/// The PUT body: partitions or routing keys, and the retention arguments.
fn body(args: &AddArgs) -> Value {
    let mut arguments = Map::new();
    if let Some(a) = &args.max_age {
        arguments.insert("max-age".into(), json!(a));
    }
    if let Some(b) = args.max_length_bytes {
        arguments.insert("max-length-bytes".into(), json!(b));
    }
    if let Some(b) = args.segment_size {
        arguments.insert("stream-max-segment-size-bytes".into(), json!(b));
    }
    match &args.routing_keys {
        // RabbitMQ 4.x's field (a comma-separated string), which this broker takes too
        Some(keys) => json!({"binding-keys": keys.join(","), "arguments": arguments}),
        None => json!({"partitions": args.partitions.unwrap_or(3), "arguments": arguments}),
    }
}

fn add(client: &Client, args: &AddArgs) -> Output {
    let vhost = &args.vhost.vhost;
    client.put(
        &path(vhost, &args.name),
        &body(args),
        &format!("vhost '{vhost}'"),
    )?;
    Ok(format!(
        "created {}\n",
        in_vhost("partitioned stream", &args.name, vhost)
    ))
}

fn delete(client: &Client, args: &NameArgs) -> Output {
    let vhost = &args.vhost.vhost;
    let what = in_vhost("partitioned stream", &args.name, vhost);
    client.delete(&path(vhost, &args.name), &[], &what)?;
    Ok(format!("deleted {what}\n"))
}

fn list(client: &Client, args: &ListArgs) -> Output {
    let columns = COLUMNS.select(args.columns.as_deref())?;
    let mut rows = fetch(client, args, "stream/super-streams", |v| {
        format!("stream/super-streams/{v}")
    })?;
    for row in &mut rows {
        // the partitions' names alone, for the table
        let names: Vec<Value> = row
            .get("partitions")
            .and_then(Value::as_array)
            .map(|ps| ps.iter().filter_map(|p| p.get("name").cloned()).collect())
            .unwrap_or_default();
        if let Value::Object(m) = row {
            m.insert("partition_names".into(), Value::Array(names));
        }
    }
    Ok(render(&rows, &columns, args.format))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add_args(partitions: Option<i64>, keys: Option<Vec<&str>>) -> AddArgs {
        AddArgs {
            name: "s".into(),
            vhost: VhostArg { vhost: "/".into() },
            partitions,
            routing_keys: keys.map(|k| k.into_iter().map(String::from).collect()),
            max_age: Some("7D".into()),
            max_length_bytes: Some(1000),
            segment_size: None,
        }
    }

    #[test]
    fn body_has_partitions_or_keys_and_the_retention() {
        assert_eq!(
            body(&add_args(Some(2), None)),
            json!({"partitions": 2, "arguments": {"max-age": "7D", "max-length-bytes": 1000}})
        );
        assert_eq!(body(&add_args(None, None))["partitions"], json!(3));
        assert_eq!(
            body(&add_args(None, Some(vec!["a", "b"])))["binding-keys"],
            json!("a,b")
        );
    }
}
