//! The connection handshake as RabbitMQ performs it: connection.start with its server
//! properties and capabilities, SASL PLAIN or AMQPLAIN against the broker's users (and
//! EXTERNAL on TLS connections, by the client certificate's common name, as RabbitMQ's
//! rabbitmq_auth_mechanism_ssl), and the negotiation of channel_max, frame_max and
//! heartbeat.

use crate::broker::login_throttle::{LoginThrottle, Verdict};
use crate::config::Config;
use broker_core::AmqpError;
use broker_wire::depth;
use broker_wire::protocol::{connection, AMQPClass};
use broker_wire::types::{AMQPValue, FieldTable, LongString, ShortString};

/// What the client told us about itself.
#[derive(Debug, Default, Clone)]
pub struct ClientInfo {
    /// client_properties.product, for logs.
    pub product: String,
    /// Whether it understands connection.blocked.
    pub connection_blocked: bool,
    /// Everything it sent as client-properties (shown by the management API).
    pub properties: broker_wire::types::FieldTable,
}

/// The capabilities RabbitMQ advertises; clients switch features on by them.
const CAPABILITIES: &[&str] = &[
    "publisher_confirms",
    "exchange_exchange_bindings",
    "basic.nack",
    "consumer_cancel_notify",
    "connection.blocked",
    "authentication_failure_close",
    "per_consumer_qos",
    "consumer_priorities",
];

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

/// How the client reached us: what decides whether SASL EXTERNAL is offered and who it
/// logs in as.
#[derive(Debug, Clone, Copy)]
pub enum Link<'a> {
    /// Plain TCP: PLAIN and AMQPLAIN.
    Plain,
    /// TLS, with the common name of the client's verified certificate if it presented
    /// one: EXTERNAL too.
    Tls(Option<&'a str>),
}

/// The SASL mechanisms offered over `link`. RabbitMQ's EXTERNAL is offered on every TLS
/// connection, certificate or not, so that a client without one is told "refused"
/// rather than failing to agree on a mechanism; we do the same.
pub fn mechanisms(link: Link<'_>) -> &'static str {
    match link {
        Link::Plain => "PLAIN AMQPLAIN",
        Link::Tls(_) => "PLAIN AMQPLAIN EXTERNAL",
    }
}

/// connection.start, offering the mechanisms of `link`.
pub fn start(link: Link<'_>) -> AMQPClass {
    let mut caps = FieldTable::default();
    for c in CAPABILITIES {
        caps.insert(ShortString::from(*c), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    props.insert("product".into(), s("broker"));
    props.insert("version".into(), s(env!("CARGO_PKG_VERSION")));
    props.insert("platform".into(), s("Rust"));
    props.insert("copyright".into(), s("The broker authors"));
    props.insert(
        "information".into(),
        s("AMQP 0-9-1 broker, RabbitMQ compatible"),
    );
    props.insert("cluster_name".into(), s("broker"));
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: props,
        mechanisms: LongString::from(mechanisms(link)),
        locales: LongString::from("en_US"),
    }))
}

/// connection.tune with the configured limits.
pub fn tune(cfg: &Config) -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::Tune(connection::Tune {
        channel_max: cfg.channel_max,
        frame_max: cfg.frame_max,
        heartbeat: cfg.heartbeat,
    }))
}

fn refused(mechanism: &str) -> AmqpError {
    AmqpError::access_refused(format!(
        "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
    ))
}

fn credentials(mechanism: &str, response: &[u8]) -> Option<(String, String)> {
    match mechanism {
        "PLAIN" => {
            let mut parts = response.split(|b| *b == 0);
            let _authzid = parts.next()?;
            let user = parts.next()?;
            let pass = parts.next()?;
            Some((
                String::from_utf8(user.to_vec()).ok()?,
                String::from_utf8(pass.to_vec()).ok()?,
            ))
        }
        "AMQPLAIN" => {
            // a field table without its length prefix
            let mut buf = (response.len() as u32).to_be_bytes().to_vec();
            buf.extend_from_slice(response);
            depth::scan_table(&buf, 0, 1).ok()?;
            let (_, t) = broker_wire::types::parsing::parse_field_table(&buf[..]).ok()?;
            let get = |k: &str| match t.inner().get(k) {
                Some(AMQPValue::LongString(v)) => {
                    Some(String::from_utf8_lossy(v.as_bytes()).into_owned())
                }
                Some(AMQPValue::ShortString(v)) => Some(v.to_string()),
                _ => None,
            };
            Some((get("LOGIN")?, get("PASSWORD")?))
        }
        _ => None,
    }
}

