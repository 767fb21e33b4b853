//! Where the URL and credentials come from: command-line flags, then environment
//! variables (both handled by clap), then a TOML config file, then the defaults.
//!
//! The config file is `--config FILE` (or `BROKER_CLI_CONFIG`), else
//! `$XDG_CONFIG_HOME/broker-cli.toml` or `~/.config/broker-cli.toml` when it exists.
//! It may hold the keys `url`, `user`, `password` and `cacert`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::CliError;

/// Default management API URL (RabbitMQ's management port on this host).
pub const DEFAULT_URL: &str = "http://127.0.0.1:15672";
/// Default user.
pub const DEFAULT_USER: &str = "guest";
/// Default password.
pub const DEFAULT_PASSWORD: &str = "guest";

/// The connection settings a command runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Base URL of the management API, e.g. `http://127.0.0.1:15672`.
    pub url: String,
    /// User to log in as.
    pub user: String,
    /// That user's password.
    pub password: String,
    /// PEM file of the CA that signed an `https://` API's certificate, trusted in
    /// addition to the bundled public roots.
    pub cacert: Option<PathBuf>,
}

/// Values given by flags or environment variables (`None` when neither was given).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--url` / `BROKER_CLI_URL`.
    pub url: Option<String>,
    /// `--user` / `BROKER_CLI_USER`.
    pub user: Option<String>,
    /// `--password` / `BROKER_CLI_PASSWORD`.
    pub password: Option<String>,
    /// `--config` / `BROKER_CLI_CONFIG`.
    pub config: Option<PathBuf>,
    /// `--cacert` / `BROKER_CLI_CACERT`.
    pub cacert: Option<PathBuf>,
}

/// The keys a config file may hold.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    url: Option<String>,
    user: Option<String>,
    password: Option<String>,
    cacert: Option<PathBuf>,
}

/// Resolves the settings: overrides, then the config file, then the defaults.
pub fn resolve(overrides: &Overrides) -> Result<Settings, CliError> {
    let file = match &overrides.config {
        Some(path) => load(path)?,
        None => match default_path().filter(|p| p.is_file()) {
            Some(path) => load(&path)?,
            None => FileConfig::default(),
        },
    };
    Ok(merge(overrides, file))
}

fn merge(overrides: &Overrides, file: FileConfig) -> Settings {
    Settings {
        url: overrides
            .url
            .clone()
            .or(file.url)
            .unwrap_or_else(|| DEFAULT_URL.to_string()),
        user: overrides
            .user
            .clone()
            .or(file.user)
            .unwrap_or_else(|| DEFAULT_USER.to_string()),
        password: overrides
            .password
            .clone()
            .or(file.password)
            .unwrap_or_else(|| DEFAULT_PASSWORD.to_string()),
        cacert: overrides.cacert.clone().or(file.cacert),
    }
}

fn default_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("broker-cli.toml"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".config").join("broker-cli.toml"))
}

fn load(path: &Path) -> Result<FileConfig, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Other(format!("cannot read config file {}: {e}", path.display())))?;
    parse(&text).map_err(|e| CliError::Other(format!("bad config file {}: {e}", path.display())))
}

fn parse(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| e.message().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beat_defaults() {
        let file = parse("url = \"http://file:1\"\nuser = \"fileuser\"\n").unwrap();
        let overrides = Overrides {
            user: Some("flaguser".into()),
            ..Overrides::default()
        };
        let s = merge(&overrides, file);
        assert_eq!(s.url, "http://file:1");
        assert_eq!(s.user, "flaguser");
        assert_eq!(s.password, DEFAULT_PASSWORD);
    }

    #[test]
    fn defaults_without_anything() {
        let s = merge(&Overrides::default(), FileConfig::default());
        assert_eq!(
            s,
            Settings {
                url: DEFAULT_URL.into(),
                user: "guest".into(),
                password: "guest".into(),
                cacert: None,
            }
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(parse("usr = \"x\"").is_err());
        assert!(parse("url = 3").is_err());
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let overrides = Overrides {
            config: Some("/nonexistent/broker-cli.toml".into()),
            ..Overrides::default()
        };
        let err = resolve(&overrides).err();
        assert!(
            matches!(err, Some(CliError::Other(m)) if m.contains("/nonexistent/broker-cli.toml"))
        );
    }
}
