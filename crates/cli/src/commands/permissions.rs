//! `permissions list|set|clear`.

use clap::{Args, Subcommand};
use serde_json::json;

use super::{list, ListArgs, Output, VhostArg};
use crate::client::{seg, Client};
use crate::columns::{col, Column, ColumnSet};

const KNOWN: &[Column] = &[
    col("user"),
    col("vhost"),
    col("configure"),
    col("write"),
    col("read"),
];

/// The columns of `permissions list`.
pub const COLUMNS: ColumnSet = ColumnSet {
    resource: "permissions",
    known: KNOWN,
    defaults: &["user", "vhost", "configure", "write", "read"],
};

/// The permission subcommands.
#[derive(Subcommand, Debug)]
pub enum PermissionsCommand {
    /// List permissions (of every user in every vhost, or in --vhost)
    List(ListArgs),
    /// Set a user's permissions in a vhost (regular expressions, as rabbitmqctl set_permissions)
    Set(SetArgs),
    /// Remove a user's permissions in a vhost
    Clear(UserArgs),
}

/// Arguments of `permissions set`.
#[derive(Args, Debug)]
pub struct SetArgs {
    /// User name
    #[arg(id = "username", value_name = "USER")]
    pub user: String,
    /// Configure permission (regular expression)
    pub configure: String,
    /// Write permission (regular expression)
    pub write: String,
    /// Read permission (regular expression)
    pub read: String,
    #[command(flatten)]
    pub vhost: VhostArg,
}

/// A user in a vhost.
#[derive(Args, Debug)]
pub struct UserArgs {
    /// User name
    #[arg(id = "username", value_name = "USER")]
    pub user: String,
    #[command(flatten)]
    pub vhost: VhostArg,
}

/// Runs one permission subcommand.
pub fn run(client: &Client, cmd: &PermissionsCommand) -> Output {
    match cmd {
        PermissionsCommand::List(args) => list(client, &COLUMNS, args, "permissions", |v| {
            format!("vhosts/{v}/permissions")
        }),
        PermissionsCommand::Set(args) => {
            let body = json!({"configure": args.configure, "write": args.write, "read": args.read});
            let what = format!("user '{}' or vhost '{}'", args.user, args.vhost.vhost);
            client.put(&path(&args.vhost.vhost, &args.user), &body, &what)?;
            Ok(format!(
                "set permissions of user '{}' in vhost '{}'\n",
                args.user, args.vhost.vhost
            ))
        }
        PermissionsCommand::Clear(args) => {
            let what = format!(
                "permissions of user '{}' in vhost '{}'",
                args.user, args.vhost.vhost
            );
            client.delete(&path(&args.vhost.vhost, &args.user), &[], &what)?;
            Ok(format!("cleared {what}\n"))
        }
    }
}

fn path(vhost: &str, user: &str) -> String {
    format!("permissions/{}/{}", seg(vhost), seg(user))
}
