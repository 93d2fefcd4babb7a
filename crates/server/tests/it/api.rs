//! The API as any language sees it: plain JSON over HTTP, route by route.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::Api;

/// Enqueues one task into `queue` and returns its id.
async fn enqueue(api: &Api, queue: &str, task: Value) -> String {
    let reply = api.post(&format!("/v1/queues/{queue}/tasks"), task).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.json["tasks"][0]["id"].as_str().unwrap().to_owned()
}

/// Reserves up to `max` tasks of `queue`.
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
async fn enqueue_answers_201_with_ids_and_a_duplicate_key_gets_the_first_id() {
    let api = Api::start().await;
    let one = api
        .post(
            "/v1/queues/orders/tasks",
            json!({"kind": "charge", "payload": {"order": 7}, "idempotency_key": "order-7"}),
        )
        .await;
    assert_eq!(one.status, 201, "{}", one.text);
    assert_eq!(one.json["tasks"][0]["duplicate"], false);
    let id = one.json["tasks"][0]["id"].clone();

    let batch = api
        .post(
            "/v1/queues/orders/tasks",
            json!({"tasks": [
                {"kind": "charge", "payload": {"order": 7}, "idempotency_key": "order-7"},
                {"kind": "charge", "payload": {"order": 8}, "priority": 9, "delay": "5m"},
                {"kind": "blob", "payload_base64": "AAEC"},
            ]}),
        )
        .await;
    assert_eq!(batch.status, 201, "{}", batch.text);
    let answers = batch.json["tasks"].as_array().unwrap();
    assert_eq!(answers.len(), 3);
    assert_eq!(answers[0]["id"], id, "the duplicate names the first task");
    assert_eq!(answers[0]["duplicate"], true);
    assert_eq!(answers[1]["duplicate"], false);

    let again = api
        .post(
            "/v1/queues/orders/tasks",
            json!({"kind": "charge", "idempotency_key": "order-7"}),
        )
        .await;
    assert_eq!(again.status, 200, "nothing new was created: {}", again.text);
    assert_eq!(again.json["tasks"][0]["id"], id);

    let blob = api
        .get(&format!("/v1/tasks/{}", answers[2]["id"].as_str().unwrap()))
        .await;
    assert_eq!(blob.json["payload_base64"], "AAEC");
    assert!(blob.json.get("payload").is_none());
    let scheduled = api
        .get(&format!("/v1/tasks/{}", answers[1]["id"].as_str().unwrap()))
        .await;
    assert_eq!(scheduled.json["state"], "scheduled");
    assert_eq!(scheduled.json["priority"], 9);
    let stats = api.get("/v1/queues/orders").await;
    assert_eq!(stats.json["counts"]["ready"], 2);
    assert_eq!(stats.json["counts"]["scheduled"], 1);
    assert_eq!(stats.json["totals"]["deduplicated"], 2);
}

