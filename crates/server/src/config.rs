//! [`ServerConfig`]: everything `floodway serve` can be told, from a TOML file, the
//! environment and the command line, in that order of precedence (later wins).
//!
//! ```toml
//! listen = "0.0.0.0:7700"
//!
//! [tls]
//! cert = "/etc/floodway/cert.pem"
//! key = "/etc/floodway/key.pem"
//!
//! [limits]
//! body_bytes_max = 8388608
//! request_timeout = "30s"
//!
//! [rate]                       # the default per-token rate limit
//! per_second = 2000
//! burst = 4000
//!
//! dashboard = true           # the web dashboard at `/`; false leaves only the API
//!
//! [[tokens]]
//! name = "orders-api"
//! hash = "sha256:9f86d0...."   # `floodway token` prints a token and this line
//! scopes = ["produce"]
//! queues = ["orders", "emails.*"]
//! ```
//!
//! Every setting can be overridden by an environment variable named `FLOODWAY_SERVE_` and the
//! setting's path in capitals, with `__` between levels: `FLOODWAY_SERVE_LISTEN`,
//! `FLOODWAY_SERVE_LIMITS__REQUEST_TIMEOUT=10s`,
//! `FLOODWAY_SERVE_TOKENS='[{name="ci", hash="sha256:...", scopes=["admin"]}]'`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::limits;

/// The prefix of the environment variables that override settings.
pub const ENV_PREFIX: &str = "FLOODWAY_SERVE_";

/// The server's settings. Built by [`ServerConfig::load`], or by hand in tests; checked by
/// [`ServerConfig::validate`] before the server starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where to listen. Port 0 picks a free port (the bound address is reported).
    pub listen: SocketAddr,
    /// Allows listening on a non-loopback address with no tokens configured: anyone who can
    /// reach the port can then do anything. Off by default.
    pub insecure: bool,
    /// TLS with rustls, when set; plain HTTP otherwise.
    pub tls: Option<TlsConfig>,
    /// Limits on requests and connections.
    pub limits: Limits,
    /// The rate limit of each token that has none of its own, and of anonymous callers when
    /// no tokens are configured. `None`: no limit.
    pub rate: Option<RateLimit>,
    /// The bearer tokens the server accepts. With none, authentication is off (and the server
    /// refuses a non-loopback address unless `insecure`).
    pub tokens: Vec<TokenConfig>,
    /// Serves the web dashboard at `/` and `/dashboard/*` (static files compiled into the
    /// binary; they carry no data, so they need no token, and the page calls the API with the
    /// user's token). On by default; `false` (`--no-dashboard`) leaves only the API, and those
    /// paths answer 404 like any unknown route.
    pub dashboard: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: limits::LISTEN_DEFAULT
                .parse()
                .expect("the default listen address parses"),
            insecure: false,
            tls: None,
            limits: Limits::default(),
            rate: None,
            tokens: Vec::new(),
            dashboard: true,
        }
    }
}

/// Where the TLS certificate chain and private key are (PEM files).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Limits on requests and connections; see [`crate::limits`] for the defaults and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body, in bytes; larger ones get 413 `body_too_large`.
    pub body_bytes_max: usize,
    /// Most tasks, leases or ids in one request; more get 413 `batch_too_large`.
    pub batch_size_max: usize,
    /// How long a client may take to send request headers, and how long an idle connection
    /// stays open.
    #[serde(with = "floodway_core::duration::serde")]
    pub header_read_timeout: Duration,
    /// How long a request may take once its headers are in.
    #[serde(with = "floodway_core::duration::serde")]
    pub request_timeout: Duration,
    /// Longest a reserve call may wait for tasks; longer waits are shortened to it.
    #[serde(with = "floodway_core::duration::serde")]
    pub reserve_wait_max: Duration,
    /// Most connections served at once.
    pub connections_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes_max: limits::BODY_BYTES_MAX_DEFAULT,
            batch_size_max: limits::BATCH_SIZE_MAX_DEFAULT,
            header_read_timeout: limits::HEADER_READ_TIMEOUT_DEFAULT,
            request_timeout: limits::REQUEST_TIMEOUT_DEFAULT,
            reserve_wait_max: limits::RESERVE_WAIT_MAX_DEFAULT,
            connections_max: limits::CONNECTIONS_MAX_DEFAULT,
        }
    }
}

/// A token bucket: `per_second` requests on average, bursts of up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests per second, on average.
    pub per_second: f64,
    /// Most requests in a burst.
    pub burst: u32,
}

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Enqueue and cancel tasks; see queue statistics.
    Produce,
    /// Reserve tasks and ack, fail, extend or release their leases; see tasks.
    Consume,
    /// Everything else: queue configuration, pause and resume, dead letters, maintenance,
    /// metrics.
    Admin,
}

