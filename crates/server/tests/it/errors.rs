//! Every error the API names, with its status and code, and proof that the refused request
//! changed nothing: the broker's tasks and statistics are compared before and after.

use std::time::Duration;

use floodway_core::limits;
use floodway_server::{Limits, RateLimit, ServerConfig};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Api, Reply};

/// Sends a request the server must refuse, and checks status, code, and that nothing changed.
pub(crate) async fn refused(
    api: &Api,
    status: u16,
    code: &str,
    send: impl AsyncFnOnce(&Api) -> Reply,
) -> Reply {
    let before = api.snapshot().await;
    let reply = send(api).await;
    assert_eq!(
        reply.status, status,
        "expected {status} {code}: {}",
        reply.text
    );
    assert_eq!(reply.code(), code, "{}", reply.text);
    // A refusal leaves one trace by design: the counters of refusals (the broker contract's
    // `rejected_full`, `rejected_overloaded` and `stale_refused`).
    let without_refusal_counts = |(tasks, mut stats): (Vec<_>, Vec<floodway_core::QueueStats>)| {
        for s in &mut stats {
            s.totals.rejected_full = 0;
            s.totals.rejected_overloaded = 0;
            s.totals.stale_refused = 0;
        }
        (tasks, stats)
    };
    let after = without_refusal_counts(api.snapshot().await);
    assert_eq!(
        after,
        without_refusal_counts(before),
        "a refused request changed the broker's state"
    );
    reply
}

fn raw(content_type: &'static str, body: &[u8]) -> Option<(&'static str, Vec<u8>)> {
    Some((content_type, body.to_vec()))
}

/// An API with one queue holding one task that a worker has reserved; returns the lease.
async fn with_a_reserved_task() -> (Api, Value) {
    let api = Api::start().await;
    let reply = api
        .post(
            "/v1/queues/orders/tasks",
            json!({"kind": "k", "payload": 1}),
        )
        .await;
    assert_eq!(reply.status, 201);
    let reply = api
        .post("/v1/queues/orders/reserve", json!({"lease": "10s"}))
        .await;
    let lease = reply.json["tasks"][0]["lease"].clone();
    assert!(lease.is_object(), "{}", reply.text);
    (api, lease)
}

