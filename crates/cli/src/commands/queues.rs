//! `queues list|declare|delete|purge|get|peek|move`.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{
    arguments_object, browse, in_vhost, list, messages, parse_argument, ListArgs, Output, VhostArg,
};
use crate::client::{seg, Client};
use crate::columns::{col, Column, ColumnSet};

/// Queue columns: rabbitmqctl `list_queues` items that the API has, plus API fields.
const KNOWN: &[Column] = &[
    col("name"),
    col("vhost"),
    col("messages"),
    col("messages_ready"),
    col("messages_unacknowledged"),
    col("consumers"),
    col("durable"),
    col("auto_delete"),
    col("exclusive"),
    col("arguments"),
    col("state"),
    col("type"),
    col("memory"),
    col("policy"),
    col("operator_policy"),
    col("effective_policy_definition"),
    col("exclusive_consumer_tag"),
    col("consumer_utilisation"),
    col("consumer_capacity"),
    col("messages_ram"),
    col("messages_ready_ram"),
    col("messages_unacknowledged_ram"),
    col("messages_persistent"),
    col("messages_paged_out"),
    col("message_bytes"),
    col("message_bytes_ready"),
    col("message_bytes_unacknowledged"),
    col("message_bytes_ram"),
    col("message_bytes_persistent"),
    col("message_bytes_paged_out"),
    col("head_message_timestamp"),
    col("idle_since"),
    col("node"),
    col("leader"),
    col("members"),
    col("online"),
    col("reductions"),
    col("message_stats"),
    col("backing_queue_status"),
    col("garbage_collection"),
    col("consumer_details"),
];

/// The columns of `queues list`.
pub const COLUMNS: ColumnSet = ColumnSet {
    resource: "queues",
    known: KNOWN,
    defaults: &[
        "name",
        "messages",
        "messages_ready",
        "messages_unacknowledged",
        "consumers",
        "durable",
        "arguments",
    ],
};

/// The queue subcommands.
#[derive(Subcommand, Debug)]
pub enum QueuesCommand {
    /// List queues: name, messages, ready, unacked, consumers, durability, arguments
    List(QueueListArgs),
    /// Declare a queue (succeeds if an equivalent queue exists)
    Declare(DeclareArgs),
    /// Delete a queue
    Delete(DeleteArgs),
    /// Remove every ready message from a queue
    Purge(NameArgs),
    /// Fetch messages from a queue (requeued by default)
    Get(messages::GetArgs),
    /// Show messages without taking them (the queue is left exactly as it was)
    Peek(browse::PeekArgs),
    /// Move messages back to where they were dead-lettered from, or to another queue
    Move(browse::MoveArgs),
}

/// Arguments of `queues list`: the common list flags, and the API's filter and sort
/// (RabbitMQ's `name`, `use_regex`, `sort`, `sort_reverse` query parameters).
#[derive(Args, Debug)]
pub struct QueueListArgs {
    #[command(flatten)]
    pub list: ListArgs,
    /// Only queues whose name contains this (case-insensitive)
    #[arg(long, value_name = "TEXT")]
    pub name: Option<String>,
    /// --name is a regular expression (case-insensitive)
    #[arg(long, requires = "name")]
    pub regex: bool,
    /// Sort by this field (dotted for nested fields, e.g. message_stats.publish)
    #[arg(long, value_name = "FIELD")]
    pub sort: Option<String>,
    /// Sort in descending order
    #[arg(long)]
    pub sort_reverse: bool,
}

impl QueueListArgs {
    /// The query string for the filter and sort asked for ("" when none).
    fn query(&self) -> String {
        let mut q = Vec::new();
        if let Some(n) = &self.name {
            q.push(format!("name={}", seg(n)));
            if self.regex {
                q.push("use_regex=true".to_owned());
            }
        }
        if let Some(s) = &self.sort {
            q.push(format!("sort={}", seg(s)));
        }
        if self.sort_reverse {
            q.push("sort_reverse=true".to_owned());
        }
        if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        }
    }
}

