//! Authentication and scopes, route by route from the OpenAPI document: every protected
//! operation refuses a missing or unknown token with 401 and a token without the scope with
//! 403 (or hides what the token may not see), and changes nothing when it refuses.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Api, Reply, config_with_tokens, secret};

/// What a token scoped to another queue gets from an operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Outsider {
    /// 403 `forbidden`.
    Forbidden,
    /// 200, but without the other queues' data.
    Filtered,
    /// 404 `unknown_task`: the task is hidden.
    Hidden,
}

/// Every protected operation: method, path, body, and what an outsider gets. The test fails
/// if the OpenAPI document lists an operation that is not here, so a new route must say how
/// it is protected.
pub(crate) fn operations(id: &str, lease: &str) -> Vec<(Method, String, Option<Value>, Outsider)> {
    use Outsider::*;
    vec![
        (
            Method::POST,
            "/v1/queues/orders/tasks".into(),
            Some(json!({"kind": "k"})),
            Forbidden,
        ),
        (Method::GET, "/v1/tasks".into(), None, Forbidden),
        (Method::GET, format!("/v1/tasks/{id}"), None, Hidden),
        (
            Method::POST,
            "/v1/tasks/cancel".into(),
            Some(json!({"id": id})),
            Forbidden,
        ),
        (
            Method::POST,
            "/v1/queues/orders/reserve".into(),
            Some(json!({})),
            Forbidden,
        ),
        (
            Method::POST,
            "/v1/leases/ack".into(),
            Some(json!({"lease": lease})),
            Forbidden,
        ),
        (
            Method::POST,
            "/v1/leases/fail".into(),
            Some(json!({"lease": lease, "error": "x"})),
            Forbidden,
        ),
        (
            Method::POST,
            "/v1/leases/extend".into(),
            Some(json!({"lease": lease})),
            Forbidden,
        ),
        (
            Method::POST,
            "/v1/leases/release".into(),
            Some(json!({"lease": lease})),
            Forbidden,
        ),
        (
            Method::POST,
            "/v1/leases/effects".into(),
            Some(json!({"lease": lease, "key": "charge", "result": "ok"})),
            Forbidden,
        ),
        (Method::GET, "/v1/queues".into(), None, Filtered),
        (Method::GET, "/v1/queues/orders".into(), None, Forbidden),
        (
            Method::PUT,
            "/v1/queues/orders".into(),
            Some(json!({})),
            Forbidden,
        ),
        (
            Method::POST,
            "/v1/queues/orders/pause".into(),
            None,
            Forbidden,
        ),
        (
            Method::POST,
            "/v1/queues/orders/resume".into(),
            None,
            Forbidden,
        ),
        (Method::GET, "/v1/dead-letters".into(), None, Forbidden),
        (Method::DELETE, "/v1/dead-letters".into(), None, Forbidden),
        (
            Method::POST,
            "/v1/dead-letters/replay".into(),
            Some(json!({"queue": "orders"})),
            Forbidden,
        ),
        (
            Method::POST,
            "/v1/dead-letters/purge".into(),
            Some(json!({"ids": [id]})),
            Forbidden,
        ),
        (
            Method::POST,
            "/v1/maintenance/promote".into(),
            None,
            Forbidden,
        ),
        (Method::POST, "/v1/maintenance/reap".into(), None, Forbidden),
        (Method::GET, "/metrics".into(), None, Filtered),
        (Method::GET, "/v1/broker".into(), None, Filtered),
    ]
}

pub(crate) async fn send(
    api: &Api,
    method: &Method,
    path: &str,
    body: &Option<Value>,
    token: Option<&str>,
) -> Reply {
    let body = body
        .as_ref()
        .map(|b| ("application/json", serde_json::to_vec(b).unwrap()));
    api.send(method.clone(), path, token, body).await
}

