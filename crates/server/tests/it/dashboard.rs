//! The web dashboard: its files as HTTP serves them, and the page itself in a real headless
//! Chromium (see `browser.rs`) against a real server, checked through the broker afterwards.

use std::future::Future;
use std::time::{Duration, Instant};

use floodway_core::{Broker, QueueName, TaskId, TaskState};
use reqwest::Method;
use serde_json::{Value, json};

use crate::browser::{Browser, WAIT};
use crate::support::{Api, config_with_tokens, secret};

/// Waits until `check` is true of the broker, or fails naming `what`.
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Enqueues `tasks` into `queue` with `token`; returns their ids.
async fn enqueue(api: &Api, token: Option<&str>, queue: &str, tasks: Value) -> Vec<String> {
    let reply = api
        .send(
            Method::POST,
            &format!("/v1/queues/{queue}/tasks"),
            token,
            Some((
                "application/json",
                serde_json::to_vec(&json!({ "tasks": tasks })).unwrap(),
            )),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.json["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Reserves one task of `queue` and fails it for good (or, with `permanent` false, as its
/// last allowed attempt): a dead letter. Returns its id.
async fn dead_letter(api: &Api, queue: &str, error: &str, permanent: bool) -> String {
    let reserved = api
        .post(
            &format!("/v1/queues/{queue}/reserve"),
            json!({"max": 1, "lease": "30s"}),
        )
        .await;
    let task = &reserved.json["tasks"][0];
    let failed = api
        .post(
            "/v1/leases/fail",
            json!({"lease": task["lease"]["token"], "error": error, "permanent": permanent}),
        )
        .await;
    assert_eq!(failed.status, 200, "{}", failed.text);
    task["task"]["id"].as_str().unwrap().to_owned()
}

async fn state_of(api: &Api, id: &str) -> TaskState {
    api.broker
        .get(id.parse::<TaskId>().unwrap())
        .await
        .unwrap()
        .state
}

#[tokio::test]
async fn the_page_and_its_files_need_no_token_and_carry_types_and_validators() {
    let api = Api::start_with(config_with_tokens()).await;
    let page = api.get("/").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    assert!(page.text.contains("dashboard/app.js"), "{}", page.text);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"));
    assert_eq!(page.headers["cache-control"], "no-cache");
    assert_eq!(page.headers["x-content-type-options"], "nosniff");

    let etag = page.headers["etag"].to_str().unwrap().to_owned();
    let mut revalidate = reqwest::header::HeaderMap::new();
    revalidate.insert("if-none-match", etag.parse().unwrap());
    let again = crate::support::http_client()
        .get(format!("{}/", api.url))
        .headers(revalidate)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304, "an unchanged page is not sent again");
    assert_eq!(again.headers()["etag"], etag.as_str());
    assert!(again.bytes().await.unwrap().is_empty());

    for (file, content_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("stats.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let reply = api.get(&format!("/dashboard/{file}")).await;
        assert_eq!(reply.status, 200, "{file}");
        assert_eq!(reply.headers["content-type"], content_type, "{file}");
        assert_eq!(reply.headers["cache-control"], "no-cache", "{file}");
        assert!(reply.headers.contains_key("etag"), "{file}");
    }
    let missing = api.get("/dashboard/nope.js").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.code(), "not_found");

    // The API behind the page still wants a token.
    assert_eq!(api.get("/v1/queues").await.status, 401);
}

#[tokio::test]
async fn no_dashboard_leaves_only_the_api() {
    let api = Api::start_with(floodway_server::ServerConfig {
        dashboard: false,
        ..floodway_server::ServerConfig::default()
    })
    .await;
    for path in ["/", "/dashboard/app.js"] {
        let reply = api.get(path).await;
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(reply.code(), "not_found");
    }
    assert_eq!(api.get("/v1/queues").await.status, 200);
}

#[tokio::test]
async fn the_dashboard_is_outside_the_openapi_document_and_the_api_namespace() {
    let spec = serde_json::to_value(floodway_server::openapi()).unwrap();
    for path in spec["paths"].as_object().unwrap().keys() {
        assert!(
            path.starts_with("/v1/") || ["/healthz", "/readyz", "/metrics"].contains(&&**path),
            "{path} is outside /v1/ and the operations routes, where the dashboard could \
             shadow it"
        );
    }
}

#[tokio::test]
async fn the_page_shows_a_queue_pauses_it_and_a_replay_click_moves_the_dead_letter_to_ready() {
    let Some(browser) = Browser::start(1400, 1000).await else {
        return;
    };
    let api = Api::start().await;
    let queue = QueueName::new("orders").unwrap();
    enqueue(
        &api,
        None,
        "orders",
        json!([
            {"kind": "charge", "payload": {"order": 7, "amount_cents": 1250}},
            {"kind": "charge", "payload": {"order": 8}},
            {"kind": "charge", "payload": {"order": 9}},
            {"kind": "charge", "payload": {"order": 10}},
        ]),
    )
    .await;
    let dead = dead_letter(&api, "orders", "card declined", true).await;
    assert_eq!(state_of(&api, &dead).await, TaskState::Dead);
    // Two more dead letters, for another reason, in another queue.
    enqueue(
        &api,
        None,
        "emails",
        json!([{"kind": "send", "max_attempts": 1}, {"kind": "send", "max_attempts": 1}]),
    )
    .await;
    let exhausted = [
        dead_letter(&api, "emails", "SMTP timeout", false).await,
        dead_letter(&api, "emails", "SMTP timeout", false).await,
    ];

    browser.record_requests().await;
    browser.goto(&format!("{}/", api.url)).await;
    let row = r#"tr[data-queue="orders"]"#;
    browser
        .wait_text(&format!("{row} td[data-col=ready]"), "3 ready", |t| {
            t == "3"
        })
        .await;
    browser
        .wait_text(&format!("{row} td[data-col=dead]"), "1 dead", |t| t == "1")
        .await;
    browser
        .wait_text("#chart-latency", "a latency chart", |t| {
            t.contains("Start latency")
        })
        .await;

    // Live throughput: tasks enqueued while the page watches show in the chart.
    browser
        .wait_until(
            "a throughput line",
            r#"return !!document.querySelector('#chart-throughput path[data-series="enqueued"]');"#,
            json!([]),
        )
        .await;
    enqueue(
        &api,
        None,
        "orders",
        json!([{"kind": "charge"}, {"kind": "charge"}]),
    )
    .await;
    browser
        .wait_until(
            "enqueued per second above zero",
            r#"const p = document.querySelector('#chart-throughput path[data-series="enqueued"]');
               return !!p && Number(p.dataset.max) > 0;"#,
            json!([]),
        )
        .await;
    browser
        .wait_text(&format!("{row} td[data-col=ready]"), "5 ready", |t| {
            t == "5"
        })
        .await;

    // Pause, confirmed in the dialog, reaches the broker.
    browser
        .click(&format!("{row} button[data-action=pause]"))
        .await;
    browser.click("#confirm-ok").await;
    eventually("the queue is paused", || async {
        api.broker.stats(Some(&queue)).await.unwrap()[0]
            .config
            .paused
    })
    .await;
    browser
        .wait_text(&format!("{row} td[data-col=name]"), "a paused badge", |t| {
            t.contains("paused")
        })
        .await;

    // Dead letters filtered by reason; purging all that match, confirmed, deletes those only.
    browser.click(r#"a[data-nav="dead"]"#).await;
    let dead_row = format!(r#"#dead-list tr[data-task="{dead}"]"#);
    let exhausted_row = format!(r#"#dead-list tr[data-task="{}"]"#, exhausted[0]);
    browser.wait_for(&exhausted_row).await;
    browser.wait_for(&dead_row).await;
    browser.choose("#dead-reason", "max_attempts").await;
    browser
        .wait_until(
            "only the max_attempts dead letters",
            "const rows = [...document.querySelectorAll('#dead-list tr[data-task]')]; \
             return rows.length === 2 && rows.every((r) => r.innerText.includes('max attempts'));",
            json!([]),
        )
        .await;
    browser.click("#purge-all").await;
    browser.click("#confirm-ok").await;
    for id in &exhausted {
        eventually("the purged dead letter is gone", || async {
            api.broker.get(id.parse::<TaskId>().unwrap()).await.is_err()
        })
        .await;
    }
    assert_eq!(
        state_of(&api, &dead).await,
        TaskState::Dead,
        "another reason"
    );

    // The other dead letter: listed, its detail shows payload and error, and a replay
    // clicked in the list makes it ready again.
    browser.choose("#dead-reason", "").await;
    browser
        .wait_text(&dead_row, "the dead letter with its reason", |t| {
            t.contains("permanent failure") && t.contains("card declined")
        })
        .await;
    browser.click(&format!("{dead_row} a")).await;
    let payload = browser
        .wait_text("#payload", "the payload pretty-printed", |t| {
            t.contains("\"order\": ")
        })
        .await;
    assert!(payload.contains('\n'), "pretty-printed: {payload}");
    browser
        .wait_text("#last-error", "the latest error", |t| t == "card declined")
        .await;
    browser.execute("history.back();", json!([])).await;
    browser
        .click(&format!("{dead_row} button[data-action=replay]"))
        .await;
    assert_eq!(
        state_of(&api, &dead).await,
        TaskState::Dead,
        "nothing happens before the confirmation"
    );
    browser.click("#confirm-ok").await;
    eventually("the replayed task is ready", || async {
        state_of(&api, &dead).await == TaskState::Ready
    })
    .await;
    browser
        .wait_text("#dead-list", "an empty list", |t| {
            t.contains("No dead letters match")
        })
        .await;
    let stats = &api.broker.stats(Some(&queue)).await.unwrap()[0];
    assert_eq!(stats.counts.dead, 0);
    assert_eq!(stats.totals.replayed, 1);

    // Everything the page asked of the server was a documented API call.
    let requests = browser.requests().await;
    assert!(requests.len() > 5, "{requests:?}");
    let spec = serde_json::to_value(floodway_server::openapi()).unwrap();
    for (method, path) in requests {
        let documented = spec["paths"]
            .as_object()
            .unwrap()
            .iter()
            .any(|(template, item)| {
                crate::auth::matches_template(template, &path)
                    && item.get(method.to_lowercase()).is_some()
            });
        assert!(
            documented,
            "the page called {method} {path}, which is not in the API"
        );
    }
    browser.close().await;
}

#[tokio::test]
async fn the_page_asks_for_a_token_and_shows_forbidden_clearly() {
    let Some(browser) = Browser::start(1400, 1000).await else {
        return;
    };
    let api = Api::start_with(config_with_tokens()).await;
    let admin = secret("admin");
    enqueue(
        &api,
        Some(&admin),
        "orders",
        json!([{"kind": "charge"}, {"kind": "charge"}]),
    )
    .await;

    browser.goto(&format!("{}/", api.url)).await;
    browser.wait_for("#token-dialog[open]").await;
    browser
        .wait_text("#token-reason", "the server's reason", |t| {
            t.contains("token")
        })
        .await;
    // A producer's token may read queue statistics but not administer dead letters.
    browser.type_into("#token-input", &secret("producer")).await;
    browser.click("#token-submit").await;
    browser
        .wait_text(
            r#"tr[data-queue="orders"] td[data-col=ready]"#,
            "2 ready",
            |t| t == "2",
        )
        .await;
    let kept = browser
        .execute(
            r#"return sessionStorage.getItem("floodway.token");"#,
            json!([]),
        )
        .await;
    assert_eq!(kept, json!(secret("producer")));

    browser.click(r#"a[data-nav="dead"]"#).await;
    browser
        .wait_text(".error-panel.forbidden", "a forbidden panel", |t| {
            t.contains("Forbidden") && t.contains("admin")
        })
        .await;

    browser.click("#token-button").await;
    browser.wait_for("#token-dialog[open]").await;
    browser.type_into("#token-input", &admin).await;
    browser.click("#token-submit").await;
    browser
        .wait_text("#dead-list", "the dead letters, now allowed", |t| {
            t.contains("No dead letters match")
        })
        .await;
    browser.close().await;
}

#[tokio::test]
async fn the_page_computes_rates_and_latency_percentiles_from_deltas() {
    let Some(browser) = Browser::start(1000, 800).await else {
        return;
    };
    let api = Api::start().await;
    browser.goto(&format!("{}/", api.url)).await;
    browser.wait_for("#queues").await;
    // The modules the page uses, fed known readings: buckets (0, 10ms], (10ms, 100ms],
    // (100ms, 1s], (1s, +Inf).
    let result = browser
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
            const load = (name) => import(new URL("dashboard/" + name, document.baseURI).href);
            Promise.all([load("stats.js"), load("live.js")]).then(([stats, live]) => {
              const bounds = [0.01, 0.1, 1];
              const before = {bounds_seconds: bounds, counts: [0, 20, 5, 5], sum_seconds: 3};
              const after = {bounds_seconds: bounds, counts: [10, 60, 25, 5], sum_seconds: 12};
              const delta = stats.histogramDelta(before, after);
              const reading = (enqueued, completed, dead, latency) => ({
                queue: "q", totals: {enqueued, completed,
                  dead: {max_attempts: dead, expired: 0, overflow: 0, permanent_failure: 0}},
                start_latency: latency});
              const l = new live.Live();
              l.record([reading(100, 50, 1, before)], 0);
              l.record([reading(160, 90, 3, after)], 2000);
              done({
                delta: delta.counts,
                percentiles: stats.percentiles(delta),
                overflow: stats.percentiles({bounds_seconds: bounds, counts: [0, 0, 0, 4], sum_seconds: 9}),
                empty: stats.percentiles(stats.histogramDelta(after, after)),
                reset: stats.histogramDelta(after, before).counts,
                missing: stats.histogramDelta(null, after),
                rate: stats.rate(100, 160, 2),
                reset_rate: stats.rate(160, 100, 2),
                all: l.points("*").map((p) => p.values),
                queue: l.points("q").map((p) => p.values),
              });
            }, (error) => done({error: String(error)}));"#,
            json!([]),
        )
        .await;
    assert!(result.get("error").is_none(), "{result}");
    assert_eq!(result["delta"], json!([10, 40, 20, 0]));
    let close = |value: &Value, expected: f64| {
        let value = value.as_f64().unwrap_or(f64::NAN);
        assert!((value - expected).abs() < 1e-9, "{value} != {expected}");
    };
    // 70 observations: p50 is rank 35, the 25th of 40 in (10ms, 100ms]; p90 is rank 63, the
    // 13th of 20 in (100ms, 1s]; p99 is rank 69.3, 19.3 of those 20.
    close(&result["percentiles"]["p50"], 0.01 + 0.09 * 25.0 / 40.0);
    close(&result["percentiles"]["p90"], 0.1 + 0.9 * 13.0 / 20.0);
    close(&result["percentiles"]["p99"], 0.1 + 0.9 * 19.3 / 20.0);
    // All in +Inf: the highest finite bound is all the histogram can say.
    close(&result["overflow"]["p50"], 1.0);
    close(&result["overflow"]["p99"], 1.0);
    assert_eq!(
        result["empty"],
        json!({"p50": null, "p90": null, "p99": null})
    );
    assert_eq!(
        result["reset"],
        json!([0, 20, 5, 5]),
        "a reset histogram counts from zero"
    );
    assert_eq!(result["missing"], Value::Null);
    close(&result["rate"], 30.0);
    assert_eq!(result["reset_rate"], Value::Null);
    for series in ["all", "queue"] {
        let points = result[series].as_array().unwrap();
        assert_eq!(points.len(), 1, "one point from two readings: {points:?}");
        close(&points[0]["enqueued"], 30.0);
        close(&points[0]["completed"], 20.0);
        close(&points[0]["dead"], 1.0);
        close(&points[0]["p50"], 0.01 + 0.09 * 25.0 / 40.0);
    }
    browser.close().await;
}

/// A deterministic stream of numbers in [0, 1) for the screenshot's workload.
struct Dice(u64);

impl Dice {
    fn roll(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Reserves up to `max` tasks of `queue` as `worker`; returns their lease tokens.
async fn reserve_leases(api: &Api, queue: &str, max: usize, worker: &str) -> Vec<Value> {
    let reply = api
        .post(
            &format!("/v1/queues/{queue}/reserve"),
            json!({"max": max, "lease": "30s", "worker": worker}),
        )
        .await;
    reply.json["tasks"]
        .as_array()
        .map(|tasks| tasks.iter().map(|t| t["lease"]["token"].clone()).collect())
        .unwrap_or_default()
}

async fn configure(api: &Api, queue: &str, config: Value) {
    let reply = api
        .json(Method::PUT, &format!("/v1/queues/{queue}"), config)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

/// The PNG file signature.
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Every page renders under a live workload: a server with five queues in different states
/// (refusing above a watermark, overflowing, paused, with dead letters) and a workload the page
/// watches until its throughput chart has drawn completions; then the overview in the light
/// and dark schemes, a queue's dead tasks, the dead letters and a task's detail, each captured
/// as a PNG. In the suite the workload runs for 6 s and the images go to the target
/// directory. With `FLOODWAY_WRITE_SCREENSHOTS=1` it runs for 100 s (the charts' whole window)
/// and writes the README's docs/images/dashboard.png and dashboard-dark.png:
/// `FLOODWAY_WRITE_SCREENSHOTS=1 cargo test -p floodway-server --test it dashboard::screenshot -- --nocapture`.
#[tokio::test]
async fn screenshot() {
    let for_docs = std::env::var_os("FLOODWAY_WRITE_SCREENSHOTS").is_some();
    let run = Duration::from_secs(if for_docs { 100 } else { 6 });
    const TICK: Duration = Duration::from_millis(250);
    let api = Api::start_at(
        floodway_server::ServerConfig::default(),
        floodway_core::Timestamp::now_system(),
    )
    .await;
    configure(
        &api,
        "orders",
        json!({"watermarks": {"high": 5000, "low": 2500},
        "concurrency_max": 32, "rate_limit": {"rate": 200, "burst": 50}}),
    )
    .await;
    configure(
        &api,
        "emails",
        json!({"rate_limit": {"rate": 25, "burst": 10}, "ttl": "1h"}),
    )
    .await;
    configure(
        &api,
        "thumbnails",
        json!({"watermarks": {"high": 400, "low": 200}}),
    )
    .await;
    configure(
        &api,
        "webhooks",
        json!({"length_max": 150, "overflow": "dead_letter_oldest",
        "key_concurrency_max": 4}),
    )
    .await;
    configure(&api, "reports", json!({})).await;

    // Thumbnails: a backlog above its high watermark, so enqueue is refused.
    for _ in 0..10 {
        let batch: Vec<Value> = (0..50)
            .map(|n| json!({"kind": "resize", "payload": {"image": format!("img-{n}.jpg"), "width": 320}}))
            .collect();
        let reply = api
            .post("/v1/queues/thumbnails/tasks", json!({"tasks": batch}))
            .await;
        if reply.status == 429 {
            break;
        }
    }
    // Webhooks: past its length limit, the oldest become dead letters (overflow).
    for events in [0..140, 140..170] {
        let hooks: Vec<Value> = events
            .map(|n| json!({"kind": "deliver", "payload": {"url": "https://partner.example/hook", "event": n},
                "limit_key": format!("partner-{}", n % 5)}))
            .collect();
        enqueue(&api, None, "webhooks", json!(hooks)).await;
    }
    // Reports: scheduled for later, and the queue paused.
    let reports: Vec<Value> = (0..40)
        .map(|n| json!({"kind": "monthly_report", "payload": {"account": n}, "delay": "2h"}))
        .collect();
    enqueue(&api, None, "reports", json!(reports)).await;
    enqueue(
        &api,
        None,
        "reports",
        json!([{"kind": "monthly_report", "payload": {"account": 99}}]),
    )
    .await;
    assert_eq!(
        api.post("/v1/queues/reports/pause", json!({})).await.status,
        200
    );
    // Orders: a few dead letters with the handler's error.
    enqueue(
        &api,
        None,
        "orders",
        json!(
            (0..6)
                .map(|n| json!({"kind": "charge_card",
        "payload": {"order": 7000 + n, "amount_cents": 1250 + n * 100, "currency": "EUR"},
        "headers": {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}))
                .collect::<Vec<_>>()
        ),
    )
    .await;
    for _ in 0..6 {
        dead_letter(
            &api,
            "orders",
            "payment provider answered 402: card declined",
            true,
        )
        .await;
    }

    let Some(browser) = Browser::start(1440, 900).await else {
        return;
    };
    browser.goto(&format!("{}/", api.url)).await;
    browser.wait_for(r#"tr[data-queue="orders"]"#).await;

    let mut dice = Dice(7);
    let mut held: Vec<Vec<Value>> = Vec::new();
    let started = Instant::now();
    let mut last = started;
    let mut order = 0u64;
    let mut ticks = 0u64;
    while started.elapsed() < run {
        ticks += 1;
        let now = Instant::now();
        api.clock.advance(now - last);
        last = now;
        let t = started.elapsed().as_secs_f64();
        let tick = TICK.as_secs_f64();
        // Arrivals follow slow waves, so the throughput chart has something to show.
        for (queue, kind, per_second) in [
            ("orders", "charge_card", 70.0 + 45.0 * (t / 9.0).sin()),
            ("emails", "send_email", 22.0 + 12.0 * (t / 5.0 + 1.0).sin()),
            ("webhooks", "deliver", 6.0 + 4.0 * (t / 7.0).cos()),
        ] {
            let count = (per_second * tick + dice.roll()).floor() as usize;
            if count == 0 {
                continue;
            }
            let tasks: Vec<Value> = (0..count)
                .map(|_| {
                    order += 1;
                    json!({"kind": kind, "payload": {"order": order, "amount_cents": 990}})
                })
                .collect();
            let _ = api
                .post(
                    &format!("/v1/queues/{queue}/tasks"),
                    json!({"tasks": tasks}),
                )
                .await;
        }
        // Workers: ack what they held since the last tick, fail a few, hold some leases.
        for leases in held.drain(..) {
            let mut acks = Vec::new();
            for lease in leases {
                let roll = dice.roll();
                if roll < 0.02 {
                    let _ = api
                        .post(
                            "/v1/leases/fail",
                            json!({"lease": lease,
                        "error": "upstream timed out after 5s", "retry_after": "3s"}),
                        )
                        .await;
                } else if roll < 0.024 {
                    let _ = api
                        .post(
                            "/v1/leases/fail",
                            json!({"lease": lease,
                        "error": "invalid card number", "permanent": true}),
                        )
                        .await;
                } else {
                    acks.push(lease);
                }
            }
            if !acks.is_empty() {
                let _ = api.post("/v1/leases/ack", json!({"leases": acks})).await;
            }
        }
        for (queue, max, worker) in [
            ("orders", 40, "worker-a"),
            ("emails", 12, "worker-b"),
            ("webhooks", 4, "worker-c"),
            ("thumbnails", 1, "worker-d"),
        ] {
            // One slow worker on thumbnails keeps its backlog above the low watermark.
            if queue == "thumbnails" && !ticks.is_multiple_of(8) {
                continue;
            }
            let leases = reserve_leases(&api, queue, max, worker).await;
            held.push(leases);
        }
        tokio::time::sleep_until((now + TICK).into()).await;
    }
    // Let the page take its last reading of this state.
    browser
        .wait_until(
            "a full throughput chart",
            r#"const p = document.querySelector('#chart-throughput path[data-series="completed"]');
               return !!p && Number(p.dataset.max) > 0;"#,
            json!([]),
        )
        .await;
    let review = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let images = if for_docs {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/images")
    } else {
        review.to_owned()
    };
    let save = |path: std::path::PathBuf, png: Vec<u8>| {
        assert!(
            png.starts_with(PNG_SIGNATURE),
            "{} is not a PNG",
            path.display()
        );
        std::fs::write(&path, &png).unwrap();
        println!("wrote {} ({} bytes)", path.display(), png.len());
    };
    save(images.join("dashboard.png"), browser.screenshot().await);
    browser.prefer_dark().await;
    save(
        images.join("dashboard-dark.png"),
        browser.screenshot().await,
    );

    // The other pages, for review only (not in the docs).
    browser.prefer_light().await;
    for (hash, ready, file) in [
        (
            "#/queues/orders?state=dead",
            "#task-list tbody tr[data-task]",
            "dashboard-queue.png",
        ),
        (
            "#/dead?reason=permanent_failure",
            "#dead-list tbody tr[data-task]",
            "dashboard-dead.png",
        ),
    ] {
        browser
            .execute("location.hash = arguments[0];", json!([hash]))
            .await;
        browser.wait_for(ready).await;
        save(review.join(file), browser.screenshot().await);
    }
    browser.click("#dead-list tbody tr[data-task] a").await;
    browser.wait_for("#payload").await;
    save(
        review.join("dashboard-task.png"),
        browser.screenshot().await,
    );
    browser.close().await;
}