/// Why a login failed. It decides how the connection ends, as in RabbitMQ: only a refused
/// login is ever explained to the client; anything else before connection.tune is
/// answered by closing the socket after [`SILENT_CLOSE_DELAY`], so a client probing
/// passwords or mechanisms gets no information and cannot retry at full speed.
#[derive(Debug)]
pub enum LoginFailure {
    /// Unknown user, wrong password, guest from afar: connection.close 403 ACCESS_REFUSED
    /// (class and method 0) if the client announced `authentication_failure_close`,
    /// otherwise the silent close.
    Refused {
        /// The 403 to send.
        error: AmqpError,
        /// Whether the client asked to be told (`authentication_failure_close`).
        tell: bool,
    },
    /// An unsupported mechanism or a response that does not parse: the silent close, even
    /// for clients with the capability (RabbitMQ 3.10).
    Invalid(String),
}

/// How long RabbitMQ waits before it closes the socket of a client whose login failed
/// without telling it why (`?SILENT_CLOSE_DELAY`, 3 s).
pub const SILENT_CLOSE_DELAY: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether the client-properties announce `capabilities.authentication_failure_close`.
fn wants_failure_close(props: &FieldTable) -> bool {
    match props.inner().get("capabilities") {
        Some(AMQPValue::FieldTable(caps)) => matches!(
            caps.inner().get("authentication_failure_close"),
            Some(AMQPValue::Boolean(true))
        ),
        _ => false,
    }
}

/// Checks connection.start-ok against the users. Returns the user and what the client
/// supports.
pub fn authenticate(
    s: &connection::StartOk,
    users: &crate::broker::access::Registry,
    peer: std::net::IpAddr,
    link: Link<'_>,
) -> Result<(String, ClientInfo), LoginFailure> {
    let mech = s.mechanism.as_str();
    let refuse = || LoginFailure::Refused {
        error: refused(mech),
        tell: wants_failure_close(&s.client_properties),
    };
    let user = match (mech, link) {
        ("PLAIN" | "AMQPLAIN", _) => {
            let (user, pass) = credentials(mech, s.response.as_bytes())
                .ok_or_else(|| LoginFailure::Invalid(format!("malformed {mech} response")))?;
            if users.authenticate(&user, &pass, peer).is_none() {
                return Err(refuse());
            }
            user
        }
        ("EXTERNAL", Link::Tls(cn)) => external(cn, users, peer).ok_or_else(refuse)?,
        _ => {
            return Err(LoginFailure::Invalid(format!(
                "unsupported authentication mechanism '{mech}'"
            )))
        }
    };
    let mut info = ClientInfo {
        properties: s.client_properties.clone(),
        ..ClientInfo::default()
    };
    let props = s.client_properties.inner();
    if let Some(AMQPValue::LongString(p)) = props.get("product") {
        info.product = String::from_utf8_lossy(p.as_bytes()).into_owned();
    }
    if let Some(AMQPValue::FieldTable(caps)) = props.get("capabilities") {
        info.connection_blocked = matches!(
            caps.inner().get("connection.blocked"),
            Some(AMQPValue::Boolean(true))
        );
    }
    Ok((user, info))
}

/// The answer to a login from an address cooling down for failed logins: the same
/// refusal as a wrong password (the client learns nothing new), given without checking
/// the credentials.
pub fn throttled(s: &connection::StartOk) -> LoginFailure {
    LoginFailure::Refused {
        error: refused(s.mechanism.as_str()),
        tell: wants_failure_close(&s.client_properties),
    }
}

/// Counts a refused login from `peer` and logs, once, when it cools the address down.
pub fn note_refused(throttle: &LoginThrottle, peer: std::net::IpAddr) {
    if let Verdict::CooledDown(failures) = throttle.failed(peer, std::time::Instant::now()) {
        let s = throttle.settings();
        tracing::warn!(
            %peer,
            failures,
            window_secs = s.window.as_secs(),
            cooldown_secs = s.cooldown.as_secs(),
            "login throttled: {failures} failed logins from {peer}; its connections are refused for {}s",
            s.cooldown.as_secs()
        );
    }
}

