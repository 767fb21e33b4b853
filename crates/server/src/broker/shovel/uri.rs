//! A shovel's AMQP URIs (RabbitMQ's format: `amqp[s]://user:pass@host:port/vhost?query`).
//! `amqp://` without a host is THIS broker: the shovel connects to the node's own AMQP
//! listener on loopback as the broker's internal user (a per-process secret accepted
//! from loopback only, `Registry::authenticate`), so a local shovel acts with full
//! rights, as RabbitMQ's direct connections do, and no user's password is needed.

/// A parsed URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpUri {
    /// `amqps`.
    pub tls: bool,
    /// `None`: this broker.
    pub host: Option<String>,
    /// The port, or the scheme's default.
    pub port: u16,
    /// Percent-decoded user, if any.
    pub user: Option<String>,
    /// The vhost (percent-decoded; `/` when the URI has no path).
    pub vhost: String,
    /// The query (`heartbeat=…`, …), passed on as it is.
    pub query: String,
}

/// Longest URI accepted.
const MAX_URI: usize = 4096;

/// Decodes `%XX` escapes.
pub fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in \"{s}\""))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("\"{s}\" is not UTF-8 once decoded"))
}

/// Encodes what a URI's path or user part may not carry as it is.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses a shovel URI.
pub fn parse(s: &str) -> Result<AmqpUri, String> {
    if s.len() > MAX_URI {
        return Err(format!("URI longer than {MAX_URI} bytes"));
    }
    let (tls, rest) = if let Some(r) = s.strip_prefix("amqps://") {
        (true, r)
    } else if let Some(r) = s.strip_prefix("amqp://") {
        (false, r)
    } else {
        return Err(format!(
            "\"{s}\" is not an AMQP URI (amqp://user:pass@host:port/vhost or amqps://…)"
        ));
    };
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, None), |(a, p)| (a, Some(p)));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let user = match userinfo {
        Some(u) => Some(percent_decode(u.split_once(':').map_or(u, |(n, _)| n))?),
        None => None,
    };
    let default_port = if tls { 5671 } else { 5672 };
    let (host, port) = match hostport.rsplit_once(':') {
        _ if hostport.starts_with('[') => {
            let end = hostport
                .find(']')
                .ok_or_else(|| format!("bad host in \"{s}\""))?;
            let port = match &hostport[end + 1..] {
                "" => default_port,
                p => port_of(p.trim_start_matches(':'), s)?,
            };
            (hostport[1..end].to_owned(), port)
        }
        Some((h, p)) => (h.to_owned(), port_of(p, s)?),
        None => (hostport.to_owned(), default_port),
    };
    let vhost = match path {
        None => "/".to_owned(),
        Some(p) => percent_decode(p)?,
    };
    if host.is_empty() && (user.is_some() || tls) {
        return Err(format!(
            "\"{}\": a URI without a host means this broker, without credentials or TLS",
            masked(s)
        ));
    }
    Ok(AmqpUri {
        tls,
        host: (!host.is_empty()).then_some(host),
        port,
        user,
        vhost,
        query: query.to_owned(),
    })
}

fn port_of(p: &str, s: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("bad port in \"{}\"", masked(s)))
}

/// The URI without its credentials, as RabbitMQ shows shovel URIs (`amqp://host/vh`).
pub fn masked(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_owned();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://{host}{}", &rest[end..]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_like_rabbitmqs() {
        let u = parse("amqp://").unwrap();
        assert_eq!((u.host, u.vhost.as_str(), u.port), (None, "/", 5672));
        let u = parse("amqp:///v%2Fh").unwrap();
        assert_eq!(u.vhost, "v/h");
        let u = parse("amqps://bob:p%40ss@h.example:5999/%2f?heartbeat=5").unwrap();
        assert!(u.tls);
        assert_eq!(u.host.as_deref(), Some("h.example"));
        assert_eq!(
            (u.port, u.user.as_deref(), u.vhost.as_str()),
            (5999, Some("bob"), "/")
        );
        assert_eq!(u.query, "heartbeat=5");
        assert_eq!(parse("amqp://[::1]:5673/").unwrap().port, 5673);
        assert!(parse("http://h").is_err());
        assert!(parse("amqp://h:0").is_err());
        assert!(parse("amqp://u:p@/").is_err());
    }

    #[test]
    fn masking_drops_credentials() {
        assert_eq!(masked("amqp://u:secret@h:1/v"), "amqp://h:1/v");
        assert_eq!(masked("amqp://"), "amqp://");
        assert_eq!(masked("amqp://h/v@x"), "amqp://h/v@x");
    }
}
