//! The OpenAPI document: generated from the handlers, served at `/openapi.json`, complete,
//! and true to what the server answers.

use reqwest::Method;
use serde_json::{Value, json};

use crate::auth::{matches_template, operations, send};
use crate::support::{Api, config_with_tokens, secret};

fn spec() -> Value {
    serde_json::to_value(floodway_server::openapi()).unwrap()
}

#[tokio::test]
async fn the_served_document_is_the_generated_one_and_every_reference_resolves() {
    let api = Api::start().await;
    let served = api.get("/openapi.json").await;
    assert_eq!(served.status, 200);
    assert_eq!(served.json, spec());
    assert!(served.json["openapi"].as_str().unwrap().starts_with("3."));
    let text = served.text;
    let schemas = served.json["components"]["schemas"].as_object().unwrap();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "unresolved reference to {name}");
    }
    for (path, item) in served.json["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|status| status.starts_with('2')),
                "{method} {path} documents no success"
            );
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let body = &response["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(
                        body, "#/components/schemas/ErrorBody",
                        "{method} {path} {status} is not an ErrorBody"
                    );
                }
            }
        }
    }
}

#[test]
fn queue_statistics_document_the_start_latency_histogram() {
    let spec = spec();
    let schemas = &spec["components"]["schemas"];
    let required = schemas["QueueStats"]["required"].as_array().unwrap();
    assert!(required.contains(&json!("start_latency")), "{required:?}");
    let latency = &schemas["StartLatency"];
    for field in ["bounds_seconds", "counts", "sum_seconds"] {
        assert!(
            latency["properties"][field].is_object(),
            "StartLatency lacks {field}: {latency}"
        );
    }
}

#[tokio::test]
async fn every_status_the_server_answers_is_documented() {
    let api = Api::start_with(config_with_tokens()).await;
    let admin = secret("admin");
    let enqueued = api
        .send(
            Method::POST,
            "/v1/queues/orders/tasks",
            Some(&admin),
            Some(("application/json", br#"{"kind":"k"}"#.to_vec())),
        )
        .await;
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
    let spec = spec();
    for (method, path, body, _) in operations(&id, &lease) {
        let (template, item) = spec["paths"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(template, item)| {
                matches_template(template, &path)
                    && item.get(method.as_str().to_lowercase()).is_some()
            })
            .unwrap_or_else(|| panic!("{method} {path} is not documented"));
        let responses = &item[method.as_str().to_lowercase()]["responses"];
        for token in [None, Some(secret("other")), Some(admin.clone())] {
            let reply = send(&api, &method, &path, &body, token.as_deref()).await;
            assert!(
                responses.get(reply.status.to_string()).is_some(),
                "{method} {template} answered {} which it does not document: {}",
                reply.status,
                reply.text
            );
        }
    }
}
