//! Bearer tokens with scopes per queue pattern, stored hashed and compared in constant time,
//! and a rate limit per token.
//!
//! The configuration holds only `sha256:<hex>` of each token. A request's token is hashed once
//! and compared with every configured hash with [`subtle`]'s constant-time equality, always all
//! of them, so the time taken says nothing about which token matched or how much of it did.
//! SHA-256 rather than a password hash (argon2): tokens are 256 random bits made by
//! [`generate_token`], so there is no dictionary to slow down, and a slow hash per request
//! would cost milliseconds of CPU on every call (docs/decisions/0008).
//!
//! | route | scope needed |
//! |---|---|
//! | enqueue, cancel | `produce` on the queue (cancel: `produce` or `admin`) |
//! | reserve, ack, fail, extend, release; get and list tasks | `consume` on the queue (or `admin`) |
//! | queue statistics | any scope on the queue |
//! | configure, pause, resume, dead letters | `admin` on the queue |
//! | maintenance (promote, reap), `/metrics` | `admin` (metrics show only the queues it covers) |
//! | `/healthz`, `/readyz`, `/openapi.json` | none |
//!
//! With no tokens configured, authentication is off and every caller may do everything; the
//! configuration then refuses a non-loopback address unless `insecure` is set.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use floodway_backpressure::TokenBucket;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::config::{ConfigError, RateLimit, Scope, ServerConfig, TokenConfig};
use crate::error::ApiError;
use crate::limits;
use crate::wire::ErrorCode;

/// The prefix of every token [`generate_token`] makes, so a leaked token is recognisable
/// (secret scanners key on such prefixes).
pub const TOKEN_PREFIX: &str = "fw_";

/// A new random token: [`TOKEN_PREFIX`] and 32 bytes from the operating system's random source,
/// base64url-encoded.
pub fn generate_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// The hash to put in the configuration for `token`: `sha256:` and 64 hex digits.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut text = String::with_capacity(7 + 64);
    text.push_str("sha256:");
    for byte in digest {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// Parses `sha256:<64 hex>` into the digest.
fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let hex = text.strip_prefix("sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(digest)
}

/// Checks one token's configuration; `index` names it in the error.
pub(crate) fn check_token_config(index: usize, token: &TokenConfig) -> Result<(), ConfigError> {
    let setting = |field: &str| format!("tokens[{index}].{field}");
    if token.name.is_empty() || token.name.len() > 128 {
        return Err(ConfigError::invalid(
            setting("name"),
            "must be 1 to 128 bytes",
        ));
    }
    if parse_hash(&token.hash).is_none() {
        return Err(ConfigError::invalid(
            setting("hash"),
            "must be \"sha256:\" and 64 hex digits, as `floodway token` prints it",
        ));
    }
    if token.scopes.is_empty() {
        return Err(ConfigError::invalid(
            setting("scopes"),
            "give at least one of produce, consume, admin",
        ));
    }
    if token.queues.is_empty() || token.queues.len() > limits::TOKEN_QUEUES_MAX {
        return Err(ConfigError::invalid(
            setting("queues"),
            format!(
                "give 1 to {} queue names or patterns (\"*\" for every queue)",
                limits::TOKEN_QUEUES_MAX
            ),
        ));
    }
    for (j, pattern) in token.queues.iter().enumerate() {
        if let Err(reason) = QueuePattern::new(pattern) {
            return Err(ConfigError::invalid(
                setting(&format!("queues[{j}]")),
                reason,
            ));
        }
    }
    Ok(())
}

/// A queue name, or a pattern in which `*` matches any run of characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuePattern(String);

impl QueuePattern {
    /// Checks `pattern`: the characters of a queue name, and `*`.
    pub fn new(pattern: &str) -> Result<Self, String> {
        if pattern.is_empty() || pattern.len() > floodway_core::limits::QUEUE_NAME_LEN_MAX {
            return Err("a queue pattern must be 1 to 128 bytes".into());
        }
        if let Some(bad) = pattern
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '*')))
        {
            return Err(format!(
                "queue pattern {pattern:?} contains {bad:?}; use queue-name characters and *"
            ));
        }
        Ok(QueuePattern(pattern.to_owned()))
    }

    /// True when `queue` matches.
    pub fn matches(&self, queue: &str) -> bool {
        glob(self.0.as_bytes(), queue.as_bytes())
    }

    /// True when the pattern matches every queue name.
    pub fn matches_all(&self) -> bool {
        self.0.bytes().all(|b| b == b'*')
    }
}

/// Wildcard matching with `*` only: the classic greedy algorithm with one backtrack point,
/// linear in practice and at worst O(pattern × text), both at most 128 bytes.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// One configured token, ready for requests.
struct Entry {
    name: String,
    digest: [u8; 32],
    scopes: Vec<Scope>,
    queues: Vec<QueuePattern>,
    /// Its rate limit, if it has one (its own or the server's default).
    bucket: Option<Mutex<TokenBucket>>,
}

