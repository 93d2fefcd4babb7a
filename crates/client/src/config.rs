//! [`ClientConfig`]: where the server is and how to reach it, and the [`Token`] that
//! authenticates the client.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::limits::{
    CONNECT_TIMEOUT_DEFAULT, POOL_IDLE_MAX_DEFAULT, POOL_IDLE_TIMEOUT_DEFAULT, TIMEOUT_DEFAULT,
};

/// A bearer token. Its `Debug` form hides the value, so a token in a logged struct or error
/// never reaches the logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps `token`.
    pub fn new(token: impl Into<String>) -> Self {
        Token(token.into())
    }

    /// The token itself, for an `Authorization` header (a client of your own); never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl std::str::FromStr for Token {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Token::new(s))
    }
}

/// How to reach a floodway server.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The server's base URL: `http://host:port` or `https://host:port`.
    pub url: String,
    /// The bearer token, when the server requires one.
    pub token: Option<Token>,
    /// A PEM file of extra root certificates to trust (a private CA, or a self-signed server
    /// certificate), on top of the system's.
    pub ca_cert: Option<PathBuf>,
    /// How long one request may take, beyond a reserve's wait.
    pub timeout: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long an idle connection is kept for reuse.
    pub pool_idle_timeout: Duration,
    /// Most idle connections kept.
    pub pool_idle_max: usize,
}

impl ClientConfig {
    /// The defaults, for the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        ClientConfig {
            url: url.into(),
            token: None,
            ca_cert: None,
            timeout: TIMEOUT_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            pool_idle_timeout: POOL_IDLE_TIMEOUT_DEFAULT,
            pool_idle_max: POOL_IDLE_MAX_DEFAULT,
        }
    }

    /// Authenticates with `token`.
    pub fn token(mut self, token: Token) -> Self {
        self.token = Some(token);
        self
    }

    /// Trusts the root certificates in the PEM file `path` too.
    pub fn ca_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_cert = Some(path.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_never_shows_in_debug_output() {
        let config = ClientConfig::new("http://x").token(Token::new("fw_canary"));
        let shown = format!("{config:?}");
        assert!(!shown.contains("fw_canary"), "{shown}");
        assert!(shown.contains("redacted"));
    }
}
