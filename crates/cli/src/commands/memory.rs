//! `set-memory-high-watermark`: changes the memory alarm's threshold on a running broker
//! (what `rabbitmqctl set_vm_memory_high_watermark` does), until its next restart.

use clap::Args;
use serde_json::json;

use super::Output;
use crate::client::Client;

/// Arguments of `set-memory-high-watermark`.
#[derive(Args, Debug)]
pub struct SetWatermarkArgs {
    /// A fraction of the memory available to the broker (0.6), or a size (2GB, 512MiB)
    pub limit: String,
}

/// Sends the new watermark to the node the management API runs on (its name from
/// `/api/overview`).
pub fn run(client: &Client, args: &SetWatermarkArgs) -> Output {
    let overview = client.get("overview", "overview")?;
    let node = overview
        .get("node")
        .and_then(|n| n.as_str())
        .unwrap_or("broker@localhost");
    client.put(
        &format!("nodes/{}/memory-high-watermark", crate::client::seg(node)),
        &json!({ "limit": args.limit }),
        "memory high watermark",
    )?;
    Ok(format!("memory high watermark set to {}\n", args.limit))
}
