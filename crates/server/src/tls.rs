//! TLS for the AMQPS listener and the management API, with rustls and its ring provider
//! (pure Rust and C that builds with the system compiler: no cmake, no OpenSSL).
//!
//! A [`Reloadable`] reads its PEM files at startup and again on SIGHUP. New handshakes use
//! what was read last; a connection already established keeps the session it has, so a
//! certificate renewal drops nobody. Reading happens off the accept path: a reload that
//! fails (a missing file, a key that does not match) is logged and the old material stays.
//!
//! Only TLS 1.2 and 1.3 are offered (rustls has nothing older). With `verify_peer`, a
//! client must present a certificate that chains to the configured CA and is within its
//! validity period, or the handshake fails before a byte of AMQP is read.

use crate::config::TlsFiles;
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// A TLS endpoint's server configuration, replaced as a whole by [`Reloadable::reload`].
#[derive(Debug)]
pub struct Reloadable {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    /// The certificate and key every configuration built here presents; swapped on
    /// reload, so a configuration handed out once (actix-web's) follows renewals too.
    key: Arc<SwapResolver>,
    current: ArcSwap<ServerConfig>,
}

impl Reloadable {
    /// Reads the files once; an error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Reloadable, String> {
        // rustls 0.23.48 deprecates ring's provider for lacking post-quantum key exchange;
        // aws-lc-rs has it but needs a C toolchain build of aws-lc. Classic ECDHE (X25519,
        // P-256) is what RabbitMQ offers too.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = Arc::new(SwapResolver(ArcSwap::new(certified_key(
            &files, &provider,
        )?)));
        let config = server_config(&files, &provider, key.clone())?;
        Ok(Reloadable {
            files,
            provider,
            key,
            current: ArcSwap::new(Arc::new(config)),
        })
    }

    /// The configuration for the next handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Reads the files again and uses them for the handshakes that follow; on an error
    /// nothing changes.
    pub fn reload(&self) -> Result<(), String> {
        let key = certified_key(&self.files, &self.provider)?;
        let config = server_config(&self.files, &self.provider, self.key.clone())?;
        self.key.0.store(key);
        self.current.store(Arc::new(config));
        Ok(())
    }
}

/// Presents whichever certificate was loaded last, whatever the client asked for (one
/// certificate per endpoint, as RabbitMQ's `ssl_options.certfile`).
#[derive(Debug)]
struct SwapResolver(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for SwapResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(certs)
}

fn certified_key(files: &TlsFiles, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, String> {
    let chain = certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        format!(
            "cannot read a private key from {}: {e}",
            files.key.display()
        )
    })?;
    CertifiedKey::from_der(chain, key, provider)
        .map(Arc::new)
        .map_err(|e| {
            format!(
                "key {} does not fit certificate {}: {e}",
                files.key.display(),
                files.cert.display()
            )
        })
}

fn server_config(
    files: &TlsFiles,
    provider: &Arc<CryptoProvider>,
    key: Arc<SwapResolver>,
) -> Result<ServerConfig, String> {
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match (&files.ca, files.verify_peer) {
        (Some(ca), true) => {
            let mut roots = RootCertStore::empty();
            for c in certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| format!("bad CA certificate in {}: {e}", ca.display()))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| format!("cannot verify clients with {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(builder.with_cert_resolver(key))
}

/// The common name of a verified client certificate (the first CN of the subject), the
/// user name SASL EXTERNAL logs in as.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// One PEM certificate file as the certificate-expiration health check reads it: for
/// each certificate, the Unix time it stops being valid, or why it cannot be used. Read
/// afresh on every call (a renewed file counts before the SIGHUP that loads it). The
/// error texts are RabbitMQ's.
pub fn expiry_times(path: &Path, now_unix: i64) -> Result<Vec<Result<i64, String>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let ders: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if ders.is_empty() {
        return Err("The certificate file provided does not contain any PEM entry.".into());
    }
    Ok(ders
        .iter()
        .map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
                .map_err(|e| format!("The certificate cannot be parsed: {e}"))?;
            let validity = cert.validity();
            if validity.not_before.timestamp() > now_unix {
                return Err("Certificate is not yet valid".to_owned());
            }
            Ok(validity.not_after.timestamp())
        })
        .collect())
}

/// A Unix time as RabbitMQ's check prints it: `2025-03-01 9:05:07` (UTC, the hour not
/// padded, as Erlang's `~w` writes it).
pub fn expiry_text(unix: i64) -> String {
    match x509_parser::time::ASN1Time::from_timestamp(unix) {
        Ok(t) => {
            let d = t.to_datetime();
            format!(
                "{}-{:02}-{:02} {}:{:02}:{:02}",
                d.year(),
                d.month() as u8,
                d.day(),
                d.hour(),
                d.minute(),
                d.second()
            )
        }
        Err(_) => unix.to_string(),
    }
}
