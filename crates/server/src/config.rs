//! Broker settings: defaults, overridden by a TOML file, overridden by environment
//! variables and flags (clap reads both; flags win over the environment).

mod cluster;

pub use cluster::{ClusterSettings, LeaderLocator, Secret};

use crate::broker::login_throttle::ThrottleSettings;
use crate::limits::{available_memory, Limit};
use broker_core::auth::PasswordHashing;
use clap::Parser;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Command-line flags. Every flag can also be given as an environment variable
/// (`BROKER_LISTEN`, ...) or in the config file (`listen = "..."`).
#[derive(Debug, Parser)]
#[command(name = "broker", version, about = "An AMQP 0-9-1 message broker")]
pub struct Cli {
    /// Address and port to accept AMQP connections on, or "none" to serve only
    /// `--tls-listen` [default: 0.0.0.0:5672]
    #[arg(long, env = "BROKER_LISTEN")]
    pub listen: Option<String>,
    /// Directory for durable state [default: ./data]
    #[arg(long, env = "BROKER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML config file
    #[arg(long, env = "BROKER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log level or filter (error, warn, info, debug, trace) [default: info]
    #[arg(long, env = "BROKER_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format: text or json [default: text]
    #[arg(long, env = "BROKER_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Largest message body accepted, in bytes [default: 16777216]
    #[arg(long, env = "BROKER_MAX_MESSAGE_SIZE")]
    pub max_message_size: Option<u64>,
    /// frame_max offered to clients [default: 131072]
    #[arg(long, env = "BROKER_FRAME_MAX")]
    pub frame_max: Option<u32>,
    /// channel_max offered to clients [default: 2047]
    #[arg(long, env = "BROKER_CHANNEL_MAX")]
    pub channel_max: Option<u16>,
    /// Most client connections open at once on this node (RabbitMQ's connection_max);
    /// connection.open beyond it is refused with 530 NOT_ALLOWED [default: no limit]
    #[arg(long, env = "BROKER_MAX_CONNECTIONS")]
    pub max_connections: Option<u64>,
    /// Heartbeat interval offered to clients, in seconds [default: 60]
    #[arg(long, env = "BROKER_HEARTBEAT")]
    pub heartbeat: Option<u16>,
    /// Memory the broker process may use before publishers are blocked: a fraction of
    /// the available memory (RAM, or the cgroup limit when lower), e.g. 0.6, or a size,
    /// e.g. 2GB [default: 0.6, RabbitMQ 4's default]
    #[arg(long, env = "BROKER_MEMORY_HIGH_WATERMARK")]
    pub memory_high_watermark: Option<Limit>,
    /// Free space on the data dir's filesystem below which publishers are blocked (the
    /// disk alarm): a size, e.g. 50MB, or a multiple of the available memory, e.g. 1.0
    /// [default: 50MB, as RabbitMQ]
    #[arg(long, env = "BROKER_DISK_FREE_LIMIT")]
    pub disk_free_limit: Option<Limit>,
    /// Worker threads (arbiters) [default: number of cores]
    #[arg(long, env = "BROKER_WORKERS")]
    pub workers: Option<usize>,
    /// Milliseconds a client has to complete the AMQP handshake [default: 10000]
    #[arg(long, env = "BROKER_HANDSHAKE_TIMEOUT_MS")]
    pub handshake_timeout_ms: Option<u64>,
    /// Milliseconds a consumer may hold a delivery unacked before it is cancelled and the
    /// delivery requeued; 0 turns the check off [default: 1800000]
    #[arg(long, env = "BROKER_CONSUMER_TIMEOUT_MS")]
    pub consumer_timeout_ms: Option<u64>,
    /// Management HTTP API and /metrics address, or "none" [default: 127.0.0.1:15672]
    #[arg(long, env = "BROKER_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// This node's name, as the management API and the cluster know it
    /// [default: broker@localhost]
    #[arg(long, env = "BROKER_NODE_NAME")]
    pub node_name: Option<String>,
    /// Largest request body the management API accepts, in bytes [default: 16777216]
    #[arg(long, env = "BROKER_HTTP_MAX_BODY")]
    pub http_max_body: Option<usize>,
    /// Users that may log in only from localhost, comma-separated, or "none"
    /// [default: guest] (RabbitMQ's loopback_users)
    #[arg(long, env = "BROKER_LOOPBACK_USERS")]
    pub loopback_users: Option<String>,
    /// Hash function for passwords set from now on: sha256 or sha512 [default: sha256]
    /// (RabbitMQ's password_hashing_module); existing hashes keep theirs
    #[arg(long, env = "BROKER_PASSWORD_HASHING")]
    pub password_hashing: Option<String>,
    /// Address and port to accept AMQPS (AMQP over TLS) connections on, e.g.
    /// 0.0.0.0:5671; needs --tls-cert and --tls-key [default: none]
    #[arg(long, env = "BROKER_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,
    /// PEM file with the server certificate (and its chain) for --tls-listen
    #[arg(long, env = "BROKER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file with the private key of --tls-cert (PKCS#8, PKCS#1 or SEC1)
    #[arg(long, env = "BROKER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM file with the CA certificates that sign client certificates
    #[arg(long, env = "BROKER_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Require a client certificate signed by --tls-ca on --tls-listen, and offer the
    /// SASL EXTERNAL mechanism (login by the certificate's common name)
    #[arg(long, env = "BROKER_TLS_VERIFY_PEER")]
    pub tls_verify_peer: bool,
    /// PEM certificate for the management API: with --http-tls-key, --http-listen serves
    /// HTTPS only [default: none, plain HTTP]
    #[arg(long, env = "BROKER_HTTP_TLS_CERT")]
    pub http_tls_cert: Option<PathBuf>,
    /// PEM private key of --http-tls-cert
    #[arg(long, env = "BROKER_HTTP_TLS_KEY")]
    pub http_tls_key: Option<PathBuf>,
    /// Failed AMQP logins from one IP address, within --login-failure-window-secs, after
    /// which the address is refused for --login-failure-cooldown-secs; 0 turns the
    /// throttle off [default: 10]
    #[arg(long, env = "BROKER_LOGIN_FAILURE_LIMIT")]
    pub login_failure_limit: Option<u32>,
    /// Seconds over which failed logins of one address are counted [default: 60]
    #[arg(long, env = "BROKER_LOGIN_FAILURE_WINDOW_SECS")]
    pub login_failure_window_secs: Option<u64>,
    /// Seconds a throttled address is refused [default: 60]
    #[arg(long, env = "BROKER_LOGIN_FAILURE_COOLDOWN_SECS")]
    pub login_failure_cooldown_secs: Option<u64>,
    /// Address and port other cluster nodes connect to [default: this node's entry in
    /// --cluster-peers, else 0.0.0.0:25672]; used only with --cluster-peers
    #[arg(long, env = "BROKER_CLUSTER_LISTEN")]
    pub cluster_listen: Option<String>,
    /// The cluster's other nodes, NAME@HOST:PORT,... (an entry with this node's own name
    /// is allowed); without it the node is a cluster of one [default: none]
    #[arg(long, env = "BROKER_CLUSTER_PEERS")]
    pub cluster_peers: Option<String>,
    /// File holding the secret every node of the cluster shares (readable by its owner
    /// only, as Erlang's cookie); required with --cluster-peers
    #[arg(long, env = "BROKER_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Seconds a link to another node may stay silent before that node is taken as
    /// down (frozen or cut off), 1 to 600; heartbeats go every fifth of it [default: 5]
    #[arg(long, env = "BROKER_CLUSTER_LINK_TIMEOUT")]
    pub cluster_link_timeout: Option<u64>,
    /// PEM certificate (and chain) this node presents on cluster links, dialed and
    /// accepted; with --cluster-tls-key and --cluster-tls-ca every link runs TLS
    /// [default: none, plain TCP]
    #[arg(long, env = "BROKER_CLUSTER_TLS_CERT")]
    pub cluster_tls_cert: Option<PathBuf>,
    /// PEM private key of --cluster-tls-cert
    #[arg(long, env = "BROKER_CLUSTER_TLS_KEY")]
    pub cluster_tls_key: Option<PathBuf>,
    /// PEM CA certificates that sign the cluster's node certificates: a peer whose
    /// certificate they do not verify is refused
    #[arg(long, env = "BROKER_CLUSTER_TLS_CA")]
    pub cluster_tls_ca: Option<PathBuf>,
    /// Where a new quorum queue's leader goes when neither a policy's
    /// queue-leader-locator nor its x-queue-leader-locator says: client-local (the
    /// declaring node) or balanced (the node leading the fewest) [default: client-local]
    #[arg(long, env = "BROKER_QUEUE_LEADER_LOCATOR")]
    pub queue_leader_locator: Option<LeaderLocator>,
}