#[tokio::test]
async fn malformed_requests_are_400() {
    let (api, _) = with_a_reserved_task().await;
    let reply = refused(&api, 400, "malformed_request", async |api| {
        api.send(
            Method::POST,
            "/v1/queues/orders/tasks",
            None,
            raw("application/json", b"{\"kind\": \"k\", "),
        )
        .await
    })
    .await;
    assert!(
        reply.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    refused(&api, 400, "malformed_request", async |api| {
        api.get("/v1/tasks/not-a-uuid").await
    })
    .await;
    refused(&api, 400, "malformed_request", async |api| {
        api.get("/v1/tasks?limit=many").await
    })
    .await;
    refused(&api, 400, "malformed_request", async |api| {
        api.get("/v1/tasks?state=sleeping").await
    })
    .await;
}

#[tokio::test]
async fn unknown_things_are_404_and_wrong_methods_405() {
    let (api, _) = with_a_reserved_task().await;
    let reply = refused(&api, 404, "unknown_queue", async |api| {
        api.get("/v1/queues/nowhere").await
    })
    .await;
    assert_eq!(reply.json["error"]["details"]["queue"], "nowhere");
    let id = "01934f6e-8c4a-7b1e-9a4d-2f1c3b5a6d7e";
    let reply = refused(&api, 404, "unknown_task", async |api| {
        api.get(&format!("/v1/tasks/{id}")).await
    })
    .await;
    assert_eq!(reply.json["error"]["details"]["task_id"], id);
    refused(&api, 404, "unknown_task", async |api| {
        api.post("/v1/leases/ack", json!({"lease": format!("{id}.1")}))
            .await
    })
    .await;
    refused(&api, 404, "unknown_queue", async |api| {
        api.post("/v1/queues/nowhere/pause", Value::Null).await
    })
    .await;
    refused(&api, 404, "not_found", async |api| {
        api.get("/v2/anything").await
    })
    .await;
    let reply = refused(&api, 405, "method_not_allowed", async |api| {
        api.send(Method::DELETE, "/v1/queues/orders/tasks", None, None)
            .await
    })
    .await;
    assert!(
        reply.headers.contains_key("allow"),
        "405 says which methods are allowed"
    );
}

#[tokio::test]
async fn stale_expired_and_finished_leases_are_409() {
    let (api, lease) = with_a_reserved_task().await;
    let token = lease["token"].as_str().unwrap().to_owned();
    // The lease expires on the broker's clock; the worker's ack comes too late.
    api.clock.advance(Duration::from_secs(11));
    let reply = refused(&api, 409, "lease_expired", async |api| {
        api.post("/v1/leases/ack", json!({"lease": token})).await
    })
    .await;
    assert_eq!(
        reply.json["error"]["details"]["expired_at"],
        lease["expires_at"]
    );
    // Another worker reserves the task again: the first fence is now stale.
    let again = api.post("/v1/queues/orders/reserve", json!({})).await;
    let new_token = again.json["tasks"][0]["lease"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in ["/v1/leases/ack", "/v1/leases/release", "/v1/leases/extend"] {
        let reply = refused(&api, 409, "stale_lease", async |api| {
            api.post(path, json!({"lease": token})).await
        })
        .await;
        assert_eq!(reply.json["error"]["details"]["presented_fence"], 1);
    }
    refused(&api, 409, "stale_lease", async |api| {
        api.post("/v1/leases/fail", json!({"lease": token, "error": "x"}))
            .await
    })
    .await;
    let done = api
        .post("/v1/leases/ack", json!({"lease": new_token}))
        .await;
    assert_eq!(done.status, 200);
    let reply = refused(&api, 409, "wrong_state", async |api| {
        api.post("/v1/leases/ack", json!({"lease": new_token}))
            .await
    })
    .await;
    assert_eq!(reply.json["error"]["details"]["state"], "completed");
}

#[tokio::test]
async fn oversized_payloads_batches_and_bodies_are_413() {
    let small = ServerConfig {
        limits: Limits {
            body_bytes_max: floodway_server::limits::BODY_BYTES_MAX_MIN,
            batch_size_max: 10,
            ..Limits::default()
        },
        ..ServerConfig::default()
    };
    let api = Api::start_with(small).await;
    api.post("/v1/queues/orders/tasks", json!({"kind": "k"}))
        .await;
    let payload = "x".repeat(limits::PAYLOAD_BYTES_MAX);
    let reply = refused(&api, 413, "payload_too_large", async |api| {
        api.post(
            "/v1/queues/orders/tasks",
            json!({"kind": "k", "payload": payload}),
        )
        .await
    })
    .await;
    assert_eq!(
        reply.json["error"]["details"]["size"],
        limits::PAYLOAD_BYTES_MAX + 2,
        "the payload is the JSON string, quotes included"
    );
    let tasks: Vec<Value> = (0..11).map(|_| json!({"kind": "k"})).collect();
    let reply = refused(&api, 413, "batch_too_large", async |api| {
        api.post("/v1/queues/orders/tasks", json!({"tasks": tasks}))
            .await
    })
    .await;
    assert_eq!(reply.json["error"]["details"]["max"], 10);
    let huge = "y".repeat(floodway_server::limits::BODY_BYTES_MAX_MIN);
    refused(&api, 413, "body_too_large", async |api| {
        api.post(
            "/v1/queues/orders/tasks",
            json!({"kind": "k", "payload": huge}),
        )
        .await
    })
    .await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let (api, _) = with_a_reserved_task().await;
    refused(&api, 415, "unsupported_media_type", async |api| {
        api.send(
            Method::POST,
            "/v1/queues/orders/tasks",
            None,
            raw("text/plain", b"{\"kind\": \"k\"}"),
        )
        .await
    })
    .await;
}

#[tokio::test]
async fn invalid_fields_are_422_and_named() {
    let (api, lease) = with_a_reserved_task().await;
    let cases = [
        (
            "/v1/queues/orders/tasks",
            json!({"kind": "k", "priority": 10}),
            "priority",
        ),
        (
            "/v1/queues/orders/tasks",
            json!({"kind": "k", "priority": 300}),
            "priority",
        ),
        (
            "/v1/queues/orders/tasks",
            json!({"kind": "send email"}),
            "kind",
        ),
        (
            "/v1/queues/orders/tasks",
            json!({"kind": "k", "colour": "red"}),
            "colour",
        ),
        ("/v1/queues/orders/tasks", json!({"payload": 1}), "body"),
        (
            "/v1/queues/orders/tasks",
            json!({"tasks": [{"kind": "k"}, {"kind": "k", "ttl": "soon"}]}),
            "tasks[1].ttl",
        ),
        (
            "/v1/queues/orders/tasks",
            json!({"kind": "k", "payload": 1, "payload_base64": "AA=="}),
            "payload_base64",
        ),
        ("/v1/queues/orders/reserve", json!({"max": 0}), "max"),
        (
            "/v1/queues/orders/reserve",
            json!({"lease": "1h1s"}),
            "lease",
        ),
        ("/v1/leases/ack", json!({"lease": "not-a-lease"}), "lease"),
        (
            "/v1/leases/fail",
            json!({"lease": lease["token"], "permanent": true, "retry_after": "1s"}),
            "retry_after",
        ),
        ("/v1/queues/bad%20name/tasks", json!({"kind": "k"}), "queue"),
        ("/v1/dead-letters/replay", json!([null, null]), "body"),
        ("/v1/queues/orders/tasks", json!(["k"]), "body"),
    ];
    for (path, body, field) in cases {
        let reply = refused(&api, 422, "invalid_field", async |api| {
            api.post(path, body.clone()).await
        })
        .await;
        let named = reply.json["error"]["details"]["field"].as_str().unwrap();
        assert!(
            named.starts_with(field),
            "{path} {body}: named {named}, not {field}"
        );
    }
}

#[tokio::test]
async fn a_full_queue_and_an_exhausted_rate_limit_are_429_with_retry_after() {
    let limited = ServerConfig {
        rate: Some(RateLimit {
            per_second: 0.01,
            burst: 4,
        }),
        ..ServerConfig::default()
    };
    let api = Api::start_with(limited).await;
    let configured = api
        .json(Method::PUT, "/v1/queues/narrow", json!({"length_max": 1}))
        .await;
    assert_eq!(configured.status, 200);
    api.post("/v1/queues/narrow/tasks", json!({"kind": "k"}))
        .await;
    let reply = refused(&api, 429, "queue_full", async |api| {
        api.post("/v1/queues/narrow/tasks", json!({"kind": "k"}))
            .await
    })
    .await;
    assert_eq!(reply.headers["retry-after"], "1");
    assert_eq!(reply.json["error"]["details"]["max"], 1);
    assert_eq!(api.get("/v1/queues/narrow").await.status, 200);
    // Four requests so far: the burst is spent, and the next waits 100 s for a token. (The
    // snapshots read the broker directly and spend no token.)
    let reply = refused(&api, 429, "rate_limited", async |api| {
        api.get("/v1/queues/narrow").await
    })
    .await;
    let wait: u64 = reply.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((90..=100).contains(&wait), "{wait}");
    assert_eq!(
        api.get("/healthz").await.status,
        200,
        "health checks are not limited"
    );
}