/// The server's tokens, and the rate limits of their holders. Built once at start-up.
pub struct Auth {
    entries: Vec<Entry>,
    /// The rate limit of anonymous callers, when authentication is off.
    anonymous_bucket: Option<Mutex<TokenBucket>>,
    /// The zero of the buckets' time.
    origin: Instant,
}

/// Who is calling: anonymous (authentication off) or the holder of configured token `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Authentication is off: every scope on every queue.
    Anonymous,
    /// The holder of the token at this index of the configuration.
    Token(usize),
}

fn bucket(rate: Option<&RateLimit>) -> Option<Mutex<TokenBucket>> {
    rate.map(|rate| {
        Mutex::new(
            TokenBucket::new(rate.per_second, rate.burst, Duration::ZERO)
                .expect("rate limits are validated with the configuration"),
        )
    })
}

impl Auth {
    /// The tokens of a validated configuration.
    pub fn new(config: &ServerConfig) -> Self {
        let entries = config
            .tokens
            .iter()
            .map(|token| Entry {
                name: token.name.clone(),
                digest: parse_hash(&token.hash).expect("token hashes are validated"),
                scopes: token.scopes.clone(),
                queues: token
                    .queues
                    .iter()
                    .map(|q| QueuePattern::new(q).expect("queue patterns are validated"))
                    .collect(),
                bucket: bucket(token.rate.as_ref().or(config.rate.as_ref())),
            })
            .collect::<Vec<_>>();
        let anonymous_bucket = if entries.is_empty() {
            bucket(config.rate.as_ref())
        } else {
            None
        };
        Auth {
            entries,
            anonymous_bucket,
            origin: Instant::now(),
        }
    }

    /// True when requests must carry a bearer token.
    pub fn enabled(&self) -> bool {
        !self.entries.is_empty()
    }

    /// Who sends a request with this `Authorization` header: 401 without a bearer token or
    /// with one the server does not know. The token is never logged or echoed.
    pub fn authenticate(&self, header: Option<&HeaderValue>) -> Result<Caller, ApiError> {
        if !self.enabled() {
            return Ok(Caller::Anonymous);
        }
        let Some(header) = header else {
            return Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "this server requires a bearer token: send Authorization: Bearer <token>",
            ));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty() && token.len() <= limits::TOKEN_LEN_MAX)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unauthenticated,
                    "the Authorization header must be \"Bearer <token>\"",
                )
            })?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every entry is compared, whichever matches; the index is selected without branching.
        let mut found = subtle::Choice::from(0);
        let mut index = 0u64;
        for (i, entry) in self.entries.iter().enumerate() {
            let equal = entry.digest.ct_eq(&digest);
            index = u64::conditional_select(&index, &(i as u64), equal);
            found |= equal;
        }
        if bool::from(found) {
            Ok(Caller::Token(index as usize))
        } else {
            Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "the bearer token is not one this server accepts",
            ))
        }
    }

    /// Takes one request from the caller's rate limit: 429 `rate_limited` with `Retry-After`
    /// when it is exhausted.
    pub fn admit(&self, caller: Caller) -> Result<(), ApiError> {
        let bucket = match caller {
            Caller::Anonymous => self.anonymous_bucket.as_ref(),
            Caller::Token(i) => self.entries[i].bucket.as_ref(),
        };
        let Some(bucket) = bucket else {
            return Ok(());
        };
        let now = self.origin.elapsed();
        let mut bucket = bucket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if bucket.try_take(now) {
            return Ok(());
        }
        let wait = bucket.next_token_in(now);
        Err(ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "rate limit of {} requests/s (burst {}) exceeded; retry in {}",
                bucket.rate(),
                bucket.burst(),
                floodway_core::duration::format(Duration::from_millis(
                    wait.as_millis().max(1) as u64
                ))
            ),
        )
        .with_retry_after(wait))
    }

    /// The token's name, for logs; `None` for anonymous callers.
    pub fn name(&self, caller: Caller) -> Option<&str> {
        match caller {
            Caller::Anonymous => None,
            Caller::Token(i) => Some(&self.entries[i].name),
        }
    }

    /// True when `caller` has any of `scopes` on `queue`.
    pub fn allows(&self, caller: Caller, scopes: &[Scope], queue: &str) -> bool {
        match caller {
            Caller::Anonymous => true,
            Caller::Token(i) => {
                let entry = &self.entries[i];
                entry.scopes.iter().any(|s| scopes.contains(s))
                    && entry.queues.iter().any(|p| p.matches(queue))
            }
        }
    }

    /// True when `caller` has any of `scopes` on every queue (a pattern of `*`).
    pub fn allows_every_queue(&self, caller: Caller, scopes: &[Scope]) -> bool {
        match caller {
            Caller::Anonymous => true,
            Caller::Token(i) => {
                let entry = &self.entries[i];
                entry.scopes.iter().any(|s| scopes.contains(s))
                    && entry.queues.iter().any(QueuePattern::matches_all)
            }
        }
    }

    /// 403 unless `caller` has one of `scopes` on `queue`.
    pub fn require(&self, caller: Caller, scopes: &[Scope], queue: &str) -> Result<(), ApiError> {
        if self.allows(caller, scopes, queue) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                scope_names(scopes).as_str(),
                Some(queue),
            ))
        }
    }

    /// 403 unless `caller` has one of `scopes` on every queue.
    pub fn require_every_queue(&self, caller: Caller, scopes: &[Scope]) -> Result<(), ApiError> {
        if self.allows_every_queue(caller, scopes) {
            Ok(())
        } else {
            Err(ApiError::forbidden(scope_names(scopes).as_str(), None))
        }
    }

    /// 403 unless `caller` has one of `scopes` on at least one queue pattern.
    pub fn require_somewhere(&self, caller: Caller, scopes: &[Scope]) -> Result<(), ApiError> {
        let has = match caller {
            Caller::Anonymous => true,
            Caller::Token(i) => self.entries[i].scopes.iter().any(|s| scopes.contains(s)),
        };
        if has {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("this token lacks the {} scope", scope_names(scopes)),
            ))
        }
    }
}