/// Where one TLS endpoint's certificate material is read from (again on SIGHUP).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA certificates that sign client certificates (PEM); needed with `verify_peer`.
    pub ca: Option<PathBuf>,
    /// Whether a client must present a certificate signed by `ca`.
    pub verify_peer: bool,
}

/// The settings file; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    log_level: Option<String>,
    log_format: Option<String>,
    max_message_size: Option<u64>,
    frame_max: Option<u32>,
    channel_max: Option<u16>,
    max_connections: Option<u64>,
    heartbeat: Option<u16>,
    memory_high_watermark: Option<Limit>,
    disk_free_limit: Option<Limit>,
    workers: Option<usize>,
    handshake_timeout_ms: Option<u64>,
    consumer_timeout_ms: Option<u64>,
    http_listen: Option<String>,
    node_name: Option<String>,
    http_max_body: Option<usize>,
    loopback_users: Option<String>,
    password_hashing: Option<String>,
    tls_listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_verify_peer: Option<bool>,
    http_tls_cert: Option<PathBuf>,
    http_tls_key: Option<PathBuf>,
    login_failure_limit: Option<u32>,
    login_failure_window_secs: Option<u64>,
    login_failure_cooldown_secs: Option<u64>,
    cluster_listen: Option<String>,
    cluster_peers: Option<String>,
    cluster_secret_file: Option<PathBuf>,
    cluster_link_timeout: Option<u64>,
    cluster_tls_cert: Option<PathBuf>,
    cluster_tls_key: Option<PathBuf>,
    cluster_tls_ca: Option<PathBuf>,
    queue_leader_locator: Option<String>,
}

