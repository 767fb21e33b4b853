//! The HTTP side: requests to the management API with basic auth, and the mapping
//! of every failure (no answer, error status, unreadable body) to a [`CliError`].

use std::io::Read;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;

use crate::config::Settings;
use crate::error::{from_status, CliError, RequestContext};

/// A client of one management API, logged in as one user.
pub struct Client {
    agent: ureq::Agent,
    base_url: String,
    user: String,
    auth_header: String,
}

/// Percent-encodes one path segment: everything but RFC 3986 unreserved characters,
/// so the vhost `/` becomes `%2F` and a connection name's spaces and `>` survive.
pub fn seg(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The base URL without trailing slashes or a trailing `/api`.
pub fn normalize_base(url: &str) -> String {
    let trimmed = url.trim().trim_end_matches('/');
    trimmed.strip_suffix("/api").unwrap_or(trimmed).to_string()
}

impl Client {
    /// A client for the API at `settings.url`; fails only when `settings.cacert` cannot
    /// be read.
    pub fn new(settings: &Settings) -> Result<Client, CliError> {
        let mut builder = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(120));
        if let Some(path) = &settings.cacert {
            builder = builder.tls_config(tls_config(path)?);
        }
        let agent = builder.build();
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", settings.user, settings.password));
        Ok(Client {
            agent,
            base_url: normalize_base(&settings.url),
            user: settings.user.clone(),
            auth_header: format!("Basic {token}"),
        })
    }

    /// GET `path` (below `/api`); `what` names the object for a 404.
    pub fn get(&self, path: &str, what: &str) -> Result<Value, CliError> {
        self.request("GET", path, None, &[], what)?.ok_or_else(|| {
            CliError::Other(format!(
                "the broker sent an empty answer to GET {}",
                self.url(path)
            ))
        })
    }

    /// GET `path` and expect a JSON array (a single object is taken as a list of one).
    pub fn get_list(&self, path: &str, what: &str) -> Result<Vec<Value>, CliError> {
        match self.get(path, what)? {
            Value::Array(items) => Ok(items),
            obj @ Value::Object(_) => Ok(vec![obj]),
            other => Err(CliError::Other(format!(
                "expected a JSON list from GET {}, got {}",
                self.url(path),
                kind_of(&other)
            ))),
        }
    }

    /// GET a health check: a 503 whose body says `"status":"failed"` is the check's
    /// answer (unhealthy), not an error. Returns whether it is healthy, and the body.
    pub fn get_check(&self, path: &str, what: &str) -> Result<(bool, Value), CliError> {
        let url = self.url(path);
        let result = self
            .agent
            .get(&url)
            .set("Authorization", &self.auth_header)
            .set("Accept", "*/*")
            .call();
        let failed = |text: &str| {
            serde_json::from_str::<Value>(text)
                .ok()
                .filter(|v| v.get("status").and_then(Value::as_str) == Some("failed"))
        };
        match result {
            Ok(resp) => {
                let text = read_body(resp).map_err(|e| self.unreachable(&e))?;
                let body = serde_json::from_str(&text).unwrap_or(Value::Null);
                Ok((true, body))
            }
            Err(ureq::Error::Status(status, resp)) => {
                let text = read_body(resp).unwrap_or_default();
                match failed(&text) {
                    Some(body) if status == 503 => Ok((false, body)),
                    _ => {
                        let ctx = RequestContext {
                            method: "GET",
                            url: &url,
                            base_url: &self.base_url,
                            user: &self.user,
                            what,
                        };
                        Err(from_status(status, &text, &ctx))
                    }
                }
            }
            Err(ureq::Error::Transport(t)) => Err(self.transport_error(&t)),
        }
    }

    /// PUT a JSON body; returns the HTTP status (201 created, 204 updated/existed).
    pub fn put(&self, path: &str, body: &Value, what: &str) -> Result<u16, CliError> {
        self.send("PUT", path, Some(body), &[], what)
            .map(|(status, _)| status)
    }

    /// POST a JSON body; returns the decoded answer if there is one.
    pub fn post(&self, path: &str, body: &Value, what: &str) -> Result<Option<Value>, CliError> {
        self.request("POST", path, Some(body), &[], what)
    }

    /// DELETE `path`, with extra headers (e.g. `X-Reason`).
    pub fn delete(&self, path: &str, headers: &[(&str, &str)], what: &str) -> Result<(), CliError> {
        self.send("DELETE", path, None, headers, what).map(|_| ())
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/{}", self.base_url, path.trim_start_matches('/'))
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
        what: &str,
    ) -> Result<Option<Value>, CliError> {
        let (_, text) = self.send(method, path, body, headers, what)?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&text).map(Some).map_err(|e| {
            CliError::Other(format!(
                "the answer to {method} {} is not JSON ({e}): is this the management API?",
                self.url(path)
            ))
        })
    }

    /// Sends one request; returns the status and body text of a 2xx answer.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
        what: &str,
    ) -> Result<(u16, String), CliError> {
        let url = self.url(path);
        let mut req = self
            .agent
            .request(method, &url)
            .set("Authorization", &self.auth_header)
            // Not "application/json": RabbitMQ answers 406 to that on DELETE .../contents.
            .set("Accept", "*/*");
        for (name, value) in headers {
            req = req.set(name, value);
        }
        let result = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let ctx = RequestContext {
            method,
            url: &url,
            base_url: &self.base_url,
            user: &self.user,
            what,
        };
        match result {
            Ok(resp) => {
                let status = resp.status();
                let text = read_body(resp).map_err(|e| self.unreachable(&e))?;
                Ok((status, text))
            }
            Err(ureq::Error::Status(status, resp)) => {
                let text = read_body(resp).unwrap_or_default();
                Err(from_status(status, &text, &ctx))
            }
            Err(ureq::Error::Transport(t)) => Err(self.transport_error(&t)),
        }
    }

    fn transport_error(&self, t: &ureq::Transport) -> CliError {
        use ureq::ErrorKind;
        match t.kind() {
            ErrorKind::InvalidUrl | ErrorKind::UnknownScheme => CliError::Usage(format!(
                "invalid --url '{}': {}",
                self.base_url,
                transport_reason(t)
            )),
            _ => self.unreachable(&transport_reason(t)),
        }
    }

    fn unreachable(&self, reason: &str) -> CliError {
        CliError::Unreachable {
            url: self.base_url.clone(),
            reason: reason.to_string(),
        }
    }
}

