//! `exchanges list|declare|delete`.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{arguments_object, in_vhost, list, parse_argument, ListArgs, Output, VhostArg};
use crate::client::{seg, Client};
use crate::columns::{col, Column, ColumnSet};

const KNOWN: &[Column] = &[
    col("name"),
    col("vhost"),
    col("type"),
    col("durable"),
    col("auto_delete"),
    col("internal"),
    col("arguments"),
    col("policy"),
    col("user_who_performed_action"),
    col("message_stats"),
    col("schema"),
    col("schema_status"),
];

/// The columns of `exchanges list`.
pub const COLUMNS: ColumnSet = ColumnSet {
    resource: "exchanges",
    known: KNOWN,
    defaults: &[
        "name",
        "type",
        "durable",
        "auto_delete",
        "internal",
        "arguments",
    ],
};

/// The exchange subcommands.
#[derive(Subcommand, Debug)]
pub enum ExchangesCommand {
    /// List exchanges
    List(ListArgs),
    /// Declare an exchange (succeeds if an equivalent exchange exists)
    Declare(DeclareArgs),
    /// Delete an exchange
    Delete(DeleteArgs),
}

/// Arguments of `exchanges declare`.
#[derive(Args, Debug)]
pub struct DeclareArgs {
    /// Exchange name
    pub name: String,
    #[command(flatten)]
    pub vhost: VhostArg,
    /// Exchange type: direct, fanout, topic, headers, ...
    #[arg(long = "type", short = 't', default_value = "direct")]
    pub exchange_type: String,
    /// Survive a broker restart
    #[arg(long)]
    pub durable: bool,
    /// Delete the exchange when its last binding goes away
    #[arg(long)]
    pub auto_delete: bool,
    /// Only other exchanges may publish to it
    #[arg(long)]
    pub internal: bool,
    /// Exchange argument key=value (value parsed as JSON if it parses, else a string); repeatable
    #[arg(long = "argument", short = 'a', value_name = "KEY=VALUE", value_parser = parse_argument)]
    pub arguments: Vec<(String, Value)>,
}

/// Arguments of `exchanges delete`.
#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Exchange name
    pub name: String,
    #[command(flatten)]
    pub vhost: VhostArg,
    /// Only if the exchange has no bindings
    #[arg(long)]
    pub if_unused: bool,
}

/// Runs one exchange subcommand.
pub fn run(client: &Client, cmd: &ExchangesCommand) -> Output {
    match cmd {
        ExchangesCommand::List(args) => list(client, &COLUMNS, args, "exchanges", |v| {
            format!("exchanges/{v}")
        }),
        ExchangesCommand::Declare(args) => declare(client, args),
        ExchangesCommand::Delete(args) => delete(client, args),
    }
}

fn exchange_path(vhost: &str, name: &str) -> String {
    format!("exchanges/{}/{}", seg(vhost), seg(name))
}

fn declare(client: &Client, args: &DeclareArgs) -> Output {
    let vhost = &args.vhost.vhost;
    let body = json!({
        "type": args.exchange_type,
        "durable": args.durable,
        "auto_delete": args.auto_delete,
        "internal": args.internal,
        "arguments": arguments_object(&args.arguments),
    });
    client.put(
        &exchange_path(vhost, &args.name),
        &body,
        &format!("vhost '{vhost}'"),
    )?;
    Ok(format!(
        "declared {}\n",
        in_vhost("exchange", &args.name, vhost)
    ))
}

fn delete(client: &Client, args: &DeleteArgs) -> Output {
    let vhost = &args.vhost.vhost;
    let mut path = exchange_path(vhost, &args.name);
    if args.if_unused {
        path.push_str("?if-unused=true");
    }
    let what = in_vhost("exchange", &args.name, vhost);
    client.delete(&path, &[], &what)?;
    Ok(format!("deleted {what}\n"))
}
