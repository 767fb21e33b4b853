//! `policies list|set|clear` (as rabbitmqctl list_policies, set_policy and clear_policy;
//! `--operator` for operator policies).

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{list, ListArgs, Output, VhostArg};
use crate::client::{seg, Client};
use crate::columns::{col, Column, ColumnSet};
use crate::error::CliError;

const KNOWN: &[Column] = &[
    col("vhost"),
    col("name"),
    col("pattern"),
    col("apply-to"),
    col("definition"),
    col("priority"),
];

/// The columns of `policies list`.
pub const COLUMNS: ColumnSet = ColumnSet {
    resource: "policies",
    known: KNOWN,
    defaults: &[
        "vhost",
        "name",
        "pattern",
        "apply-to",
        "definition",
        "priority",
    ],
};

/// The policy subcommands.
#[derive(Subcommand, Debug)]
pub enum PoliciesCommand {
    /// List policies (of every vhost, or of --vhost)
    List(PolicyListArgs),
    /// Set a policy: NAME PATTERN DEFINITION (a JSON object, as rabbitmqctl set_policy)
    Set(SetArgs),
    /// Remove a policy
    Clear(NameArgs),
}

/// Arguments of `policies list`.
#[derive(Args, Debug)]
pub struct PolicyListArgs {
    #[command(flatten)]
    pub list: ListArgs,
    /// Operator policies instead of policies
    #[arg(long)]
    pub operator: bool,
}

/// Arguments of `policies set`.
#[derive(Args, Debug)]
pub struct SetArgs {
    /// Policy name
    pub name: String,
    /// Regular expression matched against queue and exchange names
    pub pattern: String,
    /// Definition, a JSON object, e.g. '{"max-length":100}'
    pub definition: String,
    /// Higher wins when several policies match
    #[arg(long, default_value_t = 0)]
    pub priority: i64,
    /// queues, classic_queues, quorum_queues, streams, exchanges or all
    #[arg(long, default_value = "all")]
    pub apply_to: String,
    /// An operator policy instead of a policy
    #[arg(long)]
    pub operator: bool,
    #[command(flatten)]
    pub vhost: VhostArg,
}

/// A policy in a vhost.
#[derive(Args, Debug)]
pub struct NameArgs {
    /// Policy name
    pub name: String,
    /// An operator policy instead of a policy
    #[arg(long)]
    pub operator: bool,
    #[command(flatten)]
    pub vhost: VhostArg,
}

fn base(operator: bool) -> &'static str {
    if operator {
        "operator-policies"
    } else {
        "policies"
    }
}

/// Runs one policy subcommand.
pub fn run(client: &Client, cmd: &PoliciesCommand) -> Output {
    match cmd {
        PoliciesCommand::List(args) => {
            let b = base(args.operator);
            list(client, &COLUMNS, &args.list, b, |v| format!("{b}/{v}"))
        }
        PoliciesCommand::Set(args) => {
            let definition: Value = serde_json::from_str(&args.definition).map_err(|e| {
                CliError::Usage(format!("the definition is not a JSON object: {e}"))
            })?;
            let body = json!({"pattern": args.pattern, "definition": definition,
                "priority": args.priority, "apply-to": args.apply_to});
            let what = format!("vhost '{}'", args.vhost.vhost);
            let path = path(args.operator, &args.vhost.vhost, &args.name);
            client.put(&path, &body, &what)?;
            Ok(format!(
                "set policy '{}' in vhost '{}'\n",
                args.name, args.vhost.vhost
            ))
        }
        PoliciesCommand::Clear(args) => {
            let what = format!("policy '{}' in vhost '{}'", args.name, args.vhost.vhost);
            client.delete(
                &path(args.operator, &args.vhost.vhost, &args.name),
                &[],
                &what,
            )?;
            Ok(format!("cleared {what}\n"))
        }
    }
}

fn path(operator: bool, vhost: &str, name: &str) -> String {
    format!("{}/{}/{}", base(operator), seg(vhost), seg(name))
}
