//! `consumers list`.

use clap::Subcommand;

use super::{list, ListArgs, Output};
use crate::client::Client;
use crate::columns::{col, Column, ColumnSet};

const KNOWN: &[Column] = &[
    Column {
        name: "queue_name",
        path: "queue.name",
    },
    col("queue"),
    col("consumer_tag"),
    Column {
        name: "channel",
        path: "channel_details.name",
    },
    col("channel_details"),
    col("ack_required"),
    col("prefetch_count"),
    col("exclusive"),
    col("active"),
    col("activity_status"),
    col("arguments"),
    Column {
        name: "vhost",
        path: "queue.vhost",
    },
    Column {
        name: "user",
        path: "channel_details.user",
    },
    Column {
        name: "connection",
        path: "channel_details.connection_name",
    },
];

/// The columns of `consumers list`.
pub const COLUMNS: ColumnSet = ColumnSet {
    resource: "consumers",
    known: KNOWN,
    defaults: &[
        "queue_name",
        "consumer_tag",
        "channel",
        "ack_required",
        "prefetch_count",
        "exclusive",
        "arguments",
    ],
};

/// The consumer subcommands.
#[derive(Subcommand, Debug)]
pub enum ConsumersCommand {
    /// List consumers
    List(ListArgs),
}

/// Runs one consumer subcommand.
pub fn run(client: &Client, cmd: &ConsumersCommand) -> Output {
    match cmd {
        ConsumersCommand::List(args) => list(client, &COLUMNS, args, "consumers", |v| {
            format!("consumers/{v}")
        }),
    }
}
