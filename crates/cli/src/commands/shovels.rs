//! `shovels` (rabbitmqctl shovel_status: the shovels with their state, source,
//! destination and counters) and `shovel add|delete|restart` (rabbitmqctl
//! set_parameter shovel, delete_shovel and restart_shovel).

use clap::{Args, Subcommand};
use serde_json::Value;

use super::{list, ListArgs, Output, VhostArg};
use crate::client::{seg, Client};
use crate::columns::{col, Column, ColumnSet};
use crate::error::CliError;

const KNOWN: &[Column] = &[
    col("name"),
    col("vhost"),
    col("type"),
    col("state"),
    Column {
        name: "source",
        path: "src_uri",
    },
    Column {
        name: "destination",
        path: "dest_uri",
    },
    Column {
        name: "termination_reason",
        path: "reason",
    },
    Column {
        name: "source_protocol",
        path: "src_protocol",
    },
    Column {
        name: "destination_protocol",
        path: "dest_protocol",
    },
    Column {
        name: "last_changed",
        path: "timestamp",
    },
    Column {
        name: "source_queue",
        path: "src_queue",
    },
    Column {
        name: "source_exchange",
        path: "src_exchange",
    },
    Column {
        name: "destination_queue",
        path: "dest_queue",
    },
    Column {
        name: "destination_exchange",
        path: "dest_exchange",
    },
    col("remaining"),
    col("remaining_unacked"),
    col("pending"),
    col("forwarded"),
    col("node"),
    col("ack_mode"),
];

/// The columns of `shovels`.
pub const COLUMNS: ColumnSet = ColumnSet {
    resource: "shovels",
    known: KNOWN,
    defaults: &[
        "name",
        "vhost",
        "type",
        "state",
        "source",
        "destination",
        "termination_reason",
        "forwarded",
    ],
};

/// Lists the shovels.
pub fn run_list(client: &Client, args: &ListArgs) -> Output {
    list(client, &COLUMNS, args, "shovels", |v| {
        format!("shovels/{v}")
    })
}

/// The shovel subcommands.
#[derive(Subcommand, Debug)]
pub enum ShovelCommand {
    /// Create or replace a dynamic shovel: NAME VALUE (RabbitMQ's shovel parameter, a
    /// JSON object, e.g. '{"src-uri":"amqp://","src-queue":"a","dest-uri":"amqp://","dest-queue":"b"}')
    Add(AddArgs),
    /// Delete a shovel (its parameter)
    Delete(NameArgs),
    /// Restart a shovel (reconnects both sides)
    Restart(NameArgs),
}

/// Arguments of `shovel add`.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// Shovel name
    pub name: String,
    /// The shovel's definition, a JSON object with RabbitMQ's keys
    pub value: String,
    #[command(flatten)]
    pub vhost: VhostArg,
}

/// A shovel in a vhost.
#[derive(Args, Debug)]
pub struct NameArgs {
    /// Shovel name
    pub name: String,
    #[command(flatten)]
    pub vhost: VhostArg,
}

/// Runs one shovel subcommand.
pub fn run(client: &Client, cmd: &ShovelCommand) -> Output {
    match cmd {
        ShovelCommand::Add(a) => {
            let value: Value = serde_json::from_str(&a.value)
                .map_err(|e| CliError::Usage(format!("the value is not a JSON object: {e}")))?;
            let body = serde_json::json!({ "value": value });
            let what = format!("vhost '{}'", a.vhost.vhost);
            client.put(&param_path(&a.vhost.vhost, &a.name), &body, &what)?;
            Ok(format!(
                "set shovel '{}' in vhost '{}'\n",
                a.name, a.vhost.vhost
            ))
        }
        ShovelCommand::Delete(a) => {
            let what = format!("shovel '{}' in vhost '{}'", a.name, a.vhost.vhost);
            client.delete(&param_path(&a.vhost.vhost, &a.name), &[], &what)?;
            Ok(format!("deleted {what}\n"))
        }
        ShovelCommand::Restart(a) => {
            let what = format!("shovel '{}' in vhost '{}'", a.name, a.vhost.vhost);
            let path = format!(
                "shovels/vhost/{}/{}/restart",
                seg(&a.vhost.vhost),
                seg(&a.name)
            );
            client.delete(&path, &[], &what)?;
            Ok(format!("restarted {what}\n"))
        }
    }
}

fn param_path(vhost: &str, name: &str) -> String {
    format!("parameters/shovel/{}/{}", seg(vhost), seg(name))
}
