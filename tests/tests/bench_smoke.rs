//! A tiny run of broker-bench against the broker (a few seconds, no timing assertions):
//! the tool works end to end and its counts add up.

use broker_tests::*;
use std::path::PathBuf;
use std::process::Command;

fn bench_bin() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    ["debug", "release"]
        .iter()
        .map(|p| root.join("target").join(p).join("broker-bench"))
        .find(|p| p.exists())
}

fn bench(b: &Broker, args: &[&str]) -> serde_json::Value {
    let bin = bench_bin().expect("broker-bench not built: cargo build --workspace");
    let out = Command::new(bin)
        .arg("--addr")
        .arg(format!("127.0.0.1:{}", b.port))
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "broker-bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn throughput_run_counts_add_up() {
    let b = Broker::start();
    let r = bench(
        &b,
        &[
            "--duration",
            "1",
            "--size",
            "64",
            "--prefetch",
            "50",
            "--multiple-ack",
            "10",
        ],
    );
    let published = r["published"].as_u64().unwrap();
    let consumed = r["consumed"].as_u64().unwrap();
    assert!(published > 0, "{r}");
    assert!(consumed > 0 && consumed <= published, "{r}");
    assert!(r["latency_us"]["count"].as_u64().unwrap() > 0);
    assert!(r["latency_us"]["p50"].as_f64().unwrap() <= r["latency_us"]["max"].as_f64().unwrap());
}

#[test]
fn confirms_prefill_and_idle_connections() {
    let b = Broker::start();
    let r = bench(
        &b,
        &[
            "--prefill",
            "2000",
            "--size",
            "128",
            "--persistent",
            "--confirm",
            "100",
        ],
    );
    assert_eq!(r["published"].as_u64(), Some(2000), "{r}");
    assert_eq!(
        r["confirmed"].as_u64(),
        Some(2000),
        "every publish confirmed: {r}"
    );
    assert_eq!(
        r["consumed"].as_u64(),
        Some(2000),
        "the backlog drained: {r}"
    );
    let r = bench(&b, &["--idle-connections", "50"]);
    assert_eq!(r["idle_connections"].as_u64(), Some(50), "{r}");
}
