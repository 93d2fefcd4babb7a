//! The web dashboard: a page at `/` and its static files at `/dashboard/{file}`, compiled into
//! the binary with `include_bytes!` (the sources are in `crates/server/dashboard/`).
//!
//! The files are hand-written HTML, CSS and JavaScript modules: no build step, nothing fetched
//! from elsewhere at run time. The page is a client of the public API like any other: it reads
//! and changes queues and tasks only through `/v1/*`, with the user's bearer token, so it can
//! do exactly what the token may do. The files themselves carry no data, so serving them needs
//! no token; they are not API routes and are not in the OpenAPI document (ARCHITECTURE.md,
//! invariants). `ServerConfig::dashboard = false` (`floodway serve --no-dashboard`) leaves
//! them out of the router.
//!
//! Caching: every answer carries a strong `ETag` (a hash of the file computed at compile time)
//! and `Cache-Control: no-cache`, so a browser keeps its copy but asks each time whether it is
//! still current and gets an empty 304 while it is; a new binary with changed files is picked
//! up at the next load, never mixed with stale modules. The page is served with a
//! Content-Security-Policy that allows scripts, styles and requests to this origin only.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::AppState;
use crate::error::ApiError;
use crate::wire::ErrorCode;

/// Where the files are served, below the page at `/`. The page names them relative to
/// itself (`dashboard/app.js`), so the dashboard also works behind a proxy under a prefix.
pub(crate) const ASSETS_PREFIX: &str = "/dashboard/";

/// One file of the dashboard.
struct Asset {
    /// Its name under [`ASSETS_PREFIX`].
    name: &'static str,
    /// Its `Content-Type`.
    content_type: &'static str,
    /// Its bytes, compiled in.
    body: &'static [u8],
    /// FNV-1a of `body`, computed at compile time; the `ETag`.
    hash: u64,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// 64-bit FNV-1a: a content hash cheap enough to compute in a `const` context.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../dashboard/", $name)),
            hash: fnv1a(include_bytes!(concat!("../dashboard/", $name))),
        }
    };
}

/// The page itself, served at `/`.
const INDEX: Asset = asset!("index.html", HTML);

/// Every other file, served at `/dashboard/{name}`.
const ASSETS: &[Asset] = &[
    asset!("style.css", CSS),
    asset!("favicon.svg", SVG),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("format.js", JS),
    asset!("stats.js", JS),
    asset!("chart.js", JS),
    asset!("live.js", JS),
    asset!("ui.js", JS),
    asset!("queues.js", JS),
    asset!("queue.js", JS),
    asset!("task.js", JS),
    asset!("dead.js", JS),
];

/// What the page may load and where it may send requests: this origin only; no inline
/// script or style, no frames, no forms posted anywhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The routes of the dashboard; merged into the router unless the dashboard is turned off.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/dashboard/{file}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    let mut response = serve(&INDEX, &headers);
    let set = response.headers_mut();
    set.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    set.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    set.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

async fn asset(uri: Uri, headers: HeaderMap) -> Response {
    let name = uri.path().strip_prefix(ASSETS_PREFIX).unwrap_or_default();
    match ASSETS.iter().find(|asset| asset.name == name) {
        Some(asset) => serve(asset, &headers),
        None => ApiError::new(
            ErrorCode::NotFound,
            format!("the dashboard has no file {name:?}"),
        )
        .into_response(),
    }
}

/// `asset`, or an empty 304 when the request's `If-None-Match` names its current version.
fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", asset.hash);
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*");
    let etag = HeaderValue::from_str(&etag).expect("a hex ETag is a valid header value");
    let common = [
        (header::ETAG, etag),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_names_are_unique_and_the_hash_follows_the_content() {
        for (i, asset) in ASSETS.iter().enumerate() {
            assert!(
                ASSETS[..i].iter().all(|other| other.name != asset.name),
                "{} is listed twice",
                asset.name
            );
            assert_eq!(asset.hash, fnv1a(asset.body));
            assert!(!asset.body.is_empty(), "{} is empty", asset.name);
        }
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        // The FNV-1a test vector for "a".
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn every_module_the_scripts_import_is_served() {
        for asset in ASSETS.iter().filter(|asset| asset.content_type == JS) {
            let text = std::str::from_utf8(asset.body).unwrap();
            for import in text.split("from \"./").skip(1) {
                let name = import.split('"').next().unwrap();
                assert!(
                    ASSETS.iter().any(|other| other.name == name),
                    "{} imports {name}, which is not served",
                    asset.name
                );
            }
        }
        let page = std::str::from_utf8(INDEX.body).unwrap();
        for reference in page.split("\"dashboard/").skip(1) {
            let name = reference.split('"').next().unwrap();
            assert!(
                ASSETS.iter().any(|other| other.name == name),
                "index.html names {name}, which is not served"
            );
        }
    }
}
