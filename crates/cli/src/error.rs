//! The errors of broker-cli, their exit codes, and how an HTTP error answer of the
//! management API becomes one of them.
//!
//! Every error is printed as one line on stderr, `broker-cli: ` followed by its
//! `Display`, and the process exits with [`CliError::exit_code`].

use serde_json::Value;

/// Everything that can make a command fail.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CliError {
    /// A bad command line that clap could not catch (unknown column, bad config value): exit 2.
    #[error("{0}")]
    Usage(String),
    /// No HTTP answer at all from the broker: exit 3.
    #[error("cannot reach the broker at {url}: {reason}")]
    Unreachable {
        /// The base URL the CLI was told to use.
        url: String,
        /// What the transport layer said (connection refused, DNS failure, timeout...).
        reason: String,
    },
    /// HTTP 401 because the login failed: exit 4.
    #[error("wrong credentials for user '{user}' at {url} (HTTP 401: {reason})")]
    Credentials {
        /// The user the CLI logged in as.
        user: String,
        /// The base URL of the API.
        url: String,
        /// The API's reason, or "Login failed".
        reason: String,
    },
    /// HTTP 404: exit 5.
    #[error("not found: {what}{}", detail_suffix(.detail))]
    NotFound {
        /// What the command was looking for, e.g. `queue 'q1' in vhost '/'`.
        what: String,
        /// The API's reason when it says more than a bare "Not Found".
        detail: Option<String>,
    },
    /// HTTP 400/403/405/406/409 or a 401 for lack of rights: exit 6.
    #[error("refused by the broker (HTTP {status}): {reason}")]
    Refused {
        /// The HTTP status code.
        status: u16,
        /// The API's `reason` field, or a description of the refusal.
        reason: String,
    },
    /// A refusal decided by the CLI itself (e.g. adding a user that exists): exit 6.
    #[error("{0}")]
    Conflict(String),
    /// A health check answered that the broker is unhealthy: exit 69 (EX_UNAVAILABLE),
    /// as `rabbitmq-diagnostics check_*` exits.
    #[error("health check failed: {0}")]
    Unhealthy(String),
    /// Anything else (server error, unreadable answer, local file problem): exit 1.
    #[error("{0}")]
    Other(String),
}

fn detail_suffix(detail: &Option<String>) -> String {
    match detail {
        Some(d) => format!(" ({d})"),
        None => String::new(),
    }
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Other(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Unreachable { .. } => 3,
            CliError::Credentials { .. } => 4,
            CliError::NotFound { .. } => 5,
            CliError::Refused { .. } | CliError::Conflict(_) => 6,
            CliError::Unhealthy(_) => 69,
        }
    }
}

/// What a request was about, so that an error answer can be explained.
#[derive(Debug, Clone)]
pub struct RequestContext<'a> {
    /// HTTP method, for messages about unexpected answers.
    pub method: &'a str,
    /// The full URL requested.
    pub url: &'a str,
    /// The base URL of the API, as configured.
    pub base_url: &'a str,
    /// The user the CLI logged in as.
    pub user: &'a str,
    /// What was asked for, e.g. `queue 'q1' in vhost '/'`; used for 404s.
    pub what: &'a str,
}

/// The API's `reason` field as one line of text (RabbitMQ sometimes sends a list or
/// an object there; those are shown as compact JSON).
pub fn reason_of(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    let reason = value.get("reason").or_else(|| value.get("error"))?;
    let text = match reason {
        Value::String(s) => s.clone(),
        Value::Null => return None,
        other => other.to_string(),
    };
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        None
    } else {
        Some(one_line)
    }
}