impl Scope {
    /// The scope's name as configuration writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Produce => "produce",
            Scope::Consume => "consume",
            Scope::Admin => "admin",
        }
    }
}

/// One bearer token the server accepts. Only the token's hash is stored.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for logs and metrics (never the token itself).
    pub name: String,
    /// `sha256:` and the SHA-256 of the token in hex, as `floodway token` prints it.
    pub hash: String,
    /// What the token may do.
    pub scopes: Vec<Scope>,
    /// The queues it may do it on: names, or patterns where `*` matches any run of
    /// characters (`emails.*`, `*`). Every queue when absent.
    #[serde(default = "every_queue")]
    pub queues: Vec<String>,
    /// Its own rate limit, instead of the server's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateLimit>,
}

fn every_queue() -> Vec<String> {
    vec!["*".to_owned()]
}

impl std::fmt::Debug for TokenConfig {
    /// Shows the name, scopes and queues; the hash stays out of logs too.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("queues", &self.queues)
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

/// Settings given on the command line, which win over the file and the environment. Only
/// the fields that are `Some` (or `true`) override.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `--insecure`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// `--tls-cert` and `--tls-key`, given together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// `--no-dashboard` (as `Some(false)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<bool>,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable could not be read or does not fit the settings.
    #[error("configuration: {0}")]
    Load(Box<figment::Error>),
    /// A setting has a value the server cannot work with.
    #[error("configuration: invalid {setting}: {reason}")]
    Invalid {
        /// The setting, as the file names it (`limits.request_timeout`, `tokens[2].hash`).
        setting: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
}

impl ConfigError {
    pub(crate) fn invalid(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            setting: setting.into(),
            reason: reason.into(),
        }
    }
}

impl ServerConfig {
    /// Reads the defaults, then `file` (if given; it must exist), then the `FLOODWAY_SERVE_*`
    /// environment, then `overrides`, and checks the result.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(ServerConfig::default()));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError::invalid(
                    "--config",
                    format!("no configuration file at {}", file.display()),
                ));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        let config: ServerConfig = figment
            .merge(Env::prefixed(ENV_PREFIX).split("__"))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|error| ConfigError::Load(Box::new(error)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting and the rules between them; the error names the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if !(limits::BODY_BYTES_MAX_MIN..=limits::BODY_BYTES_MAX_MAX).contains(&l.body_bytes_max) {
            return Err(ConfigError::invalid(
                "limits.body_bytes_max",
                format!(
                    "must be between {} and {} bytes (a maximal payload, base64-encoded, must fit)",
                    limits::BODY_BYTES_MAX_MIN,
                    limits::BODY_BYTES_MAX_MAX
                ),
            ));
        }
        if !(1..=floodway_core::limits::BATCH_SIZE_MAX).contains(&l.batch_size_max) {
            return Err(ConfigError::invalid(
                "limits.batch_size_max",
                format!(
                    "must be between 1 and {}",
                    floodway_core::limits::BATCH_SIZE_MAX
                ),
            ));
        }
        if l.header_read_timeout.is_zero() || l.header_read_timeout > Duration::from_secs(3600) {
            return Err(ConfigError::invalid(
                "limits.header_read_timeout",
                "must be positive and at most 1h",
            ));
        }
        if l.reserve_wait_max > floodway_core::limits::RESERVE_WAIT_MAX {
            return Err(ConfigError::invalid(
                "limits.reserve_wait_max",
                "must not exceed 60s",
            ));
        }
        if l.request_timeout < l.reserve_wait_max + limits::RESERVE_WAIT_MARGIN
            || l.request_timeout > Duration::from_secs(3600)
        {
            return Err(ConfigError::invalid(
                "limits.request_timeout",
                format!(
                    "must be at least limits.reserve_wait_max + {} ({}) and at most 1h, so a \
                     long poll ends before its request times out",
                    floodway_core::duration::format(limits::RESERVE_WAIT_MARGIN),
                    floodway_core::duration::format(
                        l.reserve_wait_max + limits::RESERVE_WAIT_MARGIN
                    )
                ),
            ));
        }
        if !(1..=limits::CONNECTIONS_MAX_MAX).contains(&l.connections_max) {
            return Err(ConfigError::invalid(
                "limits.connections_max",
                format!("must be between 1 and {}", limits::CONNECTIONS_MAX_MAX),
            ));
        }
        if let Some(rate) = &self.rate {
            check_rate("rate", rate)?;
        }
        if self.tokens.len() > limits::TOKENS_MAX {
            return Err(ConfigError::invalid(
                "tokens",
                format!("at most {} tokens", limits::TOKENS_MAX),
            ));
        }
        for (i, token) in self.tokens.iter().enumerate() {
            crate::auth::check_token_config(i, token)?;
            if self.tokens[..i]
                .iter()
                .any(|other| other.name == token.name)
            {
                return Err(ConfigError::invalid(
                    format!("tokens[{i}].name"),
                    format!("{:?} is used by another token", token.name),
                ));
            }
            if self.tokens[..i]
                .iter()
                .any(|other| other.hash == token.hash)
            {
                return Err(ConfigError::invalid(
                    format!("tokens[{i}].hash"),
                    "the same token is configured twice",
                ));
            }
            if let Some(rate) = &token.rate {
                check_rate(&format!("tokens[{i}].rate"), rate)?;
            }
        }
        if self.tokens.is_empty() && !self.listen.ip().is_loopback() && !self.insecure {
            return Err(ConfigError::invalid(
                "listen",
                format!(
                    "refusing to listen on {} with no tokens configured: anyone who can reach \
                     it could do anything. Configure [[tokens]] (see `floodway token`), listen \
                     on a loopback address, or pass --insecure",
                    self.listen
                ),
            ));
        }
        Ok(())
    }

    /// True when requests must carry a bearer token.
    pub fn auth_enabled(&self) -> bool {
        !self.tokens.is_empty()
    }
}

