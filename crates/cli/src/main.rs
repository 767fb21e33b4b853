//! broker-cli: manage the broker through its management HTTP API (RabbitMQ's paths
//! and JSON fields, so it works against RabbitMQ's management plugin too).
//!
//! This file holds the command line (clap) and the exit-code handling; `client`
//! talks HTTP, `output` renders lists, and `commands/` has one module per resource.
//!
//! Exit codes: 0 ok, 1 other error, 2 usage, 3 broker unreachable, 4 wrong
//! credentials, 5 not found, 6 refused, 69 a health check found the broker unhealthy.
//! Errors are one line on stderr.

mod client;
mod columns;
mod commands;
mod config;
mod error;
mod output;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::client::Client;
use crate::commands::{
    bindings::BindingsCommand, channels::ChannelsCommand, connections::ConnectionsCommand,
    consumers::ConsumersCommand, definitions::DefinitionsCommand, exchanges::ExchangesCommand,
    health::HealthCommand, permissions::PermissionsCommand, policies::PoliciesCommand,
    queues::QueuesCommand, status::StatusArgs, streams::StreamsCommand, users::UsersCommand,
    vhosts::VhostsCommand, Output,
};
use crate::config::Overrides;

/// Manage the broker through its management HTTP API.
#[derive(Parser, Debug)]
#[command(name = "broker-cli", version, about, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 ok, 1 other error, 2 usage, 3 broker unreachable, \
4 wrong credentials, 5 not found, 6 refused by the broker, 69 unhealthy (health)."
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Where the API is and who logs in; flags beat environment variables beat the config file.
#[derive(Args, Debug)]
#[command(next_help_heading = "Connection (any command)")]
struct GlobalArgs {
    /// Management API base URL [default: http://127.0.0.1:15672]
    #[arg(long, env = "BROKER_CLI_URL", global = true)]
    url: Option<String>,
    /// User name [default: guest]
    #[arg(long, env = "BROKER_CLI_USER", global = true)]
    user: Option<String>,
    /// Password [default: guest]
    #[arg(
        long,
        env = "BROKER_CLI_PASSWORD",
        hide_env_values = true,
        global = true
    )]
    password: Option<String>,
    /// PEM file of the CA that signed the API's certificate, for an https:// --url
    #[arg(long, env = "BROKER_CLI_CACERT", global = true, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// TOML file with url, user, password, cacert [default: ~/.config/broker-cli.toml if present]
    #[arg(long, env = "BROKER_CLI_CONFIG", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Queues: list, declare, delete, purge, get messages
    #[command(subcommand)]
    Queues(QueuesCommand),
    /// Partitioned streams (super streams): add-partitioned, delete-partitioned,
    /// list-partitioned
    #[command(subcommand)]
    Streams(StreamsCommand),
    /// Exchanges: list, declare, delete
    #[command(subcommand)]
    Exchanges(ExchangesCommand),
    /// Bindings: list, add, delete
    #[command(subcommand)]
    Bindings(BindingsCommand),
    /// Client connections: list, close
    #[command(subcommand)]
    Connections(ConnectionsCommand),
    /// Channels: list
    #[command(subcommand)]
    Channels(ChannelsCommand),
    /// Consumers: list
    #[command(subcommand)]
    Consumers(ConsumersCommand),
    /// Virtual hosts: list, add, delete
    #[command(subcommand)]
    Vhosts(VhostsCommand),
    /// Users: list, add, delete, set-password, set-tags
    #[command(subcommand)]
    Users(UsersCommand),
    /// Permissions of users in virtual hosts: list, set, clear
    #[command(subcommand)]
    Permissions(PermissionsCommand),
    /// Policies and operator policies: list, set, clear
    #[command(subcommand)]
    Policies(PoliciesCommand),
    /// Dynamic shovels with their state, source, destination and counters
    /// (rabbitmqctl shovel_status)
    Shovels(commands::ListArgs),
    /// A dynamic shovel: add, delete, restart
    #[command(subcommand)]
    Shovel(commands::shovels::ShovelCommand),
    /// JSON Schemas that exchanges check messages with: list, add, delete
    #[command(subcommand)]
    Schemas(commands::schemas::SchemasCommand),
    /// Definitions (the whole configuration as JSON): export, import
    #[command(subcommand)]
    Definitions(DefinitionsCommand),
    /// Broker summary: product, version, node, object and message counts
    Status(StatusArgs),
    /// Sets the memory alarm's threshold until the broker restarts (a fraction of the
    /// available memory, 0.6, or a size, 2GB)
    SetMemoryHighWatermark(commands::memory::SetWatermarkArgs),
    /// Health checks: alarms, local-alarms, port-listener, protocol-listener,
    /// virtual-hosts, aliveness... (exit 69 when unhealthy)
    #[command(subcommand)]
    Health(HealthCommand),
    /// The cluster: status (nodes, running, metadata leader)
    #[command(subcommand)]
    Cluster(commands::cluster::ClusterCommand),
}

