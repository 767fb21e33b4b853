//! `connections list|close`.

use clap::{Args, Subcommand};

use super::{list, ListArgs, Output};
use crate::client::{seg, Client};
use crate::columns::{col, Column, ColumnSet};

const KNOWN: &[Column] = &[
    col("name"),
    col("user"),
    col("vhost"),
    col("peer_host"),
    col("peer_port"),
    col("host"),
    col("port"),
    col("state"),
    col("channels"),
    col("protocol"),
    col("auth_mechanism"),
    col("ssl"),
    col("ssl_protocol"),
    col("ssl_key_exchange"),
    col("ssl_cipher"),
    col("ssl_hash"),
    col("peer_cert_subject"),
    col("peer_cert_issuer"),
    col("peer_cert_validity"),
    col("timeout"),
    col("frame_max"),
    col("channel_max"),
    col("client_properties"),
    col("recv_oct"),
    col("recv_cnt"),
    col("send_oct"),
    col("send_cnt"),
    col("send_pend"),
    col("connected_at"),
    col("node"),
    col("type"),
    col("user_provided_name"),
    col("user_who_performed_action"),
    col("reductions"),
    col("garbage_collection"),
];

/// The columns of `connections list`.
pub const COLUMNS: ColumnSet = ColumnSet {
    resource: "connections",
    known: KNOWN,
    defaults: &[
        "name",
        "user",
        "peer_host",
        "peer_port",
        "state",
        "channels",
    ],
};

/// The connection subcommands.
#[derive(Subcommand, Debug)]
pub enum ConnectionsCommand {
    /// List client connections
    List(ListArgs),
    /// Close a client connection
    Close(CloseArgs),
}

/// Arguments of `connections close`.
#[derive(Args, Debug)]
pub struct CloseArgs {
    /// Connection name, as `connections list` shows it
    pub name: String,
    /// Reason given to the client
    #[arg(long)]
    pub reason: Option<String>,
}

/// Runs one connection subcommand.
pub fn run(client: &Client, cmd: &ConnectionsCommand) -> Output {
    match cmd {
        ConnectionsCommand::List(args) => list(client, &COLUMNS, args, "connections", |v| {
            format!("vhosts/{v}/connections")
        }),
        ConnectionsCommand::Close(args) => close(client, args),
    }
}

fn close(client: &Client, args: &CloseArgs) -> Output {
    let what = format!("connection '{}'", args.name);
    let headers: Vec<(&str, &str)> = args
        .reason
        .iter()
        .map(|r| ("X-Reason", r.as_str()))
        .collect();
    client.delete(&format!("connections/{}", seg(&args.name)), &headers, &what)?;
    Ok(format!("closed {what}\n"))
}
