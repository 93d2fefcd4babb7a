//! Request decoding under arbitrary and mutated input (issue 7, T16), on the stable toolchain:
//! the same inputs as the cargo-fuzz target `fuzz/fuzz_targets/http_request.rs`, through
//! proptest, against the real router on a loopback socket.
//!
//! Each case picks a route and either a valid body mutated a few times (bytes flipped, cut,
//! repeated or inserted, JSON values swapped for hostile ones: huge numbers, deep nesting,
//! long strings, wrong types) or bytes drawn at random. The server must answer every request
//! with a status it documents for bad input (never a 5xx: a panic in a handler or extractor
//! would show as one, or as no answer at all), with the JSON error body for every 4xx, and it
//! must still be healthy afterwards.

use proptest::prelude::*;
use reqwest::Method;

use crate::support::Api;

/// Routes that decode a body, each with a valid body to mutate. `{lease}` is replaced by a
/// real lease token.
const ROUTES: &[(&str, &str, &str)] = &[
    (
        "POST",
        "/v1/queues/fz/tasks",
        r#"{"tasks":[{"kind":"k","payload":{"a":[1,2]},"priority":3,"delay":"1s","idempotency_key":"key","headers":{"h":"v"}},{"kind":"k2","payload":"x","ttl":"1m","max_attempts":2}]}"#,
    ),
    (
        "POST",
        "/v1/queues/fz/tasks",
        r#"{"kind":"k","payload":null,"partition_key":"p","limit_key":"l"}"#,
    ),
    (
        "POST",
        "/v1/queues/fz/reserve",
        r#"{"max":2,"lease":"30s","wait":"0s","worker":"w"}"#,
    ),
    (
        "POST",
        "/v1/leases/ack",
        r#"{"leases":["{lease}","{lease}"]}"#,
    ),
    (
        "POST",
        "/v1/leases/extend",
        r#"{"leases":["{lease}"],"duration":"2m"}"#,
    ),
    (
        "POST",
        "/v1/leases/fail",
        r#"{"failures":[{"lease":"{lease}","error":"boom","retry_after":"10s"},{"lease":"{lease}","error":"x","permanent":true}]}"#,
    ),
    ("POST", "/v1/leases/release", r#"{"lease":"{lease}"}"#),
    (
        "POST",
        "/v1/leases/effects",
        r#"{"effects":[{"lease":"{lease}","key":"charge","result":"ok"}]}"#,
    ),
    (
        "PUT",
        "/v1/queues/fz",
        r#"{"length_max":100,"retry":{"max_attempts":3,"backoff_initial":"1s"},"rate_limit":{"rate":10.0,"burst":5},"watermarks":{"high":10,"low":5}}"#,
    ),
    (
        "POST",
        "/v1/tasks/cancel",
        r#"{"ids":["0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"]}"#,
    ),
    (
        "POST",
        "/v1/dead-letters/replay",
        r#"{"queue":"fz","limit":5}"#,
    ),
    (
        "POST",
        "/v1/dead-letters/purge",
        r#"{"ids":["0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"]}"#,
    ),
];

/// Values a mutation puts in place of a JSON value.
const HOSTILE: &[&str] = &[
    "null",
    "-1",
    "0",
    "1e309",
    "18446744073709551616",
    "-9223372036854775809",
    "1.5",
    "\"\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "[]",
    "{}",
    "true",
    "\"99999999999999999999s\"",
    "\"-1s\"",
];

/// One way to change a body.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Cut(usize, usize),
    Insert(usize, Vec<u8>),
    Repeat(usize, usize, usize),
    Hostile(usize, usize),
    Nest(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, bits)| Mutation::Flip(at, bits)),
        (any::<usize>(), 0usize..40).prop_map(|(at, len)| Mutation::Cut(at, len)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (any::<usize>(), 1usize..40, 1usize..50)
            .prop_map(|(at, len, times)| Mutation::Repeat(at, len, times)),
        (any::<usize>(), 0..HOSTILE.len()).prop_map(|(at, which)| Mutation::Hostile(at, which)),
        (any::<usize>(), 1usize..5000).prop_map(|(at, depth)| Mutation::Nest(at, depth)),
    ]
}

