//! `cluster status`: the nodes of the cluster as the broker the CLI talks to sees them
//! (`GET /api/nodes`): each node, whether it runs, whether it is a member (voter) of the
//! metadata group, and which node leads that group (what `rabbitmqctl cluster_status`
//! and, for Khepri's metadata store, `rabbitmq-diagnostics metadata_store_status` tell).

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::Output;
use crate::client::Client;
use crate::output::{cell, Format};

/// `cluster` subcommands.
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Every node, running or not, and the metadata group's leader
    Status(StatusArgs),
}

/// Arguments of `cluster status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Same as --format json
    #[arg(long)]
    pub json: bool,
}

/// Runs a `cluster` subcommand.
pub fn run(client: &Client, cmd: &ClusterCommand) -> Output {
    match cmd {
        ClusterCommand::Status(a) => {
            let nodes = client.get_list("nodes", "nodes")?;
            let format = if a.json { Format::Json } else { a.format };
            Ok(render(&status(&nodes), format))
        }
    }
}

/// The status from `/api/nodes`: `{"nodes": [{name, running, member, leader}], "leader"}`.
/// A broker without a cluster lists itself only: running, the member and leader of its
/// group of one.
pub fn status(nodes: &[Value]) -> Value {
    let alone = nodes.len() == 1 && nodes[0].get("metadata_leader").is_none();
    let flag = |n: &Value, key: &str| n.get(key).and_then(Value::as_bool).unwrap_or(alone);
    let rows: Vec<Value> = nodes
        .iter()
        .map(|n| {
            json!({
                "name": n.get("name").cloned().unwrap_or(Value::Null),
                "running": n.get("running").and_then(Value::as_bool).unwrap_or(false),
                "member": flag(n, "metadata_member"),
                "leader": flag(n, "metadata_leader"),
            })
        })
        .collect();
    let leader = rows
        .iter()
        .find(|r| r["leader"] == true)
        .map_or(Value::Null, |r| r["name"].clone());
    json!({ "nodes": rows, "leader": leader })
}

/// The status as a table (one row per node, then the leader), TSV, or JSON.
fn render(status: &Value, format: Format) -> String {
    if format == Format::Json {
        return format!("{status:#}\n");
    }
    let header = ["name", "running", "member", "leader"];
    let rows: Vec<Vec<String>> = status["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| header.iter().map(|h| cell(&n[*h])).collect())
                .collect()
        })
        .unwrap_or_default();
    let mut out = String::new();
    if format == Format::Tsv {
        out.push_str(&header.join("\t"));
        out.push('\n');
        for r in &rows {
            out.push_str(&r.join("\t"));
            out.push('\n');
        }
        return out;
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    out.push_str(&line(header.to_vec()));
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    match status["leader"].as_str() {
        Some(l) => out.push_str(&format!("metadata leader: {l}\n")),
        None => out.push_str("metadata leader: none known\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_shows_members_and_leader() {
        let nodes = vec![
            json!({"name": "a", "running": true, "metadata_member": true, "metadata_leader": false}),
            json!({"name": "b", "running": false, "metadata_member": true, "metadata_leader": true}),
        ];
        let s = status(&nodes);
        assert_eq!(s["leader"], "b");
        let table = render(&s, Format::Table);
        assert!(
            table.starts_with("name  running  member  leader\n"),
            "{table}"
        );
        assert!(table.contains("b     false    true    true\n"), "{table}");
        assert!(table.ends_with("metadata leader: b\n"));
    }

    #[test]
    fn a_single_broker_leads_its_group_of_one() {
        let s = status(&[json!({"name": "n@h", "running": true})]);
        assert_eq!(s["leader"], "n@h");
        assert_eq!(s["nodes"][0]["member"], true);
    }
}
