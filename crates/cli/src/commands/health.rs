//! `health`: the management API's health checks (`/api/health/checks/...` and
//! `/api/aliveness-test/{vhost}`), for scripts and probes. A healthy check prints "ok"
//! and exits 0; an unhealthy one prints the broker's reason on stderr and exits 69
//! (EX_UNAVAILABLE), as `rabbitmq-diagnostics check_*` do, so `broker-cli health alarms
//! || alert` works. Other failures keep their usual codes (3 unreachable, 4 credentials).

use clap::Subcommand;
use serde_json::Value;

use super::Output;
use crate::client::{seg, Client};
use crate::error::CliError;

/// The checks.
#[derive(Subcommand, Debug)]
pub enum HealthCommand {
    /// No resource alarm (memory, disk) in effect anywhere in the cluster
    Alarms,
    /// No resource alarm in effect on this node
    LocalAlarms,
    /// A listener of the broker is up on this port
    PortListener {
        /// TCP port
        port: u16,
    },
    /// A listener for this protocol is up (amqp, amqp/ssl or amqps, http, https)
    ProtocolListener {
        /// Protocol name, as RabbitMQ names it
        protocol: String,
    },
    /// Every virtual host is running
    VirtualHosts,
    /// No quorum queue would lose its majority if this node stopped
    NodeIsQuorumCritical,
    /// The node is fully started and serving
    IsInService,
    /// The node is in service and an AMQP listener is up
    ReadyToServeClients,
    /// No certificate of a TLS listener (AMQPS, HTTPS) expires within the given time
    /// (as `rabbitmq-diagnostics check_certificate_expiration`)
    CertificateExpiration {
        /// How far ahead to look, in --unit
        #[arg(long, default_value_t = 4, allow_negative_numbers = true)]
        within: i64,
        /// days, weeks, months or years
        #[arg(long, default_value = "weeks")]
        unit: String,
    },
    /// Declares the `aliveness-test` queue, publishes to it and gets the message back
    Aliveness {
        /// Virtual host
        #[arg(long, short = 'p', default_value = "/")]
        vhost: String,
    },
}

/// The API path of a check.
fn path(cmd: &HealthCommand) -> String {
    let check = |name: &str| format!("health/checks/{name}");
    match cmd {
        HealthCommand::Alarms => check("alarms"),
        HealthCommand::LocalAlarms => check("local-alarms"),
        HealthCommand::PortListener { port } => check(&format!("port-listener/{port}")),
        HealthCommand::ProtocolListener { protocol } => {
            check(&format!("protocol-listener/{}", seg(protocol)))
        }
        HealthCommand::VirtualHosts => check("virtual-hosts"),
        HealthCommand::NodeIsQuorumCritical => check("node-is-quorum-critical"),
        HealthCommand::IsInService => check("is-in-service"),
        HealthCommand::ReadyToServeClients => check("ready-to-serve-clients"),
        HealthCommand::CertificateExpiration { within, unit } => {
            check(&format!("certificate-expiration/{within}/{}", seg(unit)))
        }
        HealthCommand::Aliveness { vhost } => format!("aliveness-test/{}", seg(vhost)),
    }
}

/// Runs one check.
pub fn run(client: &Client, cmd: &HealthCommand) -> Output {
    let path = path(cmd);
    let (healthy, body) = client.get_check(&path, &path)?;
    if healthy {
        return Ok("ok\n".to_string());
    }
    Err(CliError::Unhealthy(describe(&body)))
}

/// The reason and what the check found (alarms, missing listener), on one line.
fn describe(body: &Value) -> String {
    let mut text = body
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("unhealthy")
        .to_string();
    if let Some(alarms) = body.get("alarms").and_then(Value::as_array) {
        let names: Vec<String> = alarms
            .iter()
            .map(|a| {
                let resource = a.get("resource").and_then(Value::as_str).unwrap_or("?");
                let node = a.get("node").and_then(Value::as_str).unwrap_or("?");
                format!("{resource} on {node}")
            })
            .collect();
        text.push_str(&format!(": {}", names.join(", ")));
    }
    if let Some(missing) = body.get("missing") {
        let found = body.get("ports").or_else(|| body.get("protocols"));
        text.push_str(&format!(
            ": {missing} (listening: {})",
            found.unwrap_or(&Value::Null)
        ));
    }
    if let Some(expired) = body.get("expired").and_then(Value::as_array) {
        let listeners: Vec<String> = expired.iter().map(expiring_listener).collect();
        text.push_str(&format!(": {}", listeners.join("; ")));
    }
    text
}

/// One listener of the certificate-expiration check: its protocol and port, and each
/// file with what of it expires.
fn expiring_listener(l: &Value) -> String {
    let field = |k: &str| {
        l.get(k).map_or_else(String::new, |v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    let mut out = format!("{} port {}", field("protocol"), field("port"));
    for (file, dates) in [
        ("certfile", "certfile_expires_on"),
        ("cacertfile", "cacertfile_expires_on"),
    ] {
        match l.get(dates) {
            Some(Value::Array(a)) if a.is_empty() => {}
            None => {}
            Some(d) => out.push_str(&format!(", {} expires on {d}", field(file))),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_are_rabbitmqs() {
        assert_eq!(path(&HealthCommand::Alarms), "health/checks/alarms");
        assert_eq!(
            path(&HealthCommand::PortListener { port: 5672 }),
            "health/checks/port-listener/5672"
        );
        assert_eq!(
            path(&HealthCommand::ProtocolListener {
                protocol: "amqp/ssl".into()
            }),
            "health/checks/protocol-listener/amqp%2Fssl"
        );
        assert_eq!(
            path(&HealthCommand::Aliveness { vhost: "/".into() }),
            "aliveness-test/%2F"
        );
        assert_eq!(
            path(&HealthCommand::CertificateExpiration {
                within: 4,
                unit: "weeks".into()
            }),
            "health/checks/certificate-expiration/4/weeks"
        );
    }

    #[test]
    fn reasons_name_what_failed() {
        let b = json!({"status": "failed", "reason": "There are alarms in effect on the node",
            "alarms": [{"node": "broker@localhost", "resource": "memory"}]});
        assert_eq!(
            describe(&b),
            "There are alarms in effect on the node: memory on broker@localhost"
        );
        let b = json!({"status": "failed", "reason": "No active listener", "missing": 1,
            "ports": [5672, 15672]});
        assert_eq!(
            describe(&b),
            "No active listener: 1 (listening: [5672,15672])"
        );
        let b = json!({"status": "failed", "reason": "Certificates expiring", "expired": [
            {"protocol": "amqp/ssl", "port": 5671, "certfile": "/c.pem", "cacertfile": null,
             "certfile_expires_on": ["2025-03-01 9:05:07"], "cacertfile_expires_on": []}]});
        assert_eq!(
            describe(&b),
            "Certificates expiring: amqp/ssl port 5671, /c.pem expires on [\"2025-03-01 9:05:07\"]"
        );
    }
}