/// Maps an HTTP error status and its body to the error the user sees.
///
/// RabbitMQ answers 401 both for a failed login (`"reason":"Login failed"`) and for
/// a user who lacks rights (`"reason":"Not administrator user"`, `"Access refused."`):
/// only the first is a credentials problem.
pub fn from_status(status: u16, body: &str, ctx: &RequestContext<'_>) -> CliError {
    let reason = reason_of(body);
    match status {
        401 => match reason {
            Some(r) if !r.to_ascii_lowercase().contains("login failed") => {
                CliError::Refused { status, reason: r }
            }
            r => CliError::Credentials {
                user: ctx.user.to_string(),
                url: ctx.base_url.to_string(),
                reason: r.unwrap_or_else(|| "Login failed".to_string()),
            },
        },
        404 => CliError::NotFound {
            what: ctx.what.to_string(),
            detail: reason.filter(|r| {
                !r.eq_ignore_ascii_case("not found") && !r.eq_ignore_ascii_case("object not found")
            }),
        },
        400 | 403 | 405 | 406 | 409 | 412 | 415 => CliError::Refused {
            status,
            reason: reason.unwrap_or_else(|| format!("{} {} was refused", ctx.method, ctx.url)),
        },
        _ => CliError::Other(match reason {
            Some(r) => format!(
                "the broker answered HTTP {status} to {} {}: {r}",
                ctx.method, ctx.url
            ),
            None => format!(
                "the broker answered HTTP {status} to {} {}",
                ctx.method, ctx.url
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RequestContext<'static> {
        RequestContext {
            method: "GET",
            url: "http://h:15672/api/queues/%2F/q1",
            base_url: "http://h:15672",
            user: "guest",
            what: "queue 'q1' in vhost '/'",
        }
    }

    #[test]
    fn login_failed_is_credentials() {
        let e = from_status(
            401,
            r#"{"error":"not_authorized","reason":"Login failed"}"#,
            &ctx(),
        );
        assert_eq!(e.exit_code(), 4);
        assert_eq!(
            e.to_string(),
            "wrong credentials for user 'guest' at http://h:15672 (HTTP 401: Login failed)"
        );
        assert_eq!(from_status(401, "", &ctx()).exit_code(), 4);
    }

    #[test]
    fn lack_of_rights_is_refused() {
        let e = from_status(
            401,
            r#"{"error":"not_authorised","reason":"Not administrator user"}"#,
            &ctx(),
        );
        assert_eq!(e.exit_code(), 6);
        assert!(e.to_string().contains("Not administrator user"));
        let e = from_status(403, r#"{"error":"forbidden","reason":"no way"}"#, &ctx());
        assert_eq!(
            e,
            CliError::Refused {
                status: 403,
                reason: "no way".into()
            }
        );
    }

    #[test]
    fn not_found_says_what() {
        let e = from_status(
            404,
            r#"{"error":"Object Not Found","reason":"Not Found"}"#,
            &ctx(),
        );
        assert_eq!(e.exit_code(), 5);
        assert_eq!(e.to_string(), "not found: queue 'q1' in vhost '/'");
        let e = from_status(
            404,
            r#"{"error":"not_found","reason":"no exchange 'x' in vhost '/'"}"#,
            &ctx(),
        );
        assert_eq!(
            e.to_string(),
            "not found: queue 'q1' in vhost '/' (no exchange 'x' in vhost '/')"
        );
    }

    #[test]
    fn bad_request_carries_reason() {
        let body = r#"{"error":"bad_request","reason":"inequivalent arg 'durable'\nfor queue"}"#;
        let e = from_status(400, body, &ctx());
        assert_eq!(e.exit_code(), 6);
        assert_eq!(
            e.to_string(),
            "refused by the broker (HTTP 400): inequivalent arg 'durable' for queue"
        );
        let e = from_status(
            400,
            r#"{"error":"bad_request","reason":["no_such_vhost","v"]}"#,
            &ctx(),
        );
        assert!(e.to_string().ends_with(r#"["no_such_vhost","v"]"#));
        assert_eq!(from_status(405, "", &ctx()).exit_code(), 6);
        assert_eq!(from_status(406, "not json", &ctx()).exit_code(), 6);
    }

    #[test]
    fn server_errors_are_other() {
        let e = from_status(500, "", &ctx());
        assert_eq!(e.exit_code(), 1);
        assert_eq!(
            e.to_string(),
            "the broker answered HTTP 500 to GET http://h:15672/api/queues/%2F/q1"
        );
    }

    #[test]
    fn exit_codes() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        let e = CliError::Unreachable {
            url: "http://h:1".into(),
            reason: "Connection refused".into(),
        };
        assert_eq!(e.exit_code(), 3);
        assert_eq!(
            e.to_string(),
            "cannot reach the broker at http://h:1: Connection refused"
        );
    }
}
