//! `definitions export|import`: the broker's users, vhosts, permissions, queues,
//! exchanges, bindings, policies and parameters as one JSON document.

use std::io::Read;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::Value;

use super::Output;
use crate::client::{seg, Client};
use crate::error::CliError;
use crate::output::pretty;

/// The definitions subcommands.
#[derive(Subcommand, Debug)]
pub enum DefinitionsCommand {
    /// Print the definitions as JSON (or write them to --file)
    Export(ExportArgs),
    /// Load definitions from a JSON file (or stdin)
    Import(ImportArgs),
}

/// Arguments of `definitions export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write to this file instead of stdout
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// Only this virtual host's definitions
    #[arg(long, short = 'p')]
    pub vhost: Option<String>,
}

/// Arguments of `definitions import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// JSON file to load ("-" or nothing: stdin)
    pub file: Option<PathBuf>,
    /// Load into this virtual host only (the file then holds one vhost's definitions)
    #[arg(long, short = 'p')]
    pub vhost: Option<String>,
}

/// Runs one definitions subcommand.
pub fn run(client: &Client, cmd: &DefinitionsCommand) -> Output {
    match cmd {
        DefinitionsCommand::Export(args) => export(client, args),
        DefinitionsCommand::Import(args) => import(client, args),
    }
}

fn api_path(vhost: &Option<String>) -> (String, String) {
    match vhost {
        Some(v) => (format!("definitions/{}", seg(v)), format!("vhost '{v}'")),
        None => ("definitions".to_string(), "definitions".to_string()),
    }
}

fn export(client: &Client, args: &ExportArgs) -> Output {
    let (path, what) = api_path(&args.vhost);
    let text = pretty(&client.get(&path, &what)?);
    match &args.file {
        Some(file) => {
            std::fs::write(file, text)
                .map_err(|e| CliError::Other(format!("cannot write {}: {e}", file.display())))?;
            Ok(format!("exported definitions to {}\n", file.display()))
        }
        None => Ok(text),
    }
}

fn import(client: &Client, args: &ImportArgs) -> Output {
    let (text, source) = match &args.file {
        Some(f) if f.as_os_str() != "-" => (
            std::fs::read_to_string(f)
                .map_err(|e| CliError::Other(format!("cannot read {}: {e}", f.display())))?,
            f.display().to_string(),
        ),
        _ => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::Other(format!("cannot read stdin: {e}")))?;
            (text, "stdin".to_string())
        }
    };
    let definitions: Value = serde_json::from_str(&text)
        .map_err(|e| CliError::Other(format!("{source} is not valid JSON: {e}")))?;
    if !definitions.is_object() {
        return Err(CliError::Other(format!(
            "{source} is not a JSON object of definitions"
        )));
    }
    let (path, what) = api_path(&args.vhost);
    client.post(&path, &definitions, &what)?;
    Ok(format!("imported definitions from {source}\n"))
}