#[tokio::test]
async fn a_worker_in_any_language_reserves_and_acks_with_plain_json() {
    let api = Api::start().await;
    let id = enqueue(
        &api,
        "emails",
        json!({"kind": "send_email", "payload": {"to": "ada@example.com", "n": [1, 2]}}),
    )
    .await;

    let reply = api
        .post(
            "/v1/queues/emails/reserve",
            json!({"max": 10, "wait": "1s", "lease": "30s", "worker": "py-1"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let tasks = reply.json["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1);
    let task = &tasks[0]["task"];
    assert_eq!(task["id"], id.as_str());
    assert_eq!(task["kind"], "send_email");
    assert_eq!(
        task["payload"],
        json!({"to": "ada@example.com", "n": [1, 2]}),
        "the payload comes back as JSON"
    );
    assert_eq!(task["attempt"], 1);
    assert_eq!(task["worker"], "py-1");
    let lease = &tasks[0]["lease"];
    assert_eq!(lease["fence"], task["fence"]);
    let token = lease["token"].as_str().unwrap();
    assert_eq!(token, format!("{id}.{}", lease["fence"]));

    let ack = api.post("/v1/leases/ack", json!({"lease": token})).await;
    assert_eq!(ack.status, 200, "{}", ack.text);
    assert_eq!(ack.json, json!({"ok": true}));
    let done = api.get(&format!("/v1/tasks/{id}")).await;
    assert_eq!(done.json["state"], "completed");

    // A reserve with an empty body takes one task without waiting; here, none is left.
    let empty = api
        .send(Method::POST, "/v1/queues/emails/reserve", None, None)
        .await;
    assert_eq!(empty.status, 200, "{}", empty.text);
    assert_eq!(empty.json, json!({"tasks": []}));
}

#[tokio::test]
async fn batches_of_lease_calls_answer_per_item_and_refuse_only_bad_items() {
    let api = Api::start().await;
    for n in 0..4 {
        enqueue(&api, "jobs", json!({"kind": "k", "payload": n})).await;
    }
    let tasks = reserve(&api, "jobs", 4).await;
    let token = |i: usize| tasks[i]["lease"]["token"].as_str().unwrap().to_owned();

    let extended = api
        .post(
            "/v1/leases/extend",
            json!({"leases": [token(0), token(1)], "duration": "2m"}),
        )
        .await;
    assert_eq!(extended.status, 200, "{}", extended.text);
    let results = extended.json["results"].as_array().unwrap();
    assert!(results.iter().all(|r| r["ok"] == true));
    assert!(
        results[0]["lease"]["expires_at"].as_u64().unwrap()
            > tasks[0]["lease"]["expires_at"].as_u64().unwrap()
    );

    let acked = api
        .post("/v1/leases/ack", json!({"leases": [token(0), token(0)]}))
        .await;
    assert_eq!(acked.status, 200);
    assert_eq!(acked.json["results"][0], json!({"ok": true}));
    assert_eq!(acked.json["results"][1]["ok"], false);
    assert_eq!(acked.json["results"][1]["error"]["code"], "wrong_state");

    let failed = api
        .post(
            "/v1/leases/fail",
            json!({"failures": [
                {"lease": token(1), "error": "downstream said 503", "retry_after": "10s"},
                {"lease": token(2), "error": "bad input", "permanent": true},
            ]}),
        )
        .await;
    assert_eq!(failed.status, 200, "{}", failed.text);
    assert_eq!(failed.json["results"][0]["outcome"]["state"], "retrying");
    assert_eq!(
        failed.json["results"][0]["outcome"]["run_at"]
            .as_u64()
            .unwrap(),
        api.clock_millis() + 10_000
    );
    assert_eq!(failed.json["results"][1]["outcome"]["state"], "dead");
    assert_eq!(
        failed.json["results"][1]["outcome"]["dead_reason"],
        "permanent_failure"
    );

    let released = api
        .post("/v1/leases/release", json!({"lease": token(3)}))
        .await;
    assert_eq!(released.status, 200, "{}", released.text);
    let task = api
        .get(&format!(
            "/v1/tasks/{}",
            tasks[3]["task"]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(task.json["state"], "ready");
    assert_eq!(task.json["attempt"], 0, "a release gives the attempt back");
}

#[tokio::test]
async fn queues_can_be_configured_paused_resumed_and_listed() {
    let api = Api::start().await;
    let configured = api
        .json(
            Method::PUT,
            "/v1/queues/billing",
            json!({"length_max": 100, "retry": {"max_attempts": 3}}),
        )
        .await;
    assert_eq!(configured.status, 200, "{}", configured.text);
    assert_eq!(configured.json["config"]["length_max"], 100);
    assert_eq!(configured.json["config"]["retry"]["max_attempts"], 3);
    assert_eq!(
        configured.json["config"]["retry"]["backoff_initial"], "1s",
        "missing fields take their defaults"
    );

    let paused = api.post("/v1/queues/billing/pause", Value::Null).await;
    assert_eq!(paused.status, 200, "{}", paused.text);
    assert_eq!(paused.json["config"]["paused"], true);
    enqueue(&api, "billing", json!({"kind": "k"})).await;
    assert!(reserve(&api, "billing", 1).await.is_empty(), "paused");
    let resumed = api.post("/v1/queues/billing/resume", Value::Null).await;
    assert_eq!(resumed.json["config"]["paused"], false);
    assert_eq!(reserve(&api, "billing", 1).await.len(), 1);

    let list = api.get("/v1/queues").await;
    let names: Vec<&str> = list.json["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["queue"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["billing"]);
}

#[tokio::test]
async fn dead_letters_are_listed_by_reason_replayed_and_purged() {
    let api = Api::start().await;
    for n in 0..3 {
        enqueue(&api, "hooks", json!({"kind": "k", "payload": n})).await;
    }
    let tasks = reserve(&api, "hooks", 3).await;
    for task in &tasks {
        let token = task["lease"]["token"].as_str().unwrap();
        let reply = api
            .post(
                "/v1/leases/fail",
                json!({"lease": token, "error": "no", "permanent": true}),
            )
            .await;
        assert_eq!(reply.json["outcome"]["dead_reason"], "permanent_failure");
    }
    let listed = api
        .get("/v1/dead-letters?queue=hooks&reason=permanent_failure&limit=2")
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.json["tasks"].as_array().unwrap().len(), 2);
    let after = listed.json["next_after"].as_str().unwrap();
    let rest = api
        .get(&format!("/v1/dead-letters?queue=hooks&after={after}"))
        .await;
    assert_eq!(rest.json["tasks"].as_array().unwrap().len(), 1);
    assert!(
        api.get("/v1/dead-letters?reason=expired").await.json["tasks"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let first = tasks[0]["task"]["id"].clone();
    let replayed = api
        .post("/v1/dead-letters/replay", json!({"ids": [first]}))
        .await;
    assert_eq!(replayed.json, json!({"count": 1}));
    let purged = api
        .send(
            Method::DELETE,
            "/v1/dead-letters?queue=hooks&reason=permanent_failure&limit=1",
            None,
            None,
        )
        .await;
    assert_eq!(purged.json, json!({"count": 1}));
    let purged = api
        .post("/v1/dead-letters/purge", json!({"queue": "hooks"}))
        .await;
    assert_eq!(purged.json, json!({"count": 1}));
    let stats = api.get("/v1/queues/hooks").await;
    assert_eq!(stats.json["counts"]["dead"], 0);
    assert_eq!(stats.json["counts"]["ready"], 1);
}

#[tokio::test]
async fn queue_statistics_carry_the_start_latency_histogram() {
    let api = Api::start().await;
    enqueue(&api, "orders", json!({"kind": "k"})).await;
    api.clock.advance(Duration::from_millis(2_500));
    assert_eq!(reserve(&api, "orders", 1).await.len(), 1);
    let stats = api.get("/v1/queues/orders").await.json;
    let latency = &stats["start_latency"];
    let bounds = latency["bounds_seconds"].as_array().unwrap();
    let counts = latency["counts"].as_array().unwrap();
    assert_eq!(
        counts.len(),
        bounds.len() + 1,
        "one count per bound, then +Inf"
    );
    assert_eq!(bounds[9], 2.5);
    assert_eq!(
        counts[9], 1,
        "2.5 s waited counts in the bucket up to 2.5 s: {latency}"
    );
    assert_eq!(counts.iter().filter_map(Value::as_u64).sum::<u64>(), 1);
    assert_eq!(latency["sum_seconds"], 2.5);
    let listed = api.get("/v1/queues").await.json;
    assert_eq!(&listed["queues"][0]["start_latency"], latency);
}

#[tokio::test]
async fn tasks_are_listed_cancelled_and_maintained() {
    let api = Api::start().await;
    let waiting = enqueue(&api, "later", json!({"kind": "k", "delay": "1m"})).await;
    let cancelled = api.post("/v1/tasks/cancel", json!({"id": waiting})).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    let again = api
        .post("/v1/tasks/cancel", json!({"ids": [waiting]}))
        .await;
    assert_eq!(again.json["results"][0]["error"]["code"], "wrong_state");
    let listed = api.get("/v1/tasks?queue=later&state=cancelled").await;
    assert_eq!(listed.json["tasks"][0]["id"], waiting.as_str());

    let due = enqueue(&api, "later", json!({"kind": "k", "delay": "1s"})).await;
    api.clock.advance(Duration::from_secs(2));
    let promoted = api.post("/v1/maintenance/promote", Value::Null).await;
    assert_eq!(promoted.json, json!({"count": 1}));
    assert_eq!(
        api.get(&format!("/v1/tasks/{due}")).await.json["state"],
        "ready"
    );
    let reaped = api.post("/v1/maintenance/reap", Value::Null).await;
    assert_eq!(reaped.json, json!({"count": 0}));
}

#[tokio::test]
async fn health_readiness_metrics_and_the_broker_are_reported() {
    let mut api = Api::start().await;
    enqueue(&api, "orders", json!({"kind": "k"})).await;
    assert_eq!(api.get("/healthz").await.json, json!({"status": "ok"}));
    assert_eq!(api.get("/readyz").await.json, json!({"status": "ready"}));
    assert_eq!(
        api.get("/v1/broker").await.json,
        json!({"capabilities": {"priorities": true, "partition_fifo": true}})
    );
    let metrics = api.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    for line in [
        "floodway_queue_depth{queue=\"orders\",state=\"ready\"} 1",
        "floodway_tasks_enqueued_total{queue=\"orders\"} 1",
        "floodway_http_requests_total{route=\"/v1/queues/{queue}/tasks\",method=\"POST\",status=\"201\"} 1",
    ] {
        assert!(
            metrics.text.contains(line),
            "missing {line}:\n{}",
            metrics.text
        );
    }

    // A broker that can no longer serve: alive, not ready, and every call is a 503.
    api.broker.close().await;
    assert_eq!(api.get("/healthz").await.status, 200);
    let ready = api.get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.code(), "unavailable");
    let enqueue = api
        .post("/v1/queues/orders/tasks", json!({"kind": "k"}))
        .await;
    assert_eq!(enqueue.status, 503);
    assert_eq!(enqueue.code(), "unavailable");
    api.stop().await;
}

impl Api {
    /// The broker's clock now, in milliseconds.
    fn clock_millis(&self) -> u64 {
        use floodway_core::Clock;
        self.clock.now().as_millis()
    }
}
