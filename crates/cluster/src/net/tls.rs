//! TLS between nodes (`--cluster-tls-cert`, `--cluster-tls-key`, `--cluster-tls-ca`;
//! docs/design/cluster.md §5), as RabbitMQ's inter-node TLS with `verify_peer` and
//! `fail_if_no_peer_cert`: every node presents its certificate on both sides of a link,
//! and each side verifies the other's against the cluster CA. The dialer also checks
//! that the acceptor's certificate names the host it dialed (the host of the peer's
//! `--cluster-peers` entry, a DNS name or an IP address in the certificate's
//! subjectAltName). The secret handshake still runs inside: TLS says which machines
//! may talk, the secret which cluster they belong to.
//!
//! A connection is a [`Conn`], plain or TLS, split into boxed halves so that the framing
//! code (`conn.rs`) is one for both. A plain TCP stream splits into its owned halves
//! (no lock); a TLS stream, whose reads and writes share one session state, through
//! `tokio::io::split`. The TLS layer encrypts in place into its record buffer: no copy
//! is added beyond that.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The read half of a connection, plain or TLS.
pub(crate) type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a connection, plain or TLS.
pub(crate) type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// A dialed TLS connection (boxed: a TLS session is large beside a socket).
pub(crate) type Dialed = Box<tokio_rustls::client::TlsStream<TcpStream>>;
/// An accepted TLS connection.
pub(crate) type Accepted = Box<tokio_rustls::server::TlsStream<TcpStream>>;

/// One authenticated connection, before it is split for its reader and writer.
pub(crate) enum Conn {
    Plain(TcpStream),
    Dialed(Dialed),
    Accepted(Accepted),
}

impl Conn {
    /// The connection's halves, for the frame reader and the writer task.
    pub fn split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Conn::Plain(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            Conn::Dialed(s) => {
                let (r, w) = tokio::io::split(s);
                (Box::new(r), Box::new(w))
            }
            Conn::Accepted(s) => {
                let (r, w) = tokio::io::split(s);
                (Box::new(r), Box::new(w))
            }
        }
    }
}

/// This node's TLS material for cluster links: what it presents and whom it trusts,
/// as acceptor and as dialer. Read once at start.
#[derive(Clone)]
pub struct NodeTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeTls(..)")
    }
}

impl NodeTls {
    /// Reads the node's certificate chain, its private key and the cluster CA from PEM
    /// files; an error names the file and what is wrong with it.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<NodeTls, String> {
        let read =
            |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        NodeTls::from_pem(&read(cert)?, &read(key)?, &read(ca)?).map_err(|e| {
            format!(
                "cluster TLS ({}, {}, {}): {e}",
                cert.display(),
                key.display(),
                ca.display()
            )
        })
    }

    /// The same from PEM text: the certificate chain, its key, the CA certificates.
    pub fn from_pem(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<NodeTls, String> {
        // ring, as the client listeners (server/src/tls.rs says why).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = certs(cert, "certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| format!("no usable private key: {e}"))?;
        let mut roots = RootCertStore::empty();
        for c in certs(ca, "CA certificate")? {
            roots
                .add(c)
                .map_err(|e| format!("bad CA certificate: {e}"))?;
        }
        let roots = Arc::new(roots);
        let server = server_config(&provider, roots.clone(), chain.clone(), key.clone_key())?;
        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("the key does not fit the certificate: {e}"))?;
        Ok(NodeTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// The dialer's TLS handshake with the node at `addr` (`HOST:PORT`), whose
    /// certificate must name `HOST`.
    pub(crate) async fn connect(&self, addr: &str, tcp: TcpStream) -> Result<Dialed, String> {
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host:?} is not a name a certificate can carry: {e}"))?;
        self.connector
            .connect(name, tcp)
            .await
            .map(Box::new)
            .map_err(|e| {
                format!(
                    "TLS handshake failed: {e}{}",
                    hint(&e, "is cluster TLS configured on the peer?")
                )
            })
    }

    /// The acceptor's TLS handshake. A dialer that speaks the plain handshake instead
    /// is told apart, for the log line; one that closed the connection before the end
    /// is an `UnexpectedEof`, `ConnectionReset` or `BrokenPipe` error (it gave up: not
    /// a refusal).
    pub(crate) async fn accept(&self, tcp: TcpStream) -> io::Result<Accepted> {
        if plain_dialer(&tcp).await {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the peer dialed without TLS, and this node requires it (is cluster TLS configured on the peer?)",
            ));
        }
        match self.acceptor.accept(tcp).await {
            Ok(s) => Ok(Box::new(s)),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("TLS handshake failed: {e}"),
            )),
        }
    }
}

fn server_config(
    provider: &Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, String> {
    // A dialer without a certificate from the CA is refused (`fail_if_no_peer_cert`).
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| format!("cannot verify peers with the CA: {e}"))?;
    ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("the key does not fit the certificate: {e}"))
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read a {what}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("no {what} in the file"));
    }
    Ok(certs)
}

/// Whether the first bytes a dialer sent are the plain handshake's hello (`len u32 |
/// "BRKC"`), not a TLS record. Peeks without consuming; a dialer that sent fewer bytes
/// so far goes on to the TLS handshake, which fails on them anyway.
async fn plain_dialer(tcp: &TcpStream) -> bool {
    let mut b = [0u8; 8];
    match tcp.peek(&mut b).await {
        Ok(n) => n == b.len() && &b[4..] == super::handshake::MAGIC,
        Err(_) => false,
    }
}

/// A hint for a dialer whose handshake the peer cut short: a peer without TLS reads the
/// TLS hello as a broken plain one and closes.
fn hint(e: &io::Error, text: &str) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => format!(" ({text})"),
        _ => String::new(),
    }
}
