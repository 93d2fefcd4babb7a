//! [`Transport`]: one HTTP request to the server, and its answer as a wire type or a
//! [`ClientError`]. Everything above it speaks wire types; everything HTTP is here.

use std::sync::Arc;
use std::time::Duration;

use floodway_core::TraceContext;
use floodway_core::trace::{TRACEPARENT_HEADER, TRACESTATE_HEADER};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::ClientConfig;
use crate::error::ClientError;

/// The connection pool and what every request carries.
#[derive(Clone)]
pub(crate) struct Transport {
    client: reqwest::Client,
    /// The base URL, without a trailing `/`.
    base: Arc<str>,
    /// `Bearer <token>`, marked sensitive so no layer prints it.
    authorization: Option<HeaderValue>,
    /// A request's own time limit, beyond what it waits for on purpose.
    timeout: Duration,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("base", &self.base)
            .field("authenticated", &self.authorization.is_some())
            .finish_non_exhaustive()
    }
}

impl Transport {
    pub(crate) fn new(config: &ClientConfig) -> Result<Self, ClientError> {
        let base = config.url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Config(format!(
                "the server URL must start with http:// or https://, not {base:?}"
            )));
        }
        let authorization = config
            .token
            .as_ref()
            .map(|token| {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| {
                        ClientError::Config("the token holds characters a header cannot".into())
                    })?;
                value.set_sensitive(true);
                Ok::<_, ClientError>(value)
            })
            .transpose()?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config(config)?)
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_idle_max)
            .tcp_nodelay(true)
            .http1_only()
            .build()
            .map_err(|error| ClientError::Config(format!("building the HTTP client: {error}")))?;
        Ok(Transport {
            client,
            base: Arc::from(base),
            authorization,
            timeout: config.timeout,
        })
    }

    /// Sends `method path` with `body` as JSON, allowing `wait` on top of the timeout, and
    /// reads the answer as an `R` (2xx) or a [`ClientError::Api`].
    pub(crate) async fn call<R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        wait: Duration,
    ) -> Result<R, ClientError> {
        self.send(method, path, body, wait, None).await
    }

    /// [`Transport::call`] with `trace` in the request's `traceparent` and `tracestate`
    /// headers, so the server's span continues the caller's trace.
    pub(crate) async fn call_traced<R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        trace: &TraceContext,
    ) -> Result<R, ClientError> {
        self.send(method, path, body, Duration::ZERO, Some(trace))
            .await
    }

    async fn send<R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        wait: Duration,
        trace: Option<&TraceContext>,
    ) -> Result<R, ClientError> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .timeout(self.timeout + wait);
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        if let Some(trace) = trace {
            request = request.header(TRACEPARENT_HEADER, trace.parent.to_string());
            if let Some(state) = &trace.state {
                request = request.header(TRACESTATE_HEADER, state.as_str());
            }
        }
        if let Some(body) = body {
            let bytes = serde_json::to_vec(body).map_err(|error| {
                ClientError::Config(format!("a request could not be encoded: {error}"))
            })?;
            request = request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(bytes);
        }
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response.bytes().await.map_err(transport_error)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|error| {
                ClientError::Protocol(format!("{status} with a body that does not parse: {error}"))
            });
        }
        match serde_json::from_slice::<floodway_server::wire::ErrorBody>(&bytes) {
            Ok(body) => Err(ClientError::Api {
                status: status.as_u16(),
                error: body.error,
                retry_after,
            }),
            Err(_) => Err(ClientError::Protocol(format!(
                "{status} {}",
                summary(status, &bytes)
            ))),
        }
    }
}

fn transport_error(error: reqwest::Error) -> ClientError {
    ClientError::Transport {
        unsent: error.is_connect(),
        message: error_chain(&error),
    }
}

/// An error and its causes on one line: reqwest's own message says little ("error sending
/// request"); the cause says what happened ("connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// The start of a body that is not a floodway error, for the message.
fn summary(status: StatusCode, bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
    if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("").to_owned()
    } else {
        text
    }
}

/// rustls with the ring provider, trusting the system's roots and `ca_cert`'s.
fn tls_config(config: &ClientConfig) -> Result<rustls::ClientConfig, ClientError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let extra_roots = match &config.ca_cert {
        None => Vec::new(),
        Some(path) => CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|error| {
                ClientError::Config(format!(
                    "reading the CA certificates {}: {error}",
                    path.display()
                ))
            })?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())
            .map_err(|error| ClientError::Config(format!("TLS roots: {error}")))?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ClientError::Config(format!("TLS: {error}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}