/// A TLS client configuration that trusts only the CA certificates in `path` (as curl's
/// `--cacert`), with the ring provider ureq itself uses.
fn tls_config(path: &std::path::Path) -> Result<std::sync::Arc<rustls::ClientConfig>, CliError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let bad = |e: String| CliError::Other(format!("cannot use --cacert {}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| bad(e.to_string()))?;
    }
    // deprecated in rustls 0.23.48 (no post-quantum key exchange), but it is the provider
    // ureq 2 is built with
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

/// A short reason for a transport failure: the kind plus the innermost cause.
fn transport_reason(t: &ureq::Transport) -> String {
    let mut cause: Option<String> = None;
    let mut source = std::error::Error::source(t);
    while let Some(s) = source {
        cause = Some(s.to_string());
        source = s.source();
    }
    let detail = cause.or_else(|| t.message().map(str::to_string));
    match detail {
        Some(d) => format!("{}: {}", t.kind(), d),
        None => t.kind().to_string(),
    }
}

fn read_body(resp: ureq::Response) -> Result<String, String> {
    let mut text = String::new();
    resp.into_reader()
        .read_to_string(&mut text)
        .map_err(|e| format!("reading the answer failed: {e}"))?;
    Ok(text)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(seg("/"), "%2F");
        assert_eq!(seg("my-queue_1.x~"), "my-queue_1.x~");
        assert_eq!(
            seg("127.0.0.1:5 -> 1.2.3.4:5672"),
            "127.0.0.1%3A5%20-%3E%201.2.3.4%3A5672"
        );
        assert_eq!(seg("é"), "%C3%A9");
        assert_eq!(seg("a#b?c"), "a%23b%3Fc");
    }

    #[test]
    fn base_url_is_normalized() {
        assert_eq!(normalize_base("http://h:15672/"), "http://h:15672");
        assert_eq!(normalize_base("http://h:15672/api/"), "http://h:15672");
        assert_eq!(normalize_base("http://h/prefix"), "http://h/prefix");
    }

    #[test]
    fn unreachable_broker_names_the_url() {
        // Port 1 on loopback: nothing listens there.
        let settings = Settings {
            url: "http://127.0.0.1:1/".into(),
            user: "guest".into(),
            password: "guest".into(),
            cacert: None,
        };
        let err = Client::new(&settings)
            .unwrap()
            .get("overview", "overview")
            .err();
        match err {
            Some(CliError::Unreachable { url, reason }) => {
                assert_eq!(url, "http://127.0.0.1:1");
                assert!(!reason.is_empty());
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }

    #[test]
    fn bad_url_is_a_usage_error() {
        let settings = Settings {
            url: "ftp://h".into(),
            user: "u".into(),
            password: "p".into(),
            cacert: None,
        };
        let err = Client::new(&settings)
            .unwrap()
            .get("overview", "overview")
            .err();
        assert_eq!(err.map(|e| e.exit_code()), Some(2));
    }
}
