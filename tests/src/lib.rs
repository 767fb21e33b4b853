//! Test support: start the `broker` binary on a free port with its own data dir, connect
//! with lapin, or speak raw frames to it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod raw;

use lapin::{Channel, Connection, ConnectionProperties};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A broker process that is killed when dropped.
pub struct Broker {
    child: Child,
    /// The AMQP port.
    pub port: u16,
    /// Its data directory.
    pub data_dir: PathBuf,
    args: Vec<String>,
}

/// The broker binary under test (BROKER_BIN, or the workspace's target dir).
pub fn broker_bin() -> PathBuf {
    if let Ok(p) = std::env::var("BROKER_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    for profile in ["debug", "release"] {
        let p = target.join(profile).join("broker");
        if p.exists() {
            return p;
        }
    }
    panic!("broker binary not found; run `cargo build --bin broker` first or set BROKER_BIN");
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Broker {
    /// Starts a broker with default settings.
    pub fn start() -> Broker {
        Self::start_with(&[])
    }

    /// Starts a broker with extra flags.
    ///
    /// The port is free when it is picked, but another process (a broker's HTTP
    /// listener, a client's ephemeral port: the same range) may take it before the broker
    /// binds it; a broker that exits before listening is started again on a new port.
    pub fn start_with(args: &[&str]) -> Broker {
        for _ in 0..5 {
            let port = free_port();
            let data_dir =
                std::env::temp_dir().join(format!("broker-test-{}-{}", std::process::id(), port));
            let _ = std::fs::remove_dir_all(&data_dir);
            std::fs::create_dir_all(&data_dir).unwrap();
            if let Some(child) = Self::try_spawn(port, &data_dir, args, None) {
                return Broker {
                    child,
                    port,
                    data_dir,
                    args: args.iter().map(|a| a.to_string()).collect(),
                };
            }
            let _ = std::fs::remove_dir_all(&data_dir);
        }
        panic!("broker exited before listening, five times");
    }

    /// Kills the broker with SIGKILL (a crash) and waits for it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the broker again on the same port and data dir (after `terminate` or
    /// `kill9`).
    pub fn restart(&mut self) {
        let args: Vec<&str> = self.args.iter().map(|s| s.as_str()).collect();
        self.child = Self::spawn(self.port, &self.data_dir, &args, None);
    }

    /// Like [`Broker::restart`], with the broker's log written to a file whose path is
    /// returned (to check what it reported).
    pub fn restart_logging(&mut self) -> PathBuf {
        let args: Vec<&str> = self.args.iter().map(|s| s.as_str()).collect();
        let log = self.data_dir.with_extension("log");
        let file = std::fs::File::create(&log).unwrap();
        self.child = Self::spawn(self.port, &self.data_dir, &args, Some(file));
        log
    }

    fn spawn(
        port: u16,
        data_dir: &std::path::Path,
        args: &[&str],
        log: Option<std::fs::File>,
    ) -> Child {
        Self::try_spawn(port, data_dir, args, log).expect("broker exited before listening")
    }

    /// Starts the broker process and waits until it listens; `None` if it exited first.
    fn try_spawn(
        port: u16,
        data_dir: &std::path::Path,
        args: &[&str],
        log: Option<std::fs::File>,
    ) -> Option<Child> {
        let stderr = match log {
            Some(f) => Stdio::from(f),
            None => Stdio::inherit(),
        };
        let mut cmd = Command::new(broker_bin());
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir);
        if !args.contains(&"--http-listen") {
            cmd.arg("--http-listen").arg("127.0.0.1:0");
        }
        let mut child = cmd
            .arg("--log-level")
            .arg(std::env::var("BROKER_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start broker");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("listening on") => break,
                Some(Ok(_)) => continue,
                _ => {
                    let _ = child.wait();
                    return None;
                }
            }
        }
        // keep draining stdout so the broker never blocks on a full pipe
        std::thread::spawn(move || for _ in lines {});
        Some(child)
    }

    /// amqp:// URI of this broker.
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// A lapin connection.
    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.uri(), ConnectionProperties::default())
            .await
            .expect("connect")
    }

    /// A lapin connection and one channel on it.
    pub async fn channel(&self) -> (Connection, Channel) {
        let c = self.connect().await;
        let ch = c.create_channel().await.expect("channel");
        (c, ch)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().unwrap()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// The AMQP reply code carried by a lapin error, if any.
pub fn reply_code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(err) => Some(err.get_id()),
        lapin::ErrorKind::InvalidChannelState(_, _)
        | lapin::ErrorKind::InvalidConnectionState(_) => None,
        _ => None,
    }
}

/// The reply text of a lapin protocol error.
pub fn reply_text(e: &lapin::Error) -> String {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(err) => err.get_message().to_string(),
        other => format!("{other:?}"),
    }
}

/// A unique name for a test's queues and exchanges.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Waits up to `secs` for `f` to become true.
pub async fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..(secs * 50) {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// queue.declare with passive set: the queue's counts, or the error that closed the
/// channel (404 for a queue that does not exist).
pub async fn passive_queue(ch: &lapin::Channel, q: &str) -> Result<lapin::Queue, lapin::Error> {
    ch.queue_declare(
        q.into(),
        lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        lapin::types::FieldTable::default(),
    )
    .await
}

/// Ready messages of an existing queue (a passive declare's message count).
pub async fn ready_count(ch: &lapin::Channel, q: &str) -> u32 {
    passive_queue(ch, q)
        .await
        .expect("passive queue.declare")
        .message_count()
}

/// Sends one HTTP request as guest to a broker's management API on `port` (started with
/// `--http-listen 127.0.0.1:<port>`) and returns the status code.
pub fn http_request(port: u16, method: &str, path: &str, json: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the API");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    );
    s.write_all(req.as_bytes()).expect("send the request");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}
