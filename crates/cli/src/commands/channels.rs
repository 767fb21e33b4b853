//! `channels list`.

use clap::Subcommand;

use super::{list, ListArgs, Output};
use crate::client::Client;
use crate::columns::{col, Column, ColumnSet};

const KNOWN: &[Column] = &[
    col("name"),
    Column {
        name: "connection",
        path: "connection_details.name",
    },
    col("connection_details"),
    col("number"),
    col("user"),
    col("vhost"),
    col("state"),
    col("transactional"),
    col("confirm"),
    col("consumer_count"),
    col("messages_unacknowledged"),
    col("messages_uncommitted"),
    col("acks_uncommitted"),
    col("messages_unconfirmed"),
    col("prefetch_count"),
    col("global_prefetch_count"),
    col("idle_since"),
    col("node"),
    col("message_stats"),
    col("reductions"),
    col("garbage_collection"),
];

/// The columns of `channels list`.
pub const COLUMNS: ColumnSet = ColumnSet {
    resource: "channels",
    known: KNOWN,
    defaults: &[
        "name",
        "connection",
        "number",
        "user",
        "consumer_count",
        "messages_unacknowledged",
        "prefetch_count",
    ],
};

/// The channel subcommands.
#[derive(Subcommand, Debug)]
pub enum ChannelsCommand {
    /// List channels
    List(ListArgs),
}

/// Runs one channel subcommand.
pub fn run(client: &Client, cmd: &ChannelsCommand) -> Output {
    match cmd {
        ChannelsCommand::List(args) => list(client, &COLUMNS, args, "channels", |v| {
            format!("vhosts/{v}/channels")
        }),
    }
}
