//! Settings come from the TOML file, environment variables and flags, flags winning.

use broker_tests::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn broker_bin() -> std::path::PathBuf {
    std::env::var("BROKER_BIN")
        .map(Into::into)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/broker")
        })
}

/// The line where the broker says where it listens for AMQP (the management API's line,
/// printed before it, is skipped).
fn first_line(mut cmd: Command) -> (String, std::process::Child) {
    let mut child = cmd
        .env("BROKER_HTTP_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let line = BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .find(|l| !l.starts_with("management API"))
        .unwrap_or_default();
    (line, child)
}

#[test]
fn config_file_env_and_flags_in_order() {
    let dir = std::env::temp_dir().join(format!("broker-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let file = dir.join("broker.toml");
    std::fs::write(
        &file,
        format!("listen = \"127.0.0.1:{p1}\"\nheartbeat = 30\n"),
    )
    .unwrap();
    let mut cmd = Command::new(broker_bin());
    cmd.arg("--config")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.join("d1"));
    let (line, mut c) = first_line(cmd);
    assert_eq!(line, format!("broker listening on 127.0.0.1:{p1}"));
    c.kill().unwrap();
    let mut cmd = Command::new(broker_bin());
    cmd.arg("--config")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.join("d2"))
        .env("BROKER_LISTEN", format!("127.0.0.1:{p2}"));
    let (line, mut c) = first_line(cmd);
    assert_eq!(line, format!("broker listening on 127.0.0.1:{p2}"));
    c.kill().unwrap();
    let mut cmd = Command::new(broker_bin());
    cmd.arg("--config")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.join("d3"))
        .env("BROKER_LISTEN", format!("127.0.0.1:{p2}"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{p3}"));
    let (line, mut c) = first_line(cmd);
    assert_eq!(line, format!("broker listening on 127.0.0.1:{p3}"));
    c.kill().unwrap();
}

#[test]
fn bad_config_is_a_clear_error_and_exit_code_2() {
    let dir = std::env::temp_dir().join(format!("broker-badconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "listen = 5\nunknown_key = true\n").unwrap();
    let out = Command::new(broker_bin())
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid config file"), "{err}");
    let out = Command::new(broker_bin())
        .arg("--config")
        .arg(dir.join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // a port already in use is reported, with exit code 1
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let out = Command::new(broker_bin())
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen on"));
}