/// SASL EXTERNAL: the user named by the client certificate's common name, if it exists
/// and may log in from `peer`; no password is asked (the certificate is the proof). The
/// response the client sent is ignored, as RabbitMQ does.
fn external(
    cn: Option<&str>,
    users: &crate::broker::access::Registry,
    peer: std::net::IpAddr,
) -> Option<String> {
    let Some(cn) = cn else {
        tracing::warn!("EXTERNAL login refused: no peer certificate");
        return None;
    };
    let known = cn != broker_core::auth::INTERNAL_USER && users.user(cn).is_some();
    if !known {
        tracing::warn!(user = cn, "EXTERNAL login refused: no such user");
        return None;
    }
    if !users.may_log_in_from(cn, peer) {
        tracing::warn!(%peer, user = cn, "user may only connect from localhost (--loopback-users)");
        return None;
    }
    Some(cn.to_owned())
}

/// Checks connection.tune-ok against what we offered: (channel_max, frame_max, heartbeat).
/// Values above the offer are 530 NOT_ALLOWED, as RabbitMQ answers.
pub fn negotiate(t: &connection::TuneOk, cfg: &Config) -> Result<(u16, u32, u16), AmqpError> {
    if t.frame_max > cfg.frame_max {
        return Err(AmqpError::not_allowed(format!(
            "frame_max={} > {} max size",
            t.frame_max, cfg.frame_max
        )));
    }
    if t.frame_max != 0 && t.frame_max < broker_wire::frame::FRAME_MIN_SIZE {
        return Err(AmqpError::not_allowed(format!(
            "frame_max={} < {} min size",
            t.frame_max,
            broker_wire::frame::FRAME_MIN_SIZE
        )));
    }
    if t.channel_max > cfg.channel_max {
        return Err(AmqpError::not_allowed(format!(
            "channel_max={} > {} max",
            t.channel_max, cfg.channel_max
        )));
    }
    let frame_max = if t.frame_max == 0 {
        cfg.frame_max
    } else {
        t.frame_max
    };
    let channel_max = if t.channel_max == 0 {
        cfg.channel_max
    } else {
        t.channel_max
    };
    Ok((channel_max, frame_max, t.heartbeat))
}

/// Most connections held open at once for a silent close. Each costs a socket and a
/// timer for [`SILENT_CLOSE_DELAY`]; past this many, a failed login closes at once, so a
/// storm of failed logins cannot pile up sockets and timers without bound.
pub const MAX_SILENCED: usize = 1024;

static SILENCED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One of the [`MAX_SILENCED`] places for a connection waiting out its silent close,
/// given back when dropped (the timer fired or the connection ended otherwise).
#[derive(Debug)]
pub struct SilenceSlot(());

impl SilenceSlot {
    /// A place, or none if [`MAX_SILENCED`] connections already wait.
    pub fn take() -> Option<SilenceSlot> {
        use std::sync::atomic::Ordering;
        SILENCED
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_SILENCED).then_some(n + 1)
            })
            .ok()
            .map(|_| SilenceSlot(()))
    }
}

impl Drop for SilenceSlot {
    fn drop(&mut self) {
        SILENCED.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_is_offered_on_tls_only() {
        assert_eq!(mechanisms(Link::Plain), "PLAIN AMQPLAIN");
        assert_eq!(mechanisms(Link::Tls(None)), "PLAIN AMQPLAIN EXTERNAL");
        assert_eq!(
            mechanisms(Link::Tls(Some("app"))),
            "PLAIN AMQPLAIN EXTERNAL"
        );
    }

    #[test]
    fn silenced_connections_are_bounded() {
        let slots: Vec<_> = std::iter::from_fn(SilenceSlot::take)
            .take(MAX_SILENCED + 10)
            .collect();
        assert_eq!(slots.len(), MAX_SILENCED);
        assert!(SilenceSlot::take().is_none());
        drop(slots);
        assert!(SilenceSlot::take().is_some());
    }
}
