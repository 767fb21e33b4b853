//! Users, password hashes, tags and per-vhost permissions, as RabbitMQ defines them.
//!
//! Password hashes use RabbitMQ's scheme: base64 of a 4-byte salt followed by
//! HASH(salt ‖ password), with SHA-256 (`rabbit_password_hashing_sha256`, RabbitMQ's
//! default) or SHA-512 (`rabbit_password_hashing_sha512`), so definitions exported from
//! RabbitMQ import here with their passwords intact whichever one it was set to use. Permissions are three regular
//! expressions per (user, vhost), matched unanchored against resource names as RabbitMQ
//! does; an empty pattern grants nothing. The default exchange is `amq.default` for
//! permission checks.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

/// The hashing algorithm name RabbitMQ writes in definitions.
pub const SHA256: &str = "rabbit_password_hashing_sha256";

/// RabbitMQ's name for SHA-512 password hashes.
pub const SHA512: &str = "rabbit_password_hashing_sha512";

/// How a user's password hash was made. Stored with the user (records written before
/// SHA-512 existed have none and are SHA-256) and exported as `hashing_algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PasswordHashing {
    /// `rabbit_password_hashing_sha256`, RabbitMQ's default.
    #[default]
    #[serde(rename = "rabbit_password_hashing_sha256")]
    Sha256,
    /// `rabbit_password_hashing_sha512`.
    #[serde(rename = "rabbit_password_hashing_sha512")]
    Sha512,
}

impl PasswordHashing {
    /// RabbitMQ's module name for it, as definitions carry it.
    pub fn name(self) -> &'static str {
        match self {
            PasswordHashing::Sha256 => SHA256,
            PasswordHashing::Sha512 => SHA512,
        }
    }

    /// From RabbitMQ's module name (`rabbit_password_hashing_sha512`) or the short name
    /// a flag takes (`sha512`); None for anything else (MD5 is not accepted: too weak).
    pub fn parse(s: &str) -> Option<PasswordHashing> {
        match s {
            SHA256 | "sha256" => Some(PasswordHashing::Sha256),
            SHA512 | "sha512" => Some(PasswordHashing::Sha512),
            _ => None,
        }
    }

    /// Digest length in bytes.
    fn digest_len(self) -> usize {
        match self {
            PasswordHashing::Sha256 => 32,
            PasswordHashing::Sha512 => 64,
        }
    }
}

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
    /// base64(salt ‖ hash(salt ‖ password)); empty: password logins refused.
    pub password_hash: String,
    /// The hash function of `password_hash`.
    #[serde(default)]
    pub hashing_algorithm: PasswordHashing,
    /// Tags: administrator, monitoring, policymaker, management, impersonator, or others.
    pub tags: Vec<String>,
}

impl User {
    /// A user with a freshly salted SHA-256 hash of `password`.
    pub fn new(name: &str, password: &str, tags: Vec<String>, salt: [u8; 4]) -> User {
        User {
            name: name.to_owned(),
            password_hash: hash_password(password, salt),
            hashing_algorithm: PasswordHashing::Sha256,
            tags,
        }
    }

    /// Whether `password` is this user's password.
    pub fn check_password(&self, password: &str) -> bool {
        verify_password_with(self.hashing_algorithm, &self.password_hash, password)
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
    hash_password_with(PasswordHashing::Sha256, password, salt)
}

/// RabbitMQ's password hash with the given function and salt.
pub fn hash_password_with(alg: PasswordHashing, password: &str, salt: [u8; 4]) -> String {
    let digest = match alg {
        PasswordHashing::Sha256 => Sha256::new()
            .chain_update(salt)
            .chain_update(password.as_bytes())
            .finalize()
            .to_vec(),
        PasswordHashing::Sha512 => Sha512::new()
            .chain_update(salt)
            .chain_update(password.as_bytes())
            .finalize()
            .to_vec(),
    };
    let mut out = salt.to_vec();
    out.extend_from_slice(&digest);
    B64.encode(out)
}

/// Checks a password against a SHA-256 hash made by [`hash_password`] (or RabbitMQ).
pub fn verify_password(hash: &str, password: &str) -> bool {
    verify_password_with(PasswordHashing::Sha256, hash, password)
}

/// Checks a password against a hash made with `alg` by [`hash_password_with`] (or
/// RabbitMQ).
pub fn verify_password_with(alg: PasswordHashing, hash: &str, password: &str) -> bool {
    let Ok(raw) = B64.decode(hash) else {
        return false;
    };
    if raw.len() != 4 + alg.digest_len() {
        return false;
    }
    let mut salt = [0u8; 4];
    salt.copy_from_slice(&raw[..4]);
    // compare the whole digest (no early exit on the first difference)
    let expect = hash_password_with(alg, password, salt);
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
    fn sha512_hashes_as_rabbitmq() {
        // salt 01020304, then SHA-512(salt ‖ "s3cret"), as rabbit_password makes it
        let h = hash_password_with(PasswordHashing::Sha512, "s3cret", [1, 2, 3, 4]);
        let raw = B64.decode(&h).unwrap_or_default();
        assert_eq!(raw.len(), 68);
        let mut d = Sha512::new();
        d.update([1, 2, 3, 4]);
        d.update(b"s3cret");
        assert_eq!(&raw[4..], d.finalize().as_slice());
        assert!(verify_password_with(PasswordHashing::Sha512, &h, "s3cret"));
        assert!(!verify_password_with(PasswordHashing::Sha512, &h, "other"));
        // a SHA-512 hash is never taken for a SHA-256 one, nor the reverse
        assert!(!verify_password(&h, "s3cret"));
        let h256 = hash_password("s3cret", [1, 2, 3, 4]);
        assert!(!verify_password_with(
            PasswordHashing::Sha512,
            &h256,
            "s3cret"
        ));
        assert_eq!(
            PasswordHashing::parse("sha512"),
            Some(PasswordHashing::Sha512)
        );
        assert_eq!(
            PasswordHashing::parse(SHA256),
            Some(PasswordHashing::Sha256)
        );
        assert_eq!(PasswordHashing::parse("rabbit_password_hashing_md5"), None);
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
