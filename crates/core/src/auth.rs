//! Users, password hashes, tags and per-vhost permissions, as RabbitMQ defines them.
//!
//! Password hashes use RabbitMQ's default scheme (`rabbit_password_hashing_sha256`):
//! base64 of a 4-byte salt followed by SHA-256(salt ‖ password), so definitions exported
//! from RabbitMQ import here with their passwords intact. Permissions are three regular
//! expressions per (user, vhost), matched unanchored against resource names as RabbitMQ
//! does; an empty pattern grants nothing. The default exchange is `amq.default` for
//! permission checks.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The hashing algorithm name RabbitMQ writes in definitions.
pub const SHA256: &str = "rabbit_password_hashing_sha256";

/// The name RabbitMQ gives the broker's own actions (definitions import). Reserved: no
/// user may be created with it, so nothing a login does can pass for the broker's own.
pub const INTERNAL_USER: &str = "rmq-internal";

/// Refuses a name no user may have: the reserved [`INTERNAL_USER`], or one that cannot
/// travel as a short string (the `user_id` property must be able to carry it).
pub fn check_user_name(name: &str) -> Result<(), crate::AmqpError> {
    if name == INTERNAL_USER {
        return Err(crate::AmqpError::precondition_failed(format!(
            "user name '{INTERNAL_USER}' is reserved for the broker"
        )));
    }
    crate::names::check_shortstr("user name", name)
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Name.
    pub name: String,
    /// base64(salt ‖ sha256(salt ‖ password)); empty: password logins refused.
    pub password_hash: String,
    /// Tags: administrator, monitoring, policymaker, management, impersonator, or others.
    pub tags: Vec<String>,
}

impl User {
    /// A user with a freshly salted hash of `password`.
    pub fn new(name: &str, password: &str, tags: Vec<String>, salt: [u8; 4]) -> User {
        User {
            name: name.to_owned(),
            password_hash: hash_password(password, salt),
            tags,
        }
    }

    /// Whether `password` is this user's password.
    pub fn check_password(&self, password: &str) -> bool {
        verify_password(&self.password_hash, password)
    }

    /// Whether the user has a tag.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// The management level its tags give: administrator > monitoring > management.
    pub fn is_administrator(&self) -> bool {
        self.has_tag("administrator")
    }

    /// May see everything (monitoring or administrator).
    pub fn is_monitoring(&self) -> bool {
        self.is_administrator() || self.has_tag("monitoring")
    }

    /// May use the management API at all.
    pub fn may_manage(&self) -> bool {
        self.is_monitoring() || self.has_tag("management") || self.has_tag("policymaker")
    }
}

/// RabbitMQ's SHA-256 password hash with the given salt.
pub fn hash_password(password: &str, salt: [u8; 4]) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    let mut out = salt.to_vec();
    out.extend_from_slice(&h.finalize());
    B64.encode(out)
}

/// Checks a password against a hash made by [`hash_password`] (or RabbitMQ).
pub fn verify_password(hash: &str, password: &str) -> bool {
    let Ok(raw) = B64.decode(hash) else {
        return false;
    };
    if raw.len() != 4 + 32 {
        return false;
    }
    let mut salt = [0u8; 4];
    salt.copy_from_slice(&raw[..4]);
    // compare the whole digest (no early exit on the first difference)
    let expect = hash_password(password, salt);
    expect.len() == hash.len()
        && expect
            .bytes()
            .zip(hash.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// What an operation needs of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Declare, delete.
    Configure,
    /// Publish to an exchange, bind to a queue or destination exchange.
    Write,
    /// Consume, get, purge a queue; bind from an exchange.
    Read,
}

/// A user's permissions in one vhost.
#[derive(Debug, Clone)]
pub struct Permission {
    /// Configure pattern as given.
    pub configure: String,
    /// Write pattern as given.
    pub write: String,
    /// Read pattern as given.
    pub read: String,
    compiled: [Regex; 3],
}

impl PartialEq for Permission {
    fn eq(&self, o: &Self) -> bool {
        (&self.configure, &self.write, &self.read) == (&o.configure, &o.write, &o.read)
    }
}

fn compile(p: &str) -> Result<Regex, String> {
    // an empty pattern grants nothing but the empty name, as in RabbitMQ
    let p = if p.is_empty() { "^$" } else { p };
    Regex::new(p).map_err(|e| format!("invalid regular expression '{p}': {e}"))
}

impl Permission {
    /// Compiles the three patterns.
    pub fn new(configure: &str, write: &str, read: &str) -> Result<Permission, String> {
        Ok(Permission {
            compiled: [compile(configure)?, compile(write)?, compile(read)?],
            configure: configure.to_owned(),
            write: write.to_owned(),
            read: read.to_owned(),
        })
    }

    /// Full access (".*" three times).
    pub fn all() -> Permission {
        // the patterns are constant and valid
        Permission::new(".*", ".*", ".*").unwrap_or_else(|_| unreachable_permission())
    }

    /// Whether `kind` access to the resource named `name` is granted.
    pub fn allows(&self, kind: Access, name: &str) -> bool {
        let i = match kind {
            Access::Configure => 0,
            Access::Write => 1,
            Access::Read => 2,
        };
        self.compiled[i].is_match(name)
    }
}

#[allow(clippy::unwrap_used)]
fn unreachable_permission() -> Permission {
    // never reached: ".*" always compiles
    let r = Regex::new("^$").unwrap();
    Permission {
        configure: String::new(),
        write: String::new(),
        read: String::new(),
        compiled: [r.clone(), r.clone(), r],
    }
}

/// The name permission checks use for an exchange ("" is `amq.default`).
pub fn exchange_resource(name: &str) -> &str {
    if name.is_empty() {
        "amq.default"
    } else {
        name
    }
}

/// RabbitMQ's 403 text for a refused operation.
pub fn refused_text(kind: &str, name: &str, vhost: &str, user: &str) -> String {
    format!("access to {kind} '{name}' in vhost '{vhost}' refused for user '{user}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_as_rabbitmq() {
        // the hash RabbitMQ 3.10 stored for a user created with password "s3cret"
        let rabbit = "WS9PPVxb5rQIU0qEf2jCQ2uGUTw3FfCxpwTpu63Kp/tjlUZ3";
        assert!(verify_password(rabbit, "s3cret"));
        assert!(!verify_password(rabbit, "S3cret"));
        let h = hash_password("s3cret", [1, 2, 3, 4]);
        assert!(verify_password(&h, "s3cret"));
        assert!(!verify_password("not base64!", "x"));
    }

    #[test]
    fn reserved_and_long_user_names_are_refused() {
        assert!(check_user_name("alice").is_ok());
        let e = check_user_name(INTERNAL_USER).unwrap_err();
        assert!(e.text.contains("reserved"), "{}", e.text);
        assert!(check_user_name(&"u".repeat(256)).is_err());
    }

    #[test]
    fn permissions_match_unanchored_and_empty_grants_nothing() {
        let p = Permission::new("^app-", "", ".*").unwrap();
        assert!(p.allows(Access::Configure, "app-orders"));
        assert!(!p.allows(Access::Configure, "other"));
        assert!(!p.allows(Access::Write, "amq.default"));
        assert!(p.allows(Access::Read, "anything"));
        assert!(Permission::new("(", "", "").is_err());
    }
}
