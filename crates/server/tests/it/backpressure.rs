//! Backpressure over HTTP (issue 4): a queue's rate, concurrency and watermark settings round
//! trip through its configuration, an overloaded queue answers 429 with `Retry-After` and
//! writes nothing, limit keys travel with their tasks, side effects are recorded under the
//! current lease only, and the statistics and `/metrics` show all of it.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::errors::refused;
use crate::support::Api;

/// Enqueues `body` into `queue` and returns the reply.
async fn enqueue(api: &Api, queue: &str, body: Value) -> crate::support::Reply {
    api.post(&format!("/v1/queues/{queue}/tasks"), body).await
}

/// Reserves up to `max` tasks of `queue` with 30-second leases.
async fn reserve(api: &Api, queue: &str, max: usize) -> Vec<Value> {
    let reply = api
        .post(
            &format!("/v1/queues/{queue}/reserve"),
            json!({"max": max, "lease": "30s"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json["tasks"].as_array().unwrap().clone()
}

#[tokio::test]
async fn backpressure_settings_round_trip_through_the_queue_config() {
    let api = Api::start().await;
    let config = json!({
        "rate_limit": {"rate": 500.0, "burst": 50},
        "key_rate_limit": {"rate": 0.5, "burst": 1},
        "concurrency_max": 64,
        "key_concurrency_max": 4,
        "watermarks": {"high": 10000, "low": 5000},
        "ttl": "30s",
    });
    let put = api.json(Method::PUT, "/v1/queues/tenants", config).await;
    assert_eq!(put.status, 200, "{}", put.text);
    let got = api.get("/v1/queues/tenants").await;
    assert_eq!(got.status, 200);
    for reply in [&put, &got] {
        let c = &reply.json["config"];
        assert_eq!(c["rate_limit"], json!({"rate": 500.0, "burst": 50}));
        assert_eq!(c["key_rate_limit"], json!({"rate": 0.5, "burst": 1}));
        assert_eq!(c["concurrency_max"], 64);
        assert_eq!(c["key_concurrency_max"], 4);
        assert_eq!(c["watermarks"], json!({"high": 10000, "low": 5000}));
        assert_eq!(c["ttl"], "30s");
        assert_eq!(reply.json["refusing"], false);
    }
    // What GET answers, PUT back, changes nothing.
    let again = api
        .json(
            Method::PUT,
            "/v1/queues/tenants",
            got.json["config"].clone(),
        )
        .await;
    assert_eq!(again.json["config"], got.json["config"]);
    // The default configuration has none of them.
    let reset = api.json(Method::PUT, "/v1/queues/tenants", json!({})).await;
    for field in [
        "rate_limit",
        "key_rate_limit",
        "concurrency_max",
        "key_concurrency_max",
        "watermarks",
        "ttl",
    ] {
        assert_eq!(reset.json["config"][field], Value::Null, "{field}");
    }
    // A task enqueued without a TTL gets the queue's.
    api.json(Method::PUT, "/v1/queues/tenants", json!({"ttl": "30s"}))
        .await;
    let id = enqueue(&api, "tenants", json!({"kind": "k"})).await.json["tasks"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let task = api.get(&format!("/v1/tasks/{id}")).await;
    assert_eq!(
        task.json["expires_at"].as_u64().unwrap(),
        task.json["created_at"].as_u64().unwrap() + 30_000
    );
}

#[tokio::test]
async fn invalid_backpressure_settings_are_422_and_named() {
    let api = Api::start().await;
    let cases = [
        (json!({"watermarks": {"high": 10, "low": 10}}), "watermarks"),
        (json!({"watermarks": {"high": 10, "low": 20}}), "watermarks"),
        (json!({"watermarks": {"high": 0, "low": 0}}), "watermarks"),
        (json!({"watermarks": {"high": 10}}), "watermarks"),
        (
            json!({"rate_limit": {"rate": 0.0, "burst": 1}}),
            "rate_limit",
        ),
        (
            json!({"rate_limit": {"rate": 1.0, "burst": 0}}),
            "rate_limit",
        ),
        (
            json!({"key_rate_limit": {"rate": -1.0, "burst": 1}}),
            "key_rate_limit",
        ),
        (json!({"concurrency_max": 0}), "concurrency_max"),
        (json!({"key_concurrency_max": 0}), "key_concurrency_max"),
        (json!({"ttl": "0s"}), "ttl"),
    ];
    for (body, field) in cases {
        let reply = refused(&api, 422, "invalid_field", async |api| {
            api.json(Method::PUT, "/v1/queues/tenants", body.clone())
                .await
        })
        .await;
        let named = reply.json["error"]["details"]["field"].as_str().unwrap();
        assert!(
            named.starts_with(field),
            "{body}: named {named}, not {field}"
        );
    }
    assert_eq!(
        api.get("/v1/queues/tenants").await.status,
        404,
        "no queue was created by a refused configuration"
    );
}

#[tokio::test]
async fn an_overloaded_queue_is_429_with_retry_after_and_nothing_is_written() {
    let api = Api::start().await;
    let put = api
        .json(
            Method::PUT,
            "/v1/queues/hot",
            json!({"watermarks": {"high": 2, "low": 1}}),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    for n in 0..2 {
        let reply = enqueue(&api, "hot", json!({"kind": "k", "payload": n})).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
    }

    let (tasks_before, stats_before) = api.snapshot().await;
    let reply = enqueue(&api, "hot", json!({"kind": "k", "payload": 2})).await;
    assert_eq!(reply.status, 429, "{}", reply.text);
    assert_eq!(reply.code(), "queue_overloaded");
    let wait: u64 = reply.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is whole seconds");
    assert!(wait >= 1, "{wait}");
    let details = &reply.json["error"]["details"];
    assert_eq!(details["queue"], "hot");
    assert_eq!(details["length"], 2);
    assert_eq!(details["high"], 2);
    assert_eq!(details["low"], 1);
    assert!(details["retry_after"].is_string(), "{details}");
    // Nothing written: the same tasks, and the queue's statistics differ only in the count of
    // refusals and in the gate's side.
    let (tasks_after, mut stats_after) = api.snapshot().await;
    assert_eq!(tasks_after, tasks_before);
    assert_eq!(stats_after[0].totals.rejected_overloaded, 1);
    assert!(stats_after[0].refusing);
    stats_after[0].totals.rejected_overloaded = 0;
    stats_after[0].refusing = false;
    assert_eq!(stats_after, stats_before);

    // The statistics say why.
    let stats = api.get("/v1/queues/hot").await;
    assert_eq!(stats.json["refusing"], true);
    assert_eq!(stats.json["totals"]["rejected_overloaded"], 1);

    // Once workers bring it down to the low watermark, it accepts again.
    let taken = reserve(&api, "hot", 1).await;
    assert_eq!(taken.len(), 1);
    let reply = enqueue(&api, "hot", json!({"kind": "k", "payload": 3})).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let stats = api.get("/v1/queues/hot").await;
    assert_eq!(stats.json["refusing"], false);
    assert_eq!(stats.json["totals"]["enqueued"], 3);
}

#[tokio::test]
async fn limit_keys_travel_with_their_tasks_and_limits_are_counted() {
    let api = Api::start().await;
    let put = api
        .json(
            Method::PUT,
            "/v1/queues/tenants",
            json!({"concurrency_max": 1}),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    let reply = enqueue(
        &api,
        "tenants",
        json!({"tasks": [
            {"kind": "k", "limit_key": "tenant-a"},
            {"kind": "k", "limit_key": "tenant-b"},
        ]}),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let id = reply.json["tasks"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        api.get(&format!("/v1/tasks/{id}")).await.json["limit_key"],
        "tenant-a"
    );

    // One slot: a reserve for two gets one, and counts as throttled by concurrency.
    let taken = reserve(&api, "tenants", 2).await;
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0]["task"]["limit_key"], "tenant-a");
    assert_eq!(taken[0]["task"]["effects"], json!({}));
    let stats = api.get("/v1/queues/tenants").await.json;
    assert_eq!(stats["counts"]["active"], 1);
    assert_eq!(stats["config"]["concurrency_max"], 1);
    assert_eq!(stats["totals"]["throttled_concurrency"], 1);
    assert_eq!(stats["totals"]["throttled_rate"], 0);

    let metrics = api.get("/metrics").await.text;
    for line in [
        "floodway_reserves_throttled_total{queue=\"tenants\",limit=\"concurrency\"} 1",
        "floodway_reserves_throttled_total{queue=\"tenants\",limit=\"rate\"} 0",
        "floodway_queue_refusing{queue=\"tenants\"} 0",
        "floodway_enqueues_rejected_overloaded_total{queue=\"tenants\"} 0",
        "floodway_effects_recorded_total{queue=\"tenants\"} 0",
    ] {
        assert!(metrics.contains(line), "missing {line}:\n{metrics}");
    }

    let bad = refused(&api, 422, "invalid_field", async |api| {
        enqueue(api, "tenants", json!({"kind": "k", "limit_key": ""})).await
    })
    .await;
    assert_eq!(bad.json["error"]["details"]["field"], "limit_key");
}

#[tokio::test]
async fn effects_are_recorded_under_the_current_lease_and_a_stale_fence_is_refused() {
    let api = Api::start().await;
    enqueue(&api, "orders", json!({"kind": "charge"})).await;
    let first = reserve(&api, "orders", 1).await;
    let id = first[0]["task"]["id"].as_str().unwrap().to_owned();
    let stale = first[0]["lease"]["token"].as_str().unwrap().to_owned();

    let recorded = api
        .post(
            "/v1/leases/effects",
            json!({"lease": stale, "key": "charge", "result": "{\"id\":\"ch_1\"}"}),
        )
        .await;
    assert_eq!(recorded.status, 200, "{}", recorded.text);
    assert_eq!(recorded.json, json!({"ok": true}));
    let task = api.get(&format!("/v1/tasks/{id}")).await;
    assert_eq!(task.json["effects"], json!({"charge": "{\"id\":\"ch_1\"}"}));

    // The lease expires and another worker reserves the task: the effect is still there, so
    // the new attempt skips the charge.
    api.clock.advance(Duration::from_secs(31));
    let second = reserve(&api, "orders", 1).await;
    assert_eq!(second[0]["task"]["id"], id.as_str());
    assert_eq!(
        second[0]["task"]["effects"],
        json!({"charge": "{\"id\":\"ch_1\"}"})
    );
    let current = second[0]["lease"]["token"].as_str().unwrap().to_owned();

    // The first worker, a zombie now, is refused and records nothing.
    let reply = refused(&api, 409, "stale_lease", async |api| {
        api.post(
            "/v1/leases/effects",
            json!({"lease": stale, "key": "email", "result": "sent twice"}),
        )
        .await
    })
    .await;
    assert_eq!(reply.json["error"]["details"]["presented_fence"], 1);
    assert_eq!(reply.json["error"]["details"]["current_fence"], 2);

    // In a batch, only the stale item is refused.
    let batch = api
        .post(
            "/v1/leases/effects",
            json!({"effects": [
                {"lease": current, "key": "email", "result": "sent"},
                {"lease": stale, "key": "sms", "result": "sent"},
            ]}),
        )
        .await;
    assert_eq!(batch.status, 200, "{}", batch.text);
    assert_eq!(batch.json["results"][0], json!({"ok": true}));
    assert_eq!(batch.json["results"][1]["ok"], false);
    assert_eq!(batch.json["results"][1]["error"]["code"], "stale_lease");
    let task = api.get(&format!("/v1/tasks/{id}")).await;
    assert_eq!(
        task.json["effects"],
        json!({"charge": "{\"id\":\"ch_1\"}", "email": "sent"})
    );

    // A bad item in a batch is named by its position, and nothing is recorded.
    let bad = refused(&api, 422, "invalid_field", async |api| {
        api.post(
            "/v1/leases/effects",
            json!({"effects": [
                {"lease": current, "key": "push", "result": "sent"},
                {"lease": current, "key": "", "result": "sent"},
            ]}),
        )
        .await
    })
    .await;
    assert_eq!(bad.json["error"]["details"]["field"], "effects[1].key");

    let stats = api.get("/v1/queues/orders").await.json;
    assert_eq!(stats["totals"]["effects_recorded"], 2);
    let metrics = api.get("/metrics").await.text;
    assert!(
        metrics.contains("floodway_effects_recorded_total{queue=\"orders\"} 2"),
        "{metrics}"
    );
}