/// The resolved settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Plain AMQP listen address; `None` when turned off (`--listen none`).
    pub listen: Option<SocketAddr>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Log filter.
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: String,
    /// Largest body accepted.
    pub max_message_size: u64,
    /// frame_max offered in connection.tune.
    pub frame_max: u32,
    /// channel_max offered in connection.tune.
    pub channel_max: u16,
    /// Most open connections on the node (`None`: no limit).
    pub max_connections: Option<u64>,
    /// Heartbeat offered in connection.tune (seconds).
    pub heartbeat: u16,
    /// Memory high watermark in bytes (process memory above which publishers are
    /// blocked), resolved from a fraction of the available memory or a size.
    pub memory_high_watermark: u64,
    /// Free disk bytes below which publishers are blocked.
    pub disk_free_limit: u64,
    /// Worker threads.
    pub workers: usize,
    /// Milliseconds a client has to complete the handshake.
    pub handshake_timeout_ms: u64,
    /// Milliseconds a delivery may stay unacked before its consumer is cancelled (0: off).
    pub consumer_timeout_ms: u64,
    /// Management API address; `None` when turned off.
    pub http_listen: Option<String>,
    /// This node's name (`--node-name`).
    pub node_name: String,
    /// Largest management API request body.
    pub http_max_body: usize,
    /// Users restricted to loopback logins.
    pub loopback_users: Vec<String>,
    /// How new password hashes are made (PUT /api/users with a password).
    pub password_hashing: PasswordHashing,
    /// AMQPS listen address; `None` when not serving TLS.
    pub tls_listen: Option<SocketAddr>,
    /// The AMQPS certificate material (set whenever `tls_listen` is).
    pub tls: Option<TlsFiles>,
    /// The management API's certificate material: HTTPS when set.
    pub http_tls: Option<TlsFiles>,
    /// When failed logins throttle an address (`login_failure_*`).
    pub login_throttle: ThrottleSettings,
    /// The cluster this node forms with its peers; `None`: a cluster of one.
    pub cluster: Option<ClusterSettings>,
    /// The default queue leader locator of new quorum queues (`broker/placement.rs`).
    pub queue_leader_locator: LeaderLocator,
}