/// The path templates of the document's operations, as `(METHOD, path)`.
fn documented() -> Vec<(String, String)> {
    let spec = serde_json::to_value(floodway_server::openapi()).unwrap();
    let mut operations = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let protected = operation.get("security").is_some();
            if protected {
                operations.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations.sort();
    operations
}

#[tokio::test]
async fn every_protected_route_refuses_missing_unknown_and_unscoped_tokens() {
    let api = Api::start_with(config_with_tokens()).await;
    let admin = secret("admin");
    let enqueued = send(
        &api,
        &Method::POST,
        "/v1/queues/orders/tasks",
        &Some(json!({"kind": "k"})),
        Some(&admin),
    )
    .await;
    assert_eq!(enqueued.status, 201, "{}", enqueued.text);
    let id = enqueued.json["tasks"][0]["id"].as_str().unwrap().to_owned();
    let reserved = send(
        &api,
        &Method::POST,
        "/v1/queues/orders/reserve",
        &Some(json!({})),
        Some(&admin),
    )
    .await;
    let lease = reserved.json["tasks"][0]["lease"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Something in the queue the outsider owns, so a filtered answer has something to show.
    send(
        &api,
        &Method::POST,
        "/v1/queues/elsewhere/tasks",
        &Some(json!({"kind": "k"})),
        Some(&secret("other")),
    )
    .await;

    let operations = operations(&id, &lease);
    let mut covered: Vec<(String, String)> = documented()
        .into_iter()
        .filter(|(method, template)| {
            operations
                .iter()
                .any(|(m, path, _, _)| m.as_str() == method && matches_template(template, path))
        })
        .collect();
    covered.sort();
    assert_eq!(covered, documented(), "every protected operation is tested");

    for (method, path, body, outsider) in &operations {
        for token in [None, Some("fw_unknown_canary"), Some("")] {
            let before = api.snapshot().await;
            let reply = send(&api, method, path, body, token).await;
            assert_eq!(
                reply.status, 401,
                "{method} {path} with {token:?}: {}",
                reply.text
            );
            assert_eq!(reply.code(), "unauthenticated");
            assert!(reply.headers.contains_key("www-authenticate"));
            assert!(
                !reply.text.contains("fw_unknown_canary"),
                "the token is not echoed"
            );
            assert_eq!(
                api.snapshot().await,
                before,
                "{method} {path} changed state"
            );
        }
        let before = api.snapshot().await;
        let reply = send(&api, method, path, body, Some(&secret("other"))).await;
        match outsider {
            Outsider::Forbidden => {
                assert_eq!(reply.status, 403, "{method} {path}: {}", reply.text);
                assert_eq!(reply.code(), "forbidden");
            }
            Outsider::Hidden => {
                assert_eq!(reply.status, 404, "{method} {path}: {}", reply.text);
                assert_eq!(reply.code(), "unknown_task");
            }
            Outsider::Filtered => {
                assert_eq!(reply.status, 200, "{method} {path}: {}", reply.text);
                assert!(
                    !reply.text.contains("orders"),
                    "{method} {path} shows another queue"
                );
            }
        }
        assert_eq!(
            api.snapshot().await,
            before,
            "{method} {path} changed state"
        );
    }

    for (method, path) in [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/openapi.json"),
    ] {
        let reply = api.send(method.parse().unwrap(), path, None, None).await;
        assert_eq!(reply.status, 200, "{path} needs no token");
    }
}

#[tokio::test]
async fn scopes_let_each_token_do_its_own_job_on_its_own_queues() {
    let api = Api::start_with(config_with_tokens()).await;
    let (producer, worker) = (secret("producer"), secret("worker"));
    let task = Some(json!({"kind": "k"}));
    let post = |path: &'static str, body: Option<Value>, token: String| {
        let api = &api;
        async move { send(api, &Method::POST, path, &body, Some(&token)).await }
    };
    assert_eq!(
        post("/v1/queues/orders.eu/tasks", task.clone(), producer.clone())
            .await
            .status,
        201
    );
    assert_eq!(
        post("/v1/queues/payments/tasks", task.clone(), producer.clone())
            .await
            .status,
        403
    );
    assert_eq!(
        post(
            "/v1/queues/orders/reserve",
            Some(json!({})),
            producer.clone()
        )
        .await
        .status,
        403
    );
    assert_eq!(
        post("/v1/queues/orders/tasks", task.clone(), worker.clone())
            .await
            .status,
        403
    );
    let reserved = post(
        "/v1/queues/orders.eu/reserve",
        Some(json!({})),
        worker.clone(),
    )
    .await;
    assert_eq!(reserved.status, 200);
    let lease = reserved.json["tasks"][0]["lease"]["token"].clone();
    assert_eq!(
        post(
            "/v1/leases/ack",
            Some(json!({"lease": lease})),
            producer.clone()
        )
        .await
        .status,
        403
    );
    assert_eq!(
        post(
            "/v1/leases/ack",
            Some(json!({"lease": lease})),
            worker.clone()
        )
        .await
        .status,
        200
    );
    assert_eq!(
        post("/v1/queues/orders.eu/pause", None, worker.clone())
            .await
            .status,
        403
    );
    // Both may read the statistics of their queues.
    let stats = send(
        &api,
        &Method::GET,
        "/v1/queues/orders.eu",
        &None,
        Some(&producer),
    )
    .await;
    assert_eq!(stats.json["totals"]["completed"], 1);
}

/// True when `path` is an instance of the OpenAPI `template` (`{name}` matches one segment).
pub(crate) fn matches_template(template: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && t.ends_with('}')) || t == p)
}