fn check_rate(setting: &str, rate: &RateLimit) -> Result<(), ConfigError> {
    floodway_backpressure::TokenBucket::new(rate.per_second, rate.burst, Duration::ZERO)
        .map(|_| ())
        .map_err(|error| ConfigError::invalid(format!("{setting}.{}", error.field), error.reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    #[test]
    fn defaults_are_valid_and_listen_on_loopback() {
        let config = ServerConfig::default();
        config.validate().unwrap();
        assert!(config.listen.ip().is_loopback());
        assert!(!config.auth_enabled());
    }

    #[test]
    fn a_public_address_without_tokens_needs_insecure() {
        let mut config = ServerConfig {
            listen: "0.0.0.0:7700".parse().unwrap(),
            ..ServerConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("--insecure"), "{err}");
        config.insecure = true;
        config.validate().unwrap();
        config.insecure = false;
        config.tokens.push(TokenConfig {
            name: "a".into(),
            hash: HASH.into(),
            scopes: vec![Scope::Admin],
            queues: every_queue(),
            rate: None,
        });
        config.validate().unwrap();
    }

    #[test]
    fn limits_are_checked_by_name() {
        let mut config = ServerConfig::default();
        config.limits.request_timeout = Duration::from_secs(5);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("limits.request_timeout"), "{err}");
        let mut config = ServerConfig::default();
        config.limits.body_bytes_max = 10;
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("body_bytes_max")
        );
        let config = ServerConfig {
            rate: Some(RateLimit {
                per_second: 0.0,
                burst: 1,
            }),
            ..ServerConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("rate.rate")
        );
    }

    #[test]
    fn file_then_environment_then_overrides() {
        let dir = std::env::temp_dir().join(format!("floodway-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("serve.toml");
        std::fs::write(
            &file,
            format!(
                "listen = \"127.0.0.1:9000\"\n[limits]\nrequest_timeout = \"40s\"\n\
                 [[tokens]]\nname = \"a\"\nhash = \"{HASH}\"\nscopes = [\"produce\"]\n"
            ),
        )
        .unwrap();
        let config = ServerConfig::load(Some(&file), &Overrides::default()).unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.limits.request_timeout, Duration::from_secs(40));
        assert_eq!(config.tokens[0].queues, vec!["*"]);
        let overrides = Overrides {
            listen: Some("127.0.0.1:9001".parse().unwrap()),
            ..Overrides::default()
        };
        let config = ServerConfig::load(Some(&file), &overrides).unwrap();
        assert_eq!(config.listen.port(), 9001);
        assert_eq!(config.limits.request_timeout, Duration::from_secs(40));

        std::fs::write(&file, "listne = \"127.0.0.1:1\"\n").unwrap();
        let err = ServerConfig::load(Some(&file), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("listne"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_dashboard_is_on_unless_the_file_or_no_dashboard_turns_it_off() {
        assert!(ServerConfig::default().dashboard);
        let dir = std::env::temp_dir().join(format!("floodway-dashboard-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("serve.toml");
        std::fs::write(&file, "dashboard = false\n").unwrap();
        let config = ServerConfig::load(Some(&file), &Overrides::default()).unwrap();
        assert!(!config.dashboard);
        std::fs::write(&file, "dashboard = true\n").unwrap();
        let no_dashboard = Overrides {
            dashboard: Some(false),
            ..Overrides::default()
        };
        let config = ServerConfig::load(Some(&file), &no_dashboard).unwrap();
        assert!(!config.dashboard, "the flag wins over the file");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