impl Config {
    /// Resolves flags, environment and file into settings.
    pub fn load(mut cli: Cli) -> Result<Config, String> {
        let mut file = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| format!("invalid config file {}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let frame_max = cli.frame_max.or(file.frame_max).unwrap_or(131_072);
        if frame_max < 4096 {
            return Err(format!(
                "frame_max {frame_max} is below the AMQP minimum of 4096"
            ));
        }
        let (listen, tls_listen, tls, http_tls) = listeners(&mut cli, &mut file)?;
        let password_hashing = match cli.password_hashing.take().or(file.password_hashing.take()) {
            None => PasswordHashing::Sha256,
            Some(s) => PasswordHashing::parse(s.trim()).ok_or_else(|| {
                format!("invalid password hashing {s:?}: expected sha256 or sha512")
            })?,
        };
        let node_name = cli
            .node_name
            .or(file.node_name)
            .unwrap_or_else(|| "broker@localhost".into());
        check_node_name(&node_name)?;
        let cluster = cluster::resolve(
            &node_name,
            cli.cluster_listen.take().or(file.cluster_listen.take()),
            cli.cluster_peers.take().or(file.cluster_peers.take()),
            cli.cluster_secret_file
                .take()
                .or(file.cluster_secret_file.take()),
            cli.cluster_link_timeout.or(file.cluster_link_timeout),
            cluster::TlsPaths {
                cert: cli.cluster_tls_cert.take().or(file.cluster_tls_cert.take()),
                key: cli.cluster_tls_key.take().or(file.cluster_tls_key.take()),
                ca: cli.cluster_tls_ca.take().or(file.cluster_tls_ca.take()),
            },
        )?;
        let queue_leader_locator = match cli.queue_leader_locator {
            Some(l) => l,
            None => match file.queue_leader_locator.take() {
                Some(s) => s.parse()?,
                None => LeaderLocator::ClientLocal,
            },
        };
        Ok(Config {
            cluster,
            queue_leader_locator,
            node_name,
            listen,
            tls_listen,
            tls,
            http_tls,
            data_dir: cli
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
            log_level: cli
                .log_level
                .or(file.log_level)
                .unwrap_or_else(|| "info".into()),
            log_format: cli
                .log_format
                .or(file.log_format)
                .unwrap_or_else(|| "text".into()),
            max_message_size: cli
                .max_message_size
                .or(file.max_message_size)
                .unwrap_or(16 * 1024 * 1024),
            frame_max,
            channel_max: cli.channel_max.or(file.channel_max).unwrap_or(2047),
            max_connections: cli.max_connections.or(file.max_connections),
            heartbeat: cli.heartbeat.or(file.heartbeat).unwrap_or(60),
            memory_high_watermark: cli
                .memory_high_watermark
                .or(file.memory_high_watermark)
                .unwrap_or(Limit::Relative(0.6))
                .bytes(available_memory()),
            disk_free_limit: cli
                .disk_free_limit
                .or(file.disk_free_limit)
                .unwrap_or(Limit::Absolute(50_000_000))
                .bytes(available_memory()),
            workers: cli
                .workers
                .or(file.workers)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
                .max(1),
            handshake_timeout_ms: cli
                .handshake_timeout_ms
                .or(file.handshake_timeout_ms)
                .unwrap_or(10_000),
            consumer_timeout_ms: cli
                .consumer_timeout_ms
                .or(file.consumer_timeout_ms)
                .unwrap_or(1_800_000),
            http_listen: Some(
                cli.http_listen
                    .or(file.http_listen)
                    .unwrap_or_else(|| "127.0.0.1:15672".into()),
            )
            .filter(|a| a != "none" && !a.is_empty()),
            http_max_body: cli.http_max_body.or(file.http_max_body).unwrap_or(16 << 20),
            loopback_users: {
                let v = cli
                    .loopback_users
                    .or(file.loopback_users)
                    .unwrap_or_else(|| "guest".into());
                if v.trim() == "none" {
                    Vec::new()
                } else {
                    v.split(',')
                        .map(|u| u.trim().to_owned())
                        .filter(|u| !u.is_empty())
                        .collect()
                }
            },
            password_hashing,
            login_throttle: ThrottleSettings {
                limit: cli
                    .login_failure_limit
                    .or(file.login_failure_limit)
                    .unwrap_or(10),
                window: Duration::from_secs(
                    cli.login_failure_window_secs
                        .or(file.login_failure_window_secs)
                        .unwrap_or(60),
                ),
                cooldown: Duration::from_secs(
                    cli.login_failure_cooldown_secs
                        .or(file.login_failure_cooldown_secs)
                        .unwrap_or(60),
                ),
            },
        })
    }
}

/// The listeners and their TLS material: where plain AMQP, AMQPS and the management API
/// listen, and which files each TLS endpoint reads. Checks the combinations, so a
/// half-configured TLS endpoint fails the start instead of serving without TLS.
type Listeners = (
    Option<SocketAddr>,
    Option<SocketAddr>,
    Option<TlsFiles>,
    Option<TlsFiles>,
);

fn listeners(cli: &mut Cli, file: &mut FileConfig) -> Result<Listeners, String> {
    let listen = match cli.listen.take().or(file.listen.take()) {
        None => Some(SocketAddr::from(([0, 0, 0, 0], 5672))),
        Some(a) if a == "none" => None,
        Some(a) => Some(
            a.parse()
                .map_err(|e| format!("invalid listen address {a:?}: {e}"))?,
        ),
    };
    let tls_listen = cli.tls_listen.or(file.tls_listen);
    let tls = match (
        tls_listen,
        cli.tls_cert.take().or(file.tls_cert.take()),
        cli.tls_key.take().or(file.tls_key.take()),
    ) {
        (None, _, _) => None,
        (Some(_), Some(cert), Some(key)) => Some(TlsFiles {
            cert,
            key,
            ca: cli.tls_ca.take().or(file.tls_ca.take()),
            verify_peer: cli.tls_verify_peer || file.tls_verify_peer.unwrap_or(false),
        }),
        (Some(_), _, _) => return Err("--tls-listen needs --tls-cert and --tls-key".into()),
    };
    if tls
        .as_ref()
        .is_some_and(|t| t.verify_peer && t.ca.is_none())
    {
        return Err("--tls-verify-peer needs --tls-ca".into());
    }
    if listen.is_none() && tls_listen.is_none() {
        return Err("--listen none needs --tls-listen".into());
    }
    let http_tls = match (
        cli.http_tls_cert.take().or(file.http_tls_cert.take()),
        cli.http_tls_key.take().or(file.http_tls_key.take()),
    ) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert,
            key,
            ca: None,
            verify_peer: false,
        }),
        _ => return Err("--http-tls-cert and --http-tls-key go together".into()),
    };
    Ok((listen, tls_listen, tls, http_tls))
}

