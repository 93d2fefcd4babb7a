//! Request extractors that answer every problem with an [`ApiError`], never with axum's plain
//! text rejections: the caller's identity and rate limit, path and query parameters, and JSON
//! bodies (content type, size, syntax, and the field a value breaks), and the request's W3C
//! trace context.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use floodway_core::trace::{TRACEPARENT_HEADER, TRACESTATE_HEADER};
use floodway_core::{QueueName, TaskId, TraceContext};
use serde::Deserializer;
use serde::de::{DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::wire::ErrorCode;

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    /// Authenticates the request (401) and takes one request from the caller's rate limit
    /// (429). It runs before the body is read, so an unauthenticated request costs no parsing.
    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let caller = app.auth.authenticate(parts.headers.get(AUTHORIZATION))?;
        app.auth.admit(caller)?;
        if let Some(name) = app.auth.name(caller) {
            tracing::Span::current().record("token", name);
        }
        Ok(caller)
    }
}

/// The request's W3C trace context (`traceparent`, `tracestate` headers); `None` when it has
/// none or a malformed one, which is ignored as the recommendation asks (never refused).
pub(crate) struct IncomingTrace(pub(crate) Option<TraceContext>);

impl<S: Send + Sync> FromRequestParts<S> for IncomingTrace {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let header = |name| {
            parts
                .headers
                .get(name)
                .and_then(|value: &axum::http::HeaderValue| value.to_str().ok())
        };
        Ok(IncomingTrace(header(TRACEPARENT_HEADER).and_then(
            |traceparent| TraceContext::parse(traceparent, header(TRACESTATE_HEADER)).ok(),
        )))
    }
}

/// The `{queue}` path parameter, checked as a queue name (422 naming `queue` if it is not one).
pub(crate) struct QueuePath(pub(crate) QueueName);

impl<S: Send + Sync> FromRequestParts<S> for QueuePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::malformed(rejection.body_text()))?;
        Ok(QueuePath(QueueName::new(&name)?))
    }
}

/// The `{id}` path parameter, parsed as a task id (400 if it is not a UUID).
pub(crate) struct TaskIdPath(pub(crate) TaskId);

impl<S: Send + Sync> FromRequestParts<S> for TaskIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(text) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::malformed(rejection.body_text()))?;
        text.parse()
            .map(TaskIdPath)
            .map_err(|error: floodway_core::MalformedTaskId| ApiError::malformed(error.to_string()))
    }
}

/// Query parameters (400 naming the parameter that does not parse).
pub(crate) struct Query<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Query)
            .map_err(|error| {
                let path = error.path().to_string();
                ApiError::malformed(format!("invalid query parameter {path}: {}", error.inner()))
            })
    }
}

/// A request body that must be JSON: read up to the body limit (413 `body_too_large`), with a
/// JSON content type when it is not empty (415). Parsing is the handler's, with [`parse`] or
/// [`parse_one_or_batch`], so each route decides what an empty body means.
pub(crate) struct JsonBytes(pub(crate) Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(is_json_content_type);
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    ErrorCode::BodyTooLarge,
                    "the request body is larger than the server's limit (limits.body_bytes_max)",
                )
            } else {
                ApiError::malformed(format!("the request body could not be read: {}", rejection.body_text()))
            }
        })?;
        if !bytes.is_empty() && !json {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "the request body must be JSON, sent with Content-Type: application/json",
            ));
        }
        Ok(JsonBytes(bytes))
    }
}

/// `application/json`, `application/json; charset=utf-8`, or any `application/*+json`.
fn is_json_content_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

/// Parses `bytes` as a `T`: 400 when it is not JSON, 422 naming the field a value breaks or
/// when the body is not a JSON object (serde would read a struct from an array, by position).
/// An empty body is parsed as `{}`.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes = if bytes.is_empty() { b"{}" } else { bytes };
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
            return Err(ApiError::invalid_field("body", "must be a JSON object"));
        }
        _ => {
            return Err(ApiError::malformed(
                "the request body is not valid JSON: expected an object",
            ));
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(json_error)?;
    deserializer.end().map_err(|error| {
        ApiError::malformed(format!("the request body is not valid JSON: {error}"))
    })?;
    Ok(value)
}

fn json_error(error: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = error.path().to_string();
    let inner = error.into_inner();
    match inner.classify() {
        serde_json::error::Category::Data => {
            let field = if path == "." { "body".to_owned() } else { path };
            ApiError::invalid_field(field, inner.to_string())
        }
        _ => ApiError::malformed(format!("the request body is not valid JSON: {inner}")),
    }
}

/// One item or a batch: the body is a `Batch` when its top-level object has `batch_key`
/// (`"tasks"`, `"leases"`, ...), and a `One` otherwise. Each shape is then parsed strictly,
/// so errors name fields of the shape the caller meant.
pub(crate) enum OneOrBatch<One, Batch> {
    One(One),
    Batch(Batch),
}

pub(crate) fn parse_one_or_batch<One: DeserializeOwned, Batch: DeserializeOwned>(
    bytes: &[u8],
    batch_key: &'static str,
) -> Result<OneOrBatch<One, Batch>, ApiError> {
    let has_key = HasKey(batch_key)
        .deserialize(&mut serde_json::Deserializer::from_slice(
            if bytes.is_empty() { b"{}" } else { bytes },
        ))
        // A body that is not a JSON object fails again, with a precise message, below.
        .unwrap_or(false);
    if has_key {
        parse(bytes).map(OneOrBatch::Batch)
    } else {
        parse(bytes).map(OneOrBatch::One)
    }
}

/// Scans a JSON object's top-level keys for one name, skipping every value unparsed.
struct HasKey(&'static str);

impl<'de> DeserializeSeed<'de> for HasKey {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HasKey {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            found |= key == self.0;
            map.next_value::<IgnoredAny>()?;
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/vnd.floodway+json",
        ] {
            assert!(is_json_content_type(ok), "{ok}");
        }
        for bad in ["text/plain", "application/jsonx", "json", ""] {
            assert!(!is_json_content_type(bad), "{bad}");
        }
    }

    #[test]
    fn parse_errors_name_their_field_or_say_the_json_is_broken() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code, reason = "only parsed")]
        struct Item {
            n: u8,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code, reason = "only parsed")]
        struct Items {
            items: Vec<Item>,
        }
        let err = parse::<Items>(br#"{"items":[{"n":1},{"n":300}]}"#).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidField);
        assert_eq!(
            err.body().error.details.unwrap().field.as_deref(),
            Some("items[1].n")
        );
        assert_eq!(
            parse::<Items>(b"{\"items\":").unwrap_err().code(),
            ErrorCode::MalformedRequest
        );
        assert_eq!(
            parse::<Items>(b"{\"items\":[]} x").unwrap_err().code(),
            ErrorCode::MalformedRequest
        );
        assert!(matches!(
            parse_one_or_batch::<Item, Items>(br#"{"n": 3}"#, "items"),
            Ok(OneOrBatch::One(_))
        ));
        assert!(matches!(
            parse_one_or_batch::<Item, Items>(br#"{"x": {"items": 1}, "items": []}"#, "items"),
            Ok(OneOrBatch::Batch(_))
        ));
    }
}