/// Arguments of `queues declare`.
#[derive(Args, Debug)]
pub struct DeclareArgs {
    /// Queue name
    pub name: String,
    #[command(flatten)]
    pub vhost: VhostArg,
    /// Survive a broker restart (implied by --type quorum|stream)
    #[arg(long)]
    pub durable: bool,
    /// Delete the queue when its last consumer goes away
    #[arg(long)]
    pub auto_delete: bool,
    /// Queue type (sets the x-queue-type argument): classic, quorum, stream
    #[arg(long = "type")]
    pub queue_type: Option<String>,
    /// Queue argument key=value (value parsed as JSON if it parses, else a string); repeatable
    #[arg(long = "argument", short = 'a', value_name = "KEY=VALUE", value_parser = parse_argument)]
    pub arguments: Vec<(String, Value)>,
}

/// Arguments of `queues delete`.
#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Queue name
    pub name: String,
    #[command(flatten)]
    pub vhost: VhostArg,
    /// Only if the queue has no consumers
    #[arg(long)]
    pub if_unused: bool,
    /// Only if the queue has no messages
    #[arg(long)]
    pub if_empty: bool,
}

/// A queue name and its vhost.
#[derive(Args, Debug)]
pub struct NameArgs {
    /// Queue name
    pub name: String,
    #[command(flatten)]
    pub vhost: VhostArg,
}

/// Runs one queue subcommand.
pub fn run(client: &Client, cmd: &QueuesCommand) -> Output {
    match cmd {
        QueuesCommand::List(args) => {
            let query = args.query();
            list(
                client,
                &COLUMNS,
                &args.list,
                &format!("queues{query}"),
                |v| format!("queues/{v}{query}"),
            )
        }
        QueuesCommand::Declare(args) => declare(client, args),
        QueuesCommand::Delete(args) => delete(client, args),
        QueuesCommand::Purge(args) => purge(client, args),
        QueuesCommand::Get(args) => messages::get(client, args),
        QueuesCommand::Peek(args) => browse::peek(client, args),
        QueuesCommand::Move(args) => browse::move_messages(client, args),
    }
}

/// `queues/{vhost}/{name}`.
pub fn queue_path(vhost: &str, name: &str) -> String {
    format!("queues/{}/{}", seg(vhost), seg(name))
}

fn declare(client: &Client, args: &DeclareArgs) -> Output {
    let vhost = &args.vhost.vhost;
    let mut arguments = arguments_object(&args.arguments);
    let mut durable = args.durable;
    if let (Some(t), Value::Object(map)) = (&args.queue_type, &mut arguments) {
        map.insert("x-queue-type".to_string(), Value::String(t.clone()));
        durable |= t == "quorum" || t == "stream";
    }
    let body = json!({"durable": durable, "auto_delete": args.auto_delete, "arguments": arguments});
    let what = in_vhost("queue", &args.name, vhost);
    client.put(
        &queue_path(vhost, &args.name),
        &body,
        &format!("vhost '{vhost}'"),
    )?;
    Ok(format!("declared {what}\n"))
}

fn delete(client: &Client, args: &DeleteArgs) -> Output {
    let vhost = &args.vhost.vhost;
    let mut query = Vec::new();
    if args.if_unused {
        query.push("if-unused=true");
    }
    if args.if_empty {
        query.push("if-empty=true");
    }
    let mut path = queue_path(vhost, &args.name);
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let what = in_vhost("queue", &args.name, vhost);
    client.delete(&path, &[], &what)?;
    Ok(format!("deleted {what}\n"))
}

fn purge(client: &Client, args: &NameArgs) -> Output {
    let vhost = &args.vhost.vhost;
    let what = in_vhost("queue", &args.name, vhost);
    client.delete(
        &format!("{}/contents", queue_path(vhost, &args.name)),
        &[],
        &what,
    )?;
    Ok(format!("purged {what}\n"))
}