/// A node name is what peers and the management API call the node: 1 to 255 bytes of
/// printable ASCII without spaces (RabbitMQ's `name@host` is the usual shape).
fn check_node_name(name: &str) -> Result<(), String> {
    let printable = name.bytes().all(|b| b.is_ascii_graphic());
    if name.is_empty() || name.len() > 255 || !printable {
        return Err(format!(
            "invalid node name {name:?}: expected 1 to 255 printable ASCII characters without spaces, such as broker@host1"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> Result<Config, String> {
        Config::load(Cli::parse_from(
            std::iter::once("broker").chain(args.iter().copied()),
        ))
    }

    #[test]
    fn tls_settings_must_be_complete() {
        let err = |args: &[&str]| load(args).err().unwrap_or_default();
        assert!(err(&["--tls-listen", "127.0.0.1:5671"]).contains("needs --tls-cert"));
        assert!(err(&["--listen", "none"]).contains("needs --tls-listen"));
        assert!(err(&["--http-tls-cert", "c.pem"]).contains("go together"));
        let tls = [
            "--tls-listen",
            "127.0.0.1:5671",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
        ];
        let verify: Vec<&str> = tls.iter().copied().chain(["--tls-verify-peer"]).collect();
        assert!(err(&verify).contains("needs --tls-ca"));
        let Ok(c) = load(&[&tls[..], &["--listen", "none"]].concat()) else {
            panic!("a TLS-only broker is a valid setting");
        };
        assert_eq!(c.listen, None);
        assert!(c.tls.is_some_and(|t| !t.verify_peer && t.ca.is_none()));
        assert!(load(&[]).is_ok_and(|c| c.tls.is_none() && c.http_tls.is_none()));
    }
}
