//! The cluster settings (`--cluster-listen`, `--cluster-peers`, `--cluster-secret-file`,
//! `--cluster-link-timeout`, `--cluster-tls-*`; docs/design/cluster.md §5, §7), checked
//! before anything starts: a cluster that would form wrong (no secret, a secret others
//! can read, a peer list naming this node at another address, half a TLS setting or
//! certificate files that do not load) is refused with a message, as Erlang refuses a
//! readable cookie.

use broker_cluster::net::{NodeTls, PeerAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// RabbitMQ's inter-node (Erlang distribution) port, the default of `--cluster-listen`
/// when this node is not in its own peer list.
const DEFAULT_CLUSTER_PORT: u16 = 25672;

/// The range of `--cluster-link-timeout`, in seconds: below one second a busy machine
/// would take live nodes for dead ones; above ten minutes a lost node goes unnoticed
/// for longer than TCP itself would take.
const LINK_TIMEOUT_SECS: std::ops::RangeInclusive<u64> = 1..=600;

/// The shared secret, never printed (`Config` is `Debug`).
#[derive(Clone)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// How this node joins its cluster; absent without `--cluster-peers` (a cluster of one).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Where other nodes reach this one (`--cluster-listen`).
    pub listen: String,
    /// The nodes of `--cluster-peers` (this node's own entry kept when listed: every
    /// node must compute the same initial membership from it).
    pub peers: Vec<PeerAddr>,
    /// The contents of `--cluster-secret-file` (trailing whitespace removed).
    pub secret: Secret,
    /// How long a silent link to another node is kept (`--cluster-link-timeout`).
    pub link_timeout: Duration,
    /// TLS on every link (`--cluster-tls-*`), loaded; `None`: plain TCP.
    pub tls: Option<NodeTls>,
}

/// The files of `--cluster-tls-cert`, `--cluster-tls-key` and `--cluster-tls-ca`: all
/// three or none (TLS between nodes is mutual, so each node needs all three).
#[derive(Debug, Default)]
pub struct TlsPaths {
    /// This node's certificate chain.
    pub cert: Option<PathBuf>,
    /// Its private key.
    pub key: Option<PathBuf>,
    /// The CA that signs every node's certificate.
    pub ca: Option<PathBuf>,
}

impl TlsPaths {
    /// Reads the files when all three are set; half a setting is an error rather than
    /// a cluster that silently runs in plain text.
    fn load(self) -> Result<Option<NodeTls>, String> {
        match (self.cert, self.key, self.ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => NodeTls::load(&cert, &key, &ca).map(Some),
            _ => Err(
                "--cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca go together: set all three or none"
                    .into(),
            ),
        }
    }
}

/// Resolves the settings. No peers: `None`, whatever else is set.
pub fn resolve(
    node_name: &str,
    listen: Option<String>,
    peers: Option<String>,
    secret_file: Option<PathBuf>,
    link_timeout_secs: Option<u64>,
    tls: TlsPaths,
) -> Result<Option<ClusterSettings>, String> {
    let Some(peers) = peers.filter(|p| !p.trim().is_empty()) else {
        return Ok(None);
    };
    let link_timeout = match link_timeout_secs {
        None => broker_cluster::net::DEFAULT_LINK_TIMEOUT,
        Some(s) if LINK_TIMEOUT_SECS.contains(&s) => Duration::from_secs(s),
        Some(s) => {
            return Err(format!(
                "--cluster-link-timeout {s} is out of range: 1 to 600 seconds"
            ))
        }
    };
    let mut parsed: Vec<PeerAddr> = Vec::new();
    for entry in peers.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let peer: PeerAddr = entry.parse()?;
        if parsed.iter().any(|p| p.name == peer.name) {
            return Err(format!(
                "cluster peer {:?} is listed twice in --cluster-peers",
                peer.name
            ));
        }
        parsed.push(peer);
    }
    let own = parsed.iter().find(|p| p.name == node_name);
    let listen = match (listen, own) {
        (Some(l), Some(o)) if l != o.addr => {
            return Err(format!(
                "--cluster-peers lists this node ({node_name}) at {}, but --cluster-listen is {l}",
                o.addr
            ))
        }
        (Some(l), _) => l,
        (None, Some(o)) => o.addr.clone(),
        (None, None) => format!("0.0.0.0:{DEFAULT_CLUSTER_PORT}"),
    };
    if parsed.iter().all(|p| p.name == node_name) {
        return Err("--cluster-peers names no node other than this one".into());
    }
    let Some(path) = secret_file else {
        return Err(
            "--cluster-peers needs --cluster-secret-file (the secret the nodes share)".into(),
        );
    };
    Ok(Some(ClusterSettings {
        listen,
        peers: parsed,
        secret: Secret(read_secret(&path)?),
        link_timeout,
        tls: tls.load()?,
    }))
}

/// Reads the secret file: it must exist, hold something, and be accessible by its owner
/// only (anyone who reads it can join the cluster).
fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read cluster secret file {shown}: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "cluster secret file {shown} must be accessible by its owner only (its mode is {mode:04o}; run chmod 600 {shown})"
        ));
    }
    let mut secret =
        std::fs::read(path).map_err(|e| format!("cannot read cluster secret file {shown}: {e}"))?;
    while secret.last().is_some_and(|b| b.is_ascii_whitespace()) {
        secret.pop();
    }
    if secret.is_empty() {
        return Err(format!("cluster secret file {shown} is empty"));
    }
    Ok(secret)
}

