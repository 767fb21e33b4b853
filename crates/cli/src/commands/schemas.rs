//! `schemas list|add|delete`: the broker's registry of named JSON Schemas
//! (`/api/schemas`), which exchanges name in their `x-schema` argument or a policy's
//! `schema` key to have their messages checked on publish.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{list, ListArgs, Output, VhostArg};
use crate::client::{seg, Client};
use crate::columns::{col, Column, ColumnSet};
use crate::error::CliError;

const KNOWN: &[Column] = &[col("vhost"), col("name"), col("description"), col("schema")];

/// The columns of `schemas list`.
pub const COLUMNS: ColumnSet = ColumnSet {
    resource: "schemas",
    known: KNOWN,
    defaults: &["vhost", "name", "description"],
};

/// The schema subcommands.
#[derive(Subcommand, Debug)]
pub enum SchemasCommand {
    /// List schemas (of every vhost, or of --vhost)
    List(ListArgs),
    /// Add or replace a schema: NAME and the schema as JSON text, or --file
    Add(AddArgs),
    /// Delete a schema (refused while an exchange or a policy names it)
    Delete(NameArgs),
}

/// Arguments of `schemas add`.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// Schema name
    pub name: String,
    /// The JSON Schema as JSON text, e.g. '{"type":"object","required":["id"]}'
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub schema: Option<String>,
    /// Read the JSON Schema from this file instead
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// What the schema is for
    #[arg(long, default_value = "")]
    pub description: String,
    #[command(flatten)]
    pub vhost: VhostArg,
}

/// A schema in a vhost.
#[derive(Args, Debug)]
pub struct NameArgs {
    /// Schema name
    pub name: String,
    #[command(flatten)]
    pub vhost: VhostArg,
}

/// The schema document of `schemas add`, from its argument or its file.
fn document(args: &AddArgs) -> Result<Value, CliError> {
    let text = match (&args.schema, &args.file) {
        (Some(s), _) => s.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", f.display())))?,
        (None, None) => return Err(CliError::Usage("give the schema or --file".into())),
    };
    serde_json::from_str(&text).map_err(|e| CliError::Usage(format!("the schema is not JSON: {e}")))
}

/// Runs one schema subcommand.
pub fn run(client: &Client, cmd: &SchemasCommand) -> Output {
    match cmd {
        SchemasCommand::List(args) => list(client, &COLUMNS, args, "schemas", |v| {
            format!("schemas/{v}")
        }),
        SchemasCommand::Add(args) => {
            let body = json!({"schema": document(args)?, "description": args.description});
            let what = format!("vhost '{}'", args.vhost.vhost);
            client.put(&path(&args.vhost.vhost, &args.name), &body, &what)?;
            Ok(format!(
                "added schema '{}' in vhost '{}'\n",
                args.name, args.vhost.vhost
            ))
        }
        SchemasCommand::Delete(args) => {
            let what = format!("schema '{}' in vhost '{}'", args.name, args.vhost.vhost);
            client.delete(&path(&args.vhost.vhost, &args.name), &[], &what)?;
            Ok(format!("deleted {what}\n"))
        }
    }
}

fn path(vhost: &str, name: &str) -> String {
    format!("schemas/{}/{}", seg(vhost), seg(name))
}
