//! `vhosts list|add|delete`.

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::{list, ListArgs, Output};
use crate::client::{seg, Client};
use crate::columns::{col, Column, ColumnSet};

const KNOWN: &[Column] = &[
    col("name"),
    col("description"),
    col("tags"),
    col("tracing"),
    col("default_queue_type"),
    col("messages"),
    col("messages_ready"),
    col("messages_unacknowledged"),
    col("recv_oct"),
    col("send_oct"),
    col("cluster_state"),
    col("metadata"),
    col("message_stats"),
];

/// The columns of `vhosts list`.
pub const COLUMNS: ColumnSet = ColumnSet {
    resource: "vhosts",
    known: KNOWN,
    defaults: &["name", "messages", "tracing"],
};

/// The virtual host subcommands.
#[derive(Subcommand, Debug)]
pub enum VhostsCommand {
    /// List virtual hosts (--vhost shows just that one)
    List(ListArgs),
    /// Create a virtual host (succeeds if it exists)
    Add(AddArgs),
    /// Delete a virtual host and everything in it
    Delete(NameArg),
}

/// Arguments of `vhosts add`.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// Virtual host name
    pub name: String,
    /// Description
    #[arg(long)]
    pub description: Option<String>,
    /// Tags, comma-separated
    #[arg(long)]
    pub tags: Option<String>,
}

/// A virtual host name.
#[derive(Args, Debug)]
pub struct NameArg {
    /// Virtual host name
    pub name: String,
}

/// Runs one virtual host subcommand.
pub fn run(client: &Client, cmd: &VhostsCommand) -> Output {
    match cmd {
        VhostsCommand::List(args) => {
            list(client, &COLUMNS, args, "vhosts", |v| format!("vhosts/{v}"))
        }
        VhostsCommand::Add(args) => add(client, args),
        VhostsCommand::Delete(args) => {
            let what = format!("vhost '{}'", args.name);
            client.delete(&format!("vhosts/{}", seg(&args.name)), &[], &what)?;
            Ok(format!("deleted {what}\n"))
        }
    }
}

fn add(client: &Client, args: &AddArgs) -> Output {
    let mut body = Map::new();
    if let Some(d) = &args.description {
        body.insert("description".into(), json!(d));
    }
    if let Some(t) = &args.tags {
        body.insert("tags".into(), json!(t));
    }
    let what = format!("vhost '{}'", args.name);
    client.put(
        &format!("vhosts/{}", seg(&args.name)),
        &Value::Object(body),
        &what,
    )?;
    Ok(format!("added {what}\n"))
}