/// A queue leader locator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderLocator {
    /// The declaring node leads.
    ClientLocal,
    /// The node that leads the fewest quorum queues (a random one past
    /// 1000 (`broker/placement.rs`) queues).
    Balanced,
}

impl LeaderLocator {
    /// A locator by RabbitMQ's name (`random` and `least-leaders` are `balanced`).
    pub fn parse(s: &str) -> Option<LeaderLocator> {
        match s {
            "client-local" => Some(LeaderLocator::ClientLocal),
            "balanced" | "random" | "least-leaders" => Some(LeaderLocator::Balanced),
            _ => None,
        }
    }
}

impl std::str::FromStr for LeaderLocator {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        LeaderLocator::parse(s.trim()).ok_or_else(|| {
            format!("invalid queue leader locator {s:?}: expected client-local or balanced")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file in a fresh directory under the system's temp dir, removed on drop.
    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn secret_file(mode: u32, text: &str) -> (Dir, PathBuf) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("broker-secret-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir: {e}"));
        let path = dir.join("secret");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write: {e}"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod: {e}"));
        (Dir(dir), path)
    }

    fn err(r: Result<Option<ClusterSettings>, String>) -> String {
        r.err().unwrap_or_default()
    }

    #[test]
    fn peers_need_a_private_non_empty_secret() {
        let peers = Some("b@h:1,c@h:2".to_string());
        assert!(err(resolve(
            "a",
            None,
            peers.clone(),
            None,
            None,
            TlsPaths::default()
        ))
        .contains("needs --cluster-secret-file"));
        let (_d, open) = secret_file(0o644, "s");
        let e = err(resolve(
            "a",
            None,
            peers.clone(),
            Some(open),
            None,
            TlsPaths::default(),
        ));
        assert!(
            e.contains("accessible by its owner only") && e.contains("0644"),
            "{e}"
        );
        let (_d, empty) = secret_file(0o600, "\n");
        assert!(err(resolve(
            "a",
            None,
            peers.clone(),
            Some(empty),
            None,
            TlsPaths::default()
        ))
        .contains("is empty"));
        let (_d, good) = secret_file(0o400, "s3cret\n");
        let Ok(Some(c)) = resolve(
            "a",
            None,
            peers.clone(),
            Some(good.clone()),
            None,
            TlsPaths::default(),
        ) else {
            panic!("a valid cluster setting");
        };
        assert_eq!(c.secret.0, b"s3cret");
        assert_eq!(c.listen, "0.0.0.0:25672");
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.link_timeout, Duration::from_secs(5));
        let Ok(Some(c)) = resolve(
            "a",
            None,
            peers.clone(),
            Some(good.clone()),
            Some(12),
            TlsPaths::default(),
        ) else {
            panic!("a valid link timeout");
        };
        assert_eq!(c.link_timeout, Duration::from_secs(12));
        for bad in [0, 601] {
            let e = err(resolve(
                "a",
                None,
                peers.clone(),
                Some(good.clone()),
                Some(bad),
                TlsPaths::default(),
            ));
            assert!(e.contains("--cluster-link-timeout"), "{e}");
        }
    }

    #[test]
    fn peer_lists_are_checked() {
        let (_d, s) = secret_file(0o600, "s");
        let go = |listen: Option<&str>, peers: &str| {
            resolve(
                "a@x",
                listen.map(String::from),
                Some(peers.into()),
                Some(s.clone()),
                None,
                TlsPaths::default(),
            )
        };
        assert!(err(go(None, "b@h:1,nonsense")).contains("is not NAME@HOST:PORT"));
        assert!(err(go(None, "b@h:1,b@h:2")).contains("listed twice"));
        assert!(err(go(None, "a@x@h:1")).contains("no node other"));
        let e = err(go(Some("h:2"), "a@x@h:1,b@h:3"));
        assert!(e.contains("lists this node (a@x) at h:1"), "{e}");
        let Ok(Some(c)) = go(None, "a@x@h:1,b@h:3") else {
            panic!("the node's own entry gives its listen address");
        };
        assert_eq!((c.listen.as_str(), c.peers.len()), ("h:1", 2));
        assert!(matches!(
            resolve("a", None, None, None, None, TlsPaths::default()),
            Ok(None)
        ));
    }

    #[test]
    fn cluster_tls_needs_all_three_files_that_load() {
        let (_d, s) = secret_file(0o600, "s");
        let go =
            |tls: TlsPaths| resolve("a", None, Some("b@h:1".into()), Some(s.clone()), None, tls);
        let e = err(go(TlsPaths {
            cert: Some("c.pem".into()),
            ..TlsPaths::default()
        }));
        assert!(e.contains("go together"), "{e}");
        let e = err(go(TlsPaths {
            cert: Some("/nonexistent/c.pem".into()),
            key: Some("/nonexistent/k.pem".into()),
            ca: Some("/nonexistent/ca.pem".into()),
        }));
        assert!(e.contains("cannot read /nonexistent/c.pem"), "{e}");
        assert!(matches!(go(TlsPaths::default()), Ok(Some(c)) if c.tls.is_none()));
    }
}
