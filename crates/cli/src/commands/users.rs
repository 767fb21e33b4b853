//! `users list|add|delete|set-password|set-tags`.
//!
//! The API has one `PUT /api/users/{name}` that sets password and tags together, so
//! `set-password` keeps the tags read by a GET, and `set-tags` keeps the password by
//! sending back the `password_hash` (and `hashing_algorithm`) read by a GET.

use std::io::BufRead;

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::{fetch, ListArgs, Output};
use crate::client::{seg, Client};
use crate::columns::{col, Column, ColumnSet};
use crate::error::CliError;
use crate::output::render;

const KNOWN: &[Column] = &[
    col("name"),
    col("tags"),
    col("hashing_algorithm"),
    col("password_hash"),
    col("limits"),
];

/// The columns of `users list`.
pub const COLUMNS: ColumnSet = ColumnSet {
    resource: "users",
    known: KNOWN,
    defaults: &["name", "tags"],
};

/// The user subcommands.
#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// List users (with --vhost: those that have permissions there)
    List(ListArgs),
    /// Create a user (refused if it exists)
    Add(AddArgs),
    /// Delete a user
    Delete(NameArg),
    /// Change a user's password, keeping its tags
    SetPassword(PasswordArgs),
    /// Replace a user's tags, keeping its password (no tags: clear them)
    SetTags(TagsArgs),
}

/// Arguments of `users add`.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// User name
    pub name: String,
    /// Password (read from the first line of stdin when omitted)
    pub new_password: Option<String>,
    /// Tags, comma-separated (administrator, monitoring, management, ...)
    #[arg(long, default_value = "")]
    pub tags: String,
}

/// A user name.
#[derive(Args, Debug)]
pub struct NameArg {
    /// User name
    pub name: String,
}

/// Arguments of `users set-password`.
#[derive(Args, Debug)]
pub struct PasswordArgs {
    /// User name
    pub name: String,
    /// New password (read from the first line of stdin when omitted)
    pub new_password: Option<String>,
}

/// Arguments of `users set-tags`.
#[derive(Args, Debug)]
pub struct TagsArgs {
    /// User name
    pub name: String,
    /// Tags (separate arguments or comma-separated)
    pub tags: Vec<String>,
}

/// Runs one user subcommand.
pub fn run(client: &Client, cmd: &UsersCommand) -> Output {
    match cmd {
        UsersCommand::List(args) => list(client, args),
        UsersCommand::Add(args) => add(client, args),
        UsersCommand::Delete(args) => {
            let what = user_what(&args.name);
            client.delete(&user_path(&args.name), &[], &what)?;
            Ok(format!("deleted {what}\n"))
        }
        UsersCommand::SetPassword(args) => set_password(client, args),
        UsersCommand::SetTags(args) => set_tags(client, args),
    }
}

fn user_path(name: &str) -> String {
    format!("users/{}", seg(name))
}

fn user_what(name: &str) -> String {
    format!("user '{name}'")
}

fn list(client: &Client, args: &ListArgs) -> Output {
    let columns = COLUMNS.select(args.columns.as_deref())?;
    let mut users = client.get_list("users", "users")?;
    if args.vhost.is_some() {
        let permitted = fetch(client, args, "permissions", |v| {
            format!("vhosts/{v}/permissions")
        })?;
        let names: Vec<&str> = permitted
            .iter()
            .filter_map(|p| p.get("user").and_then(Value::as_str))
            .collect();
        users.retain(|u| {
            u.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| names.contains(&n))
        });
    }
    Ok(render(&users, &columns, args.format))
}

/// Tags given as separate or comma-separated words, as the API's comma-separated string.
pub fn join_tags(tags: &[String]) -> String {
    tags.iter()
        .flat_map(|t| t.split([',', ' ']))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

/// A user's tags from the API (a list in RabbitMQ 3.9+, a comma-separated string before).
fn tags_of(user: &Value) -> String {
    match user.get("tags") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

fn password_or_stdin(given: &Option<String>) -> Result<String, CliError> {
    if let Some(p) = given {
        return Ok(p.clone());
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::Other(format!("cannot read the password from stdin: {e}")))?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err(CliError::Usage(
            "no password given (as an argument or on stdin)".into(),
        ));
    }
    Ok(password)
}

fn add(client: &Client, args: &AddArgs) -> Output {
    let what = user_what(&args.name);
    match client.get(&user_path(&args.name), &what) {
        Ok(_) => {
            return Err(CliError::Conflict(format!(
                "{what} already exists (use users set-password or users set-tags)"
            )))
        }
        Err(CliError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    let password = password_or_stdin(&args.new_password)?;
    let body = json!({"password": password, "tags": join_tags(std::slice::from_ref(&args.tags))});
    client.put(&user_path(&args.name), &body, &what)?;
    Ok(format!("added {what}\n"))
}

fn set_password(client: &Client, args: &PasswordArgs) -> Output {
    let what = user_what(&args.name);
    let user = client.get(&user_path(&args.name), &what)?;
    let password = password_or_stdin(&args.new_password)?;
    let body = json!({"password": password, "tags": tags_of(&user)});
    client.put(&user_path(&args.name), &body, &what)?;
    Ok(format!("changed the password of {what}\n"))
}

fn set_tags(client: &Client, args: &TagsArgs) -> Output {
    let what = user_what(&args.name);
    let user = client.get(&user_path(&args.name), &what)?;
    client.put(
        &user_path(&args.name),
        &keep_password_body(&user, &join_tags(&args.tags)),
        &what,
    )?;
    Ok(format!("set the tags of {what}\n"))
}

/// A PUT body that sets `tags` and keeps the user's password hash and algorithm.
fn keep_password_body(user: &Value, tags: &str) -> Value {
    let mut body = Map::new();
    body.insert("tags".into(), json!(tags));
    let hash = user.get("password_hash").cloned().unwrap_or(json!(""));
    body.insert("password_hash".into(), hash);
    if let Some(alg) = user.get("hashing_algorithm").filter(|a| a.is_string()) {
        body.insert("hashing_algorithm".into(), alg.clone());
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_joined_with_commas() {
        let tags = vec![
            "administrator".to_string(),
            "monitoring,management".to_string(),
        ];
        assert_eq!(join_tags(&tags), "administrator,monitoring,management");
        assert_eq!(join_tags(&[]), "");
        assert_eq!(join_tags(&[" a , b ".to_string()]), "a,b");
    }

    #[test]
    fn tags_are_read_in_both_shapes() {
        assert_eq!(tags_of(&json!({"tags": ["a", "b"]})), "a,b");
        assert_eq!(tags_of(&json!({"tags": "a,b"})), "a,b");
        assert_eq!(tags_of(&json!({})), "");
    }

    #[test]
    fn set_tags_keeps_the_password_hash() {
        let user = json!({"name": "u", "password_hash": "H", "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []});
        assert_eq!(
            keep_password_body(&user, "monitoring"),
            json!({"tags": "monitoring", "password_hash": "H", "hashing_algorithm": "rabbit_password_hashing_sha256"})
        );
    }
}
