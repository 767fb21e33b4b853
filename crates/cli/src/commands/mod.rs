//! The commands, one module per resource of the management API; this file holds
//! what they share: the list flags, `--argument key=value` parsing, list fetching.

pub mod bindings;
pub mod browse;
pub mod channels;
pub mod cluster;
pub mod connections;
pub mod consumers;
pub mod definitions;
pub mod exchanges;
pub mod health;
pub mod memory;
pub mod messages;
pub mod permissions;
pub mod policies;
pub mod queues;
pub mod schemas;
pub mod shovels;
pub mod status;
pub mod streams;
pub mod users;
pub mod vhosts;

use clap::Args;
use serde_json::{Map, Value};

use crate::client::{seg, Client};
use crate::columns::ColumnSet;
use crate::error::CliError;
use crate::output::{render, Format};

/// What a command prints on stdout when it succeeds.
pub type Output = Result<String, CliError>;

/// The flags every list command has.
#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    /// Only this virtual host
    #[arg(long, short = 'p')]
    pub vhost: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Columns to show, comma-separated (rabbitmqctl's names; nested fields with dots)
    #[arg(long, value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
}

/// The virtual host flag of commands that act on one object.
#[derive(Args, Debug, Clone)]
pub struct VhostArg {
    /// Virtual host
    #[arg(long, short = 'p', default_value = "/")]
    pub vhost: String,
}

/// Parses `key=value`; the value is JSON if it parses as JSON, else a string.
pub fn parse_argument(raw: &str) -> Result<(String, Value), String> {
    let (key, value) = raw
        .split_once('=')
        .ok_or_else(|| format!("'{raw}' is not key=value"))?;
    if key.is_empty() {
        return Err(format!("'{raw}' has an empty key"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
    Ok((key.to_string(), value))
}

/// Collects parsed `--argument`s into a JSON object.
pub fn arguments_object(args: &[(String, Value)]) -> Value {
    Value::Object(args.iter().cloned().collect::<Map<String, Value>>())
}

/// Fetches a list: `all` without `--vhost`, else `per_vhost(encoded vhost)`;
/// a 404 then means the vhost does not exist.
pub fn fetch(
    client: &Client,
    args: &ListArgs,
    all: &str,
    per_vhost: impl Fn(&str) -> String,
) -> Result<Vec<Value>, CliError> {
    match &args.vhost {
        Some(v) => client.get_list(&per_vhost(&seg(v)), &format!("vhost '{v}'")),
        None => client.get_list(all, all),
    }
}

/// Checks the columns, fetches the list and renders it: the whole of a plain list command.
pub fn list(
    client: &Client,
    set: &ColumnSet,
    args: &ListArgs,
    all: &str,
    per_vhost: impl Fn(&str) -> String,
) -> Output {
    let columns = set.select(args.columns.as_deref())?;
    let rows = fetch(client, args, all, per_vhost)?;
    Ok(render(&rows, &columns, args.format))
}

/// `'name' in vhost 'v'`, for messages.
pub fn in_vhost(kind: &str, name: &str, vhost: &str) -> String {
    format!("{kind} '{name}' in vhost '{vhost}'")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn argument_values_are_json_or_strings() {
        assert_eq!(
            parse_argument("x-max-length=5"),
            Ok(("x-max-length".into(), json!(5)))
        );
        assert_eq!(
            parse_argument("x-queue-mode=lazy"),
            Ok(("x-queue-mode".into(), json!("lazy")))
        );
        assert_eq!(
            parse_argument("flag=true"),
            Ok(("flag".into(), json!(true)))
        );
        assert_eq!(parse_argument("k=a=b"), Ok(("k".into(), json!("a=b"))));
        assert_eq!(parse_argument("k="), Ok(("k".into(), json!(""))));
        assert_eq!(
            parse_argument("k={\"a\":1}"),
            Ok(("k".into(), json!({"a": 1})))
        );
        assert!(parse_argument("novalue").is_err());
        assert!(parse_argument("=1").is_err());
    }

    #[test]
    fn arguments_become_an_object() {
        let args = vec![("a".to_string(), json!(1)), ("b".to_string(), json!("x"))];
        assert_eq!(arguments_object(&args), json!({"a": 1, "b": "x"}));
    }
}