/// Applies `mutation` to `body` (positions wrap around the body's length).
fn mutate(body: &mut Vec<u8>, mutation: &Mutation) {
    let at = |i: usize, body: &Vec<u8>| {
        if body.is_empty() {
            0
        } else {
            i % (body.len() + 1)
        }
    };
    match mutation {
        Mutation::Flip(i, bits) if !body.is_empty() => {
            let i = i % body.len();
            body[i] ^= bits;
        }
        Mutation::Flip(..) => {}
        Mutation::Cut(i, len) => {
            let start = at(*i, body);
            let end = (start + len).min(body.len());
            body.drain(start..end);
        }
        Mutation::Insert(i, bytes) => {
            let start = at(*i, body);
            body.splice(start..start, bytes.iter().copied());
        }
        Mutation::Repeat(i, len, times) => {
            let start = at(*i, body);
            let end = (start + len).min(body.len());
            let piece = body[start..end].to_vec();
            for _ in 0..*times {
                body.splice(end..end, piece.iter().copied());
            }
        }
        Mutation::Hostile(i, which) => {
            // Replace the value after the next ':' (or insert one) with a hostile one.
            let start = at(*i, body);
            let colon = body[start..]
                .iter()
                .position(|b| *b == b':')
                .map(|p| start + p + 1);
            if let Some(from) = colon {
                let to = body[from..]
                    .iter()
                    .position(|b| matches!(b, b',' | b'}' | b']'))
                    .map_or(body.len(), |p| from + p);
                body.splice(from..to, HOSTILE[*which].bytes());
            }
        }
        Mutation::Nest(i, depth) => {
            let start = at(*i, body);
            let nested: Vec<u8> = "["
                .repeat(*depth)
                .into_bytes()
                .into_iter()
                .chain("]".repeat(*depth).into_bytes())
                .collect();
            body.splice(start..start, nested);
        }
    }
}

/// A request: a route, and its body (mutated or random).
#[derive(Clone, Debug)]
struct Case {
    route: usize,
    body: Vec<u8>,
    content_type: &'static str,
}

fn case() -> impl Strategy<Value = Case> {
    let mutated = (0..ROUTES.len(), prop::collection::vec(mutation(), 0..4)).prop_map(
        |(route, mutations)| {
            let mut body = ROUTES[route].2.as_bytes().to_vec();
            for m in &mutations {
                mutate(&mut body, m);
            }
            (route, body)
        },
    );
    let random = (0..ROUTES.len(), prop::collection::vec(any::<u8>(), 0..200));
    (
        prop_oneof![3 => mutated, 1 => random],
        prop_oneof![8 => Just("application/json"), 1 => Just("text/plain"), 1 => Just("application/json; charset=utf-16")],
    )
        .prop_map(|((route, body), content_type)| Case { route, body, content_type })
}

/// The statuses bad input may get; a 5xx is a bug (or a panic).
const EXPECTED: &[u16] = &[200, 201, 400, 404, 409, 413, 415, 422, 429];

#[test]
fn mutated_and_random_requests_get_clear_errors_never_a_5xx() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let api = runtime.block_on(Api::start());
    // A real lease, so that some mutated lease bodies name one.
    let lease = runtime.block_on(async {
        api.post("/v1/queues/fz/tasks", serde_json::json!({"tasks": [{"kind": "k", "payload": 1}, {"kind": "k", "payload": 2}]}))
            .await;
        let reserved = api
            .post("/v1/queues/fz/reserve", serde_json::json!({"max": 2, "lease": "5m"}))
            .await;
        reserved.json["tasks"][0]["lease"]["token"].as_str().unwrap().to_owned()
    });
    let config = ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(case in case())| {
        let (method, path, _) = ROUTES[case.route];
        let body = String::from_utf8_lossy(&case.body).replace("{lease}", &lease).into_bytes();
        let body = if std::str::from_utf8(&case.body).is_ok() { body } else { case.body.clone() };
        let reply = runtime.block_on(api.send(
            Method::from_bytes(method.as_bytes()).unwrap(),
            path,
            None,
            Some((case.content_type, body)),
        ));
        prop_assert!(
            EXPECTED.contains(&reply.status),
            "{method} {path} answered {}: {}", reply.status, reply.text
        );
        if reply.status >= 400 {
            prop_assert!(
                reply.json["error"]["code"].is_string() && reply.json["error"]["message"].is_string(),
                "not an error body: {}", reply.text
            );
        }
    });
    let health = runtime.block_on(api.get("/healthz"));
    assert_eq!(health.status, 200);
}

/// The bodies mutated above are valid as they stand, so the mutations start from requests the
/// server decodes, not from ones it refuses anyway.
#[tokio::test]
async fn the_bodies_before_mutation_are_accepted() {
    let api = Api::start().await;
    api.post(
        "/v1/queues/fz/tasks",
        serde_json::json!({"tasks": [{"kind": "k", "payload": 1}]}),
    )
    .await;
    let reserved = api
        .post(
            "/v1/queues/fz/reserve",
            serde_json::json!({"max": 1, "lease": "5m"}),
        )
        .await;
    let lease = reserved.json["tasks"][0]["lease"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    for (method, path, body) in ROUTES {
        let body = body.replace("{lease}", &lease).into_bytes();
        let reply = api
            .send(
                Method::from_bytes(method.as_bytes()).unwrap(),
                path,
                None,
                Some(("application/json", body)),
            )
            .await;
        // A single-lease call on a lease an earlier route used up is refused by the broker,
        // which proves its body was decoded.
        let decoded = reply.status < 300 || reply.code() == "wrong_state";
        assert!(decoded, "{method} {path}: {} {}", reply.status, reply.text);
    }
}