fn scope_names(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, secret: &str, scopes: &[Scope], queues: &[&str]) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            hash: hash_token(secret),
            scopes: scopes.to_vec(),
            queues: queues.iter().map(|q| (*q).to_owned()).collect(),
            rate: None,
        }
    }

    fn bearer(token: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
    }

    #[test]
    fn globs_match_runs_of_characters() {
        let p = |s| QueuePattern::new(s).unwrap();
        assert!(p("emails.*").matches("emails.high"));
        assert!(p("emails.*").matches("emails."));
        assert!(!p("emails.*").matches("email"));
        assert!(p("*").matches("anything"));
        assert!(p("a*b*c").matches("aXXbYYc"));
        assert!(!p("a*b*c").matches("aXXbYY"));
        assert!(p("orders").matches("orders"));
        assert!(!p("orders").matches("orders2"));
        assert!(p("*").matches_all() && !p("a*").matches_all());
        assert!(QueuePattern::new("a/b").is_err());
    }

    #[test]
    fn generated_tokens_are_random_and_hash_to_their_configured_form() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == 3 + 43, "{a}");
        assert!(parse_hash(&hash_token(&a)).is_some());
        assert_eq!(
            hash_token("foo"),
            "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
        );
    }

    #[test]
    fn tokens_authenticate_and_scopes_apply_per_queue_pattern() {
        let config = ServerConfig {
            tokens: vec![
                token(
                    "producer",
                    "p-secret",
                    &[Scope::Produce],
                    &["orders", "emails.*"],
                ),
                token("admin", "a-secret", &[Scope::Admin], &["*"]),
            ],
            ..ServerConfig::default()
        };
        let auth = Auth::new(&config);
        let producer = auth.authenticate(Some(&bearer("p-secret"))).unwrap();
        assert_eq!(producer, Caller::Token(0));
        assert_eq!(auth.name(producer), Some("producer"));
        assert!(auth.allows(producer, &[Scope::Produce], "emails.low"));
        assert!(!auth.allows(producer, &[Scope::Produce], "payments"));
        assert!(!auth.allows(producer, &[Scope::Consume], "orders"));
        assert!(!auth.allows_every_queue(producer, &[Scope::Produce]));
        let admin = auth.authenticate(Some(&bearer("a-secret"))).unwrap();
        assert!(auth.allows_every_queue(admin, &[Scope::Admin]));
        for bad in [
            None,
            Some(bearer("nope")),
            Some(HeaderValue::from_static("Basic abc")),
        ] {
            let err = auth.authenticate(bad.as_ref()).unwrap_err();
            assert_eq!(err.code(), ErrorCode::Unauthenticated);
            assert!(!err.to_string().contains("nope"));
        }
        assert_eq!(
            auth.require(producer, &[Scope::Admin], "orders")
                .unwrap_err()
                .code(),
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn without_tokens_everyone_is_anonymous_with_every_scope() {
        let auth = Auth::new(&ServerConfig::default());
        let caller = auth.authenticate(None).unwrap();
        assert_eq!(caller, Caller::Anonymous);
        assert!(auth.allows_every_queue(caller, &[Scope::Admin]));
        assert!(auth.admit(caller).is_ok());
    }

    #[test]
    fn the_rate_limit_refuses_with_a_retry_hint() {
        let mut limited = token("slow", "s", &[Scope::Produce], &["*"]);
        limited.rate = Some(RateLimit {
            per_second: 0.001,
            burst: 2,
        });
        let auth = Auth::new(&ServerConfig {
            tokens: vec![limited, token("free", "f", &[Scope::Produce], &["*"])],
            ..ServerConfig::default()
        });
        let slow = auth.authenticate(Some(&bearer("s"))).unwrap();
        let free = auth.authenticate(Some(&bearer("f"))).unwrap();
        assert!(auth.admit(slow).is_ok());
        assert!(auth.admit(slow).is_ok());
        let err = auth.admit(slow).unwrap_err();
        assert_eq!(err.code(), ErrorCode::RateLimited);
        for _ in 0..100 {
            assert!(auth.admit(free).is_ok(), "other tokens are unaffected");
        }
    }
}
