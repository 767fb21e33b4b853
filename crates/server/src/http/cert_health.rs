//! RabbitMQ's `GET /api/health/checks/certificate-expiration/{within}/{unit}`: fails
//! (503) when a certificate of a TLS listener expires within the given time, so a probe
//! warns before clients start failing their handshakes.
//!
//! The listeners with certificates are the AMQPS one (`--tls-cert`, and `--tls-ca` as
//! its `cacertfile`) and the management API when it speaks HTTPS (`--http-tls-cert`).
//! Every certificate in each file counts (a chain's intermediates expire too), read from
//! disk at each call as RabbitMQ does. The answer's shape, the unit arithmetic (a month is
//! 365/12 days, a year 365) and the texts of its 400s are RabbitMQ's.

use super::{user, ApiError, ApiResult, State};
use crate::broker::runtime::Runtime;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use std::path::Path;

const DAY: i128 = 86_400;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/api/health/checks/certificate-expiration/{within}/{unit}",
        web::get().to(certificate_expiration),
    );
}

/// `within` `unit` in seconds, or RabbitMQ's 400 text. The number is checked first, as
/// RabbitMQ does (`abc/fortnights` is an invalid value), may be negative, and is an
/// integer of any size (clamped far beyond any certificate's lifetime).
pub fn window_secs(within: &str, unit: &str) -> Result<i128, String> {
    let digits = within.strip_prefix(['+', '-']).unwrap_or(within);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("Invalid expiration value.".into());
    }
    // 30 digits of seconds is beyond any date a certificate can carry
    let n: i128 = match digits.trim_start_matches('0') {
        d if d.len() > 25 => 10i128.pow(25),
        "" => 0,
        d => d
            .parse()
            .map_err(|_| "Invalid expiration value.".to_owned())?,
    };
    let n = if within.starts_with('-') { -n } else { n };
    let unit_secs = match unit.to_lowercase().as_str() {
        "days" => DAY,
        "weeks" => 7 * DAY,
        "months" => 365 * DAY / 12,
        "years" => 365 * DAY,
        _ => {
            return Err(
                "Time unit not recognised. Supported units: days, weeks, months, years.".into(),
            )
        }
    };
    Ok(n * unit_secs)
}

/// What one certificate file says against the deadline: the expiry dates before it and
/// the certificates that cannot be used, or why the file cannot be read (RabbitMQ's
/// `{error, Reason}`, here `{"error": reason}`).
fn expiring(path: Option<&Path>, now: i64, deadline: i128) -> Option<Value> {
    let path = path?;
    match crate::tls::expiry_times(path, now) {
        Err(e) => Some(json!({ "error": e })),
        Ok(times) => {
            let hits: Vec<Value> = times
                .into_iter()
                .filter_map(|t| match t {
                    Ok(at) if i128::from(at) < deadline => Some(json!(crate::tls::expiry_text(at))),
                    Ok(_) => None,
                    Err(e) => Some(json!({ "error": e })),
                })
                .collect();
            (!hits.is_empty()).then_some(Value::Array(hits))
        }
    }
}

/// One listener's entry in `expired`, or `None` when nothing of it expires in time.
fn listener_entry(
    (protocol, interface, port): (&str, String, u16),
    cert: &Path,
    ca: Option<&Path>,
    now: i64,
    deadline: i128,
) -> Option<Value> {
    let certs = expiring(Some(cert), now, deadline);
    let cas = expiring(ca, now, deadline);
    if certs.is_none() && cas.is_none() {
        return None;
    }
    let path = |p: Option<&Path>| p.map(|p| p.display().to_string());
    Some(json!({
        "node": crate::broker::node::node_name(),
        "protocol": protocol,
        "interface": interface,
        "port": port,
        "certfile": path(Some(cert)),
        "cacertfile": path(ca),
        "certfile_expires_on": certs.unwrap_or_else(|| json!([])),
        "cacertfile_expires_on": cas.unwrap_or_else(|| json!([])),
    }))
}

/// The listeners that present certificates and what of theirs expires before `deadline`.
fn expiring_listeners(req: &HttpRequest, rt: &Runtime, now: i64, deadline: i128) -> Vec<Value> {
    let mut out = Vec::new();
    if let (Some(files), Some(addr)) = (&rt.config.tls, rt.config.tls_listen) {
        let port = super::overview::listeners(rt)
            .iter()
            .find(|l| l.get("protocol").and_then(Value::as_str) == Some("amqp/ssl"))
            .and_then(|l| l.get("port").and_then(Value::as_u64))
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(addr.port());
        let listener = ("amqp/ssl", addr.ip().to_string(), port);
        out.extend(listener_entry(
            listener,
            &files.cert,
            files.ca.as_deref(),
            now,
            deadline,
        ));
    }
    if let Some(files) = &rt.config.http_tls {
        let local = req.app_config().local_addr();
        let listener = ("https", local.ip().to_string(), local.port());
        out.extend(listener_entry(listener, &files.cert, None, now, deadline));
    }
    out
}

/// GET …/certificate-expiration/{within}/{unit}: 200 `{"status":"ok"}`, or 503 with
/// RabbitMQ's `{"status":"failed","reason":"Certificates expiring","expired":[…]}`.
async fn certificate_expiration(
    req: HttpRequest,
    rt: State,
    path: web::Path<(String, String)>,
) -> ApiResult {
    user(&req, &rt)?;
    let (within, unit) = path.into_inner();
    let window = window_secs(&within, &unit).map_err(ApiError::bad_request)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let expired = expiring_listeners(&req, &rt, now, i128::from(now) + window);
    if expired.is_empty() {
        return Ok(HttpResponse::Ok().json(json!({"status": "ok"})));
    }
    Ok(HttpResponse::ServiceUnavailable().json(json!({
        "status": "failed",
        "reason": "Certificates expiring",
        "expired": expired,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_rabbitmq_arithmetic_and_texts() {
        assert_eq!(window_secs("1", "days"), Ok(86_400));
        assert_eq!(window_secs("2", "weeks"), Ok(14 * 86_400));
        assert_eq!(window_secs("1", "months"), Ok(2_628_000));
        assert_eq!(window_secs("1", "YEARS"), Ok(365 * 86_400));
        assert_eq!(window_secs("-1", "days"), Ok(-86_400));
        assert_eq!(window_secs("+0", "days"), Ok(0));
        assert!(window_secs("99999999999999999999999999999999", "years").is_ok());
        let unit = "Time unit not recognised. Supported units: days, weeks, months, years.";
        assert_eq!(window_secs("1", "day"), Err(unit.into()));
        for bad in ["abc", "1.5", "", "-", "1e3"] {
            assert_eq!(
                window_secs(bad, "fortnights"),
                Err("Invalid expiration value.".into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn expiry_dates_print_as_rabbitmq_prints_them() {
        assert_eq!(crate::tls::expiry_text(0), "1970-01-01 0:00:00");
        assert_eq!(crate::tls::expiry_text(1_740_819_907), "2025-03-01 9:05:07");
    }
}
