//! `bindings list|add|delete`.
//!
//! Deleting a binding goes through its `properties_key`: the CLI lists the bindings
//! between the two ends, picks the one with the same routing key and arguments, and
//! deletes `/api/bindings/{vhost}/e/{source}/{q|e}/{destination}/{properties_key}`.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use super::{arguments_object, fetch, parse_argument, ListArgs, Output, VhostArg};
use crate::client::{seg, Client};
use crate::columns::{col, Column, ColumnSet};
use crate::error::CliError;
use crate::output::render;

const KNOWN: &[Column] = &[
    Column {
        name: "source_name",
        path: "source",
    },
    col("source_kind"),
    Column {
        name: "destination_name",
        path: "destination",
    },
    Column {
        name: "destination_kind",
        path: "destination_type",
    },
    col("routing_key"),
    col("arguments"),
    col("vhost"),
    col("properties_key"),
    col("source"),
    col("destination"),
    col("destination_type"),
];

/// The columns of `bindings list`.
pub const COLUMNS: ColumnSet = ColumnSet {
    resource: "bindings",
    known: KNOWN,
    defaults: &[
        "source_name",
        "source_kind",
        "destination_name",
        "destination_kind",
        "routing_key",
        "arguments",
    ],
};

/// The binding subcommands.
#[derive(Subcommand, Debug)]
pub enum BindingsCommand {
    /// List bindings
    List(ListArgs),
    /// Bind a queue (or an exchange) to an exchange
    Add(BindingArgs),
    /// Remove the binding with this routing key and these arguments
    Delete(BindingArgs),
}

/// What a binding is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DestinationKind {
    /// The destination is a queue
    Queue,
    /// The destination is an exchange (exchange-to-exchange binding)
    Exchange,
}

/// Arguments of `bindings add` and `bindings delete`.
#[derive(Args, Debug)]
pub struct BindingArgs {
    /// Source exchange
    pub source: String,
    /// Destination queue (or exchange, with --destination-type exchange)
    pub destination: String,
    #[command(flatten)]
    pub vhost: VhostArg,
    /// Kind of the destination
    #[arg(long, value_enum, default_value_t = DestinationKind::Queue)]
    pub destination_type: DestinationKind,
    /// Routing key (binding key)
    #[arg(long, short = 'k', default_value = "")]
    pub routing_key: String,
    /// Binding argument key=value (value parsed as JSON if it parses, else a string); repeatable
    #[arg(long = "argument", short = 'a', value_name = "KEY=VALUE", value_parser = parse_argument)]
    pub arguments: Vec<(String, Value)>,
}

/// Runs one binding subcommand.
pub fn run(client: &Client, cmd: &BindingsCommand) -> Output {
    match cmd {
        BindingsCommand::List(args) => list(client, args),
        BindingsCommand::Add(args) => add(client, args),
        BindingsCommand::Delete(args) => delete(client, args),
    }
}

fn list(client: &Client, args: &ListArgs) -> Output {
    let columns = COLUMNS.select(args.columns.as_deref())?;
    let mut rows = fetch(client, args, "bindings", |v| format!("bindings/{v}"))?;
    // rabbitmqctl's source_kind: the source of a binding is always an exchange.
    for row in &mut rows {
        if let Value::Object(map) = row {
            map.entry("source_kind")
                .or_insert_with(|| json!("exchange"));
        }
    }
    Ok(render(&rows, &columns, args.format))
}

/// `bindings/{vhost}/e/{source}/{q|e}/{destination}`.
fn pair_path(args: &BindingArgs) -> String {
    let kind = match args.destination_type {
        DestinationKind::Queue => "q",
        DestinationKind::Exchange => "e",
    };
    format!(
        "bindings/{}/e/{}/{kind}/{}",
        seg(&args.vhost.vhost),
        seg(&args.source),
        seg(&args.destination)
    )
}

fn describe(args: &BindingArgs) -> String {
    let kind = match args.destination_type {
        DestinationKind::Queue => "queue",
        DestinationKind::Exchange => "exchange",
    };
    format!(
        "binding from exchange '{}' to {kind} '{}' with routing key '{}' in vhost '{}'",
        args.source, args.destination, args.routing_key, args.vhost.vhost
    )
}

fn add(client: &Client, args: &BindingArgs) -> Output {
    let body =
        json!({"routing_key": args.routing_key, "arguments": arguments_object(&args.arguments)});
    let ends = format!(
        "exchange '{}' or {}",
        args.source,
        describe_destination(args)
    );
    client.post(&pair_path(args), &body, &ends)?;
    Ok(format!("added {}\n", describe(args)))
}

fn describe_destination(args: &BindingArgs) -> String {
    let kind = match args.destination_type {
        DestinationKind::Queue => "queue",
        DestinationKind::Exchange => "exchange",
    };
    format!(
        "{kind} '{}' in vhost '{}'",
        args.destination, args.vhost.vhost
    )
}

fn delete(client: &Client, args: &BindingArgs) -> Output {
    let what = describe(args);
    let path = pair_path(args);
    let ends = format!(
        "exchange '{}' or {}",
        args.source,
        describe_destination(args)
    );
    let bindings = client.get_list(&path, &ends)?;
    let wanted = arguments_object(&args.arguments);
    let key = find_properties_key(&bindings, &args.routing_key, &wanted).ok_or_else(|| {
        CliError::NotFound {
            what: what.clone(),
            detail: None,
        }
    })?;
    client.delete(&format!("{path}/{}", seg(&key)), &[], &what)?;
    Ok(format!("deleted {what}\n"))
}

/// The `properties_key` of the binding with this routing key and these arguments.
fn find_properties_key(bindings: &[Value], routing_key: &str, arguments: &Value) -> Option<String> {
    let empty = json!({});
    bindings
        .iter()
        .find(|b| {
            let args = match b.get("arguments") {
                None | Some(Value::Null) => &empty,
                Some(Value::Array(a)) if a.is_empty() => &empty,
                Some(a) => a,
            };
            b.get("routing_key").and_then(Value::as_str) == Some(routing_key) && args == arguments
        })
        .and_then(|b| {
            b.get("properties_key")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_key_matches_key_and_arguments() {
        let bindings = vec![
            json!({"routing_key": "a.b", "arguments": {"x-foo": "bar"}, "properties_key": "a.b~EDqv5Q"}),
            json!({"routing_key": "a.b", "arguments": {}, "properties_key": "a.b"}),
            json!({"routing_key": "", "arguments": [], "properties_key": "~"}),
        ];
        assert_eq!(
            find_properties_key(&bindings, "a.b", &json!({})),
            Some("a.b".into())
        );
        assert_eq!(
            find_properties_key(&bindings, "a.b", &json!({"x-foo": "bar"})),
            Some("a.b~EDqv5Q".into())
        );
        assert_eq!(
            find_properties_key(&bindings, "", &json!({})),
            Some("~".into())
        );
        assert_eq!(find_properties_key(&bindings, "zz", &json!({})), None);
    }
}