fn run(cli: &Cli) -> Output {
    let overrides = Overrides {
        url: cli.global.url.clone(),
        user: cli.global.user.clone(),
        password: cli.global.password.clone(),
        config: cli.global.config.clone(),
        cacert: cli.global.cacert.clone(),
    };
    let settings = config::resolve(&overrides)?;
    let client = Client::new(&settings)?;
    match &cli.command {
        Command::Queues(c) => commands::queues::run(&client, c),
        Command::Exchanges(c) => commands::exchanges::run(&client, c),
        Command::Streams(c) => commands::streams::run(&client, c),
        Command::Bindings(c) => commands::bindings::run(&client, c),
        Command::Connections(c) => commands::connections::run(&client, c),
        Command::Channels(c) => commands::channels::run(&client, c),
        Command::Consumers(c) => commands::consumers::run(&client, c),
        Command::Vhosts(c) => commands::vhosts::run(&client, c),
        Command::Users(c) => commands::users::run(&client, c),
        Command::Permissions(c) => commands::permissions::run(&client, c),
        Command::Policies(c) => commands::policies::run(&client, c),
        Command::Schemas(c) => commands::schemas::run(&client, c),
        Command::Definitions(c) => commands::definitions::run(&client, c),
        Command::Shovels(a) => commands::shovels::run_list(&client, a),
        Command::Shovel(c) => commands::shovels::run(&client, c),
        Command::Status(a) => commands::status::run(&client, a),
        Command::SetMemoryHighWatermark(a) => commands::memory::run(&client, a),
        Command::Health(c) => commands::health::run(&client, c),
        Command::Cluster(c) => commands::cluster::run(&client, c),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(text) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`broker-cli queues list | head -1`) is not an error.
            match stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("broker-cli: cannot write the output: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Err(e) => {
            eprintln!("broker-cli: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn list_flags_parse() {
        let cli = Cli::try_parse_from([
            "broker-cli",
            "queues",
            "list",
            "--vhost",
            "/",
            "--format",
            "tsv",
            "--columns",
            "name,messages",
            "--url",
            "http://x:1",
        ])
        .unwrap();
        assert_eq!(cli.global.url.as_deref(), Some("http://x:1"));
        match cli.command {
            Command::Queues(QueuesCommand::List(args)) => {
                assert_eq!(args.list.vhost.as_deref(), Some("/"));
                assert_eq!(
                    args.list.columns,
                    Some(vec!["name".to_string(), "messages".to_string()])
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn positional_user_does_not_clash_with_global_user() {
        let cli = Cli::try_parse_from([
            "broker-cli",
            "--user",
            "admin",
            "permissions",
            "set",
            "bob",
            "c",
            "w",
            "r",
        ])
        .unwrap();
        assert_eq!(cli.global.user.as_deref(), Some("admin"));
        match cli.command {
            Command::Permissions(PermissionsCommand::Set(args)) => assert_eq!(args.user, "bob"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bad_argument_is_a_usage_error() {
        let err = Cli::try_parse_from([
            "broker-cli",
            "queues",
            "declare",
            "q",
            "--argument",
            "novalue",
        ])
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
