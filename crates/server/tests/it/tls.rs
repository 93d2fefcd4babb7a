//! TLS with rustls: a client that trusts the server's certificate works end to end; one that
//! does not, or that speaks plain HTTP to the TLS port, gets nothing.

use std::path::PathBuf;
use std::sync::Arc;

use floodway_client::{ClientConfig, HttpBroker};
use floodway_core::{Broker, NewTask, QueueName};
use floodway_server::{ServerConfig, TlsConfig};

use crate::support::Api;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/fixtures")
        .join(name)
}

fn tls_config() -> ServerConfig {
    ServerConfig {
        tls: Some(TlsConfig {
            cert: fixture("cert.pem"),
            key: fixture("key.pem"),
        }),
        ..ServerConfig::default()
    }
}

#[tokio::test]
async fn a_client_trusting_the_certificate_works_over_tls() {
    let api = Api::start_with(tls_config()).await;
    assert!(api.url.starts_with("https://"), "{}", api.url);
    let config = ClientConfig::new(&api.url).ca_cert(fixture("cert.pem"));
    let broker = Arc::new(HttpBroker::connect(config).await.expect("a TLS connection"));
    let queue = QueueName::new("secure").unwrap();
    let answers = broker
        .enqueue(&queue, vec![NewTask::new("k", "{}")])
        .await
        .unwrap();
    assert_eq!(broker.get(answers[0].id).await.unwrap().queue, queue);
    broker.ping().await.unwrap();
}

#[tokio::test]
async fn untrusted_certificates_and_plain_http_get_nothing() {
    let api = Api::start_with(tls_config()).await;
    let untrusting = HttpBroker::connect(ClientConfig::new(&api.url)).await;
    let error = untrusting
        .expect_err("the certificate is not trusted")
        .to_string();
    assert!(error.to_lowercase().contains("certificate"), "{error}");

    let plain = api.url.replace("https://", "http://");
    let error = HttpBroker::connect(ClientConfig::new(plain))
        .await
        .expect_err("plain HTTP to a TLS port")
        .to_string();
    assert!(!error.is_empty());
}

#[test]
fn a_missing_or_wrong_key_is_refused_before_listening() {
    let broker_dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(
        floodway_embedded::EmbeddedBroker::open(broker_dir.path(), Default::default()).unwrap(),
    );
    let missing = ServerConfig {
        tls: Some(TlsConfig {
            cert: fixture("cert.pem"),
            key: fixture("no-such-key.pem"),
        }),
        ..ServerConfig::default()
    };
    let error = floodway_server::Server::new(broker.clone(), missing)
        .err()
        .expect("a missing key is refused")
        .to_string();
    assert!(error.contains("no-such-key.pem"), "{error}");
    let swapped = ServerConfig {
        tls: Some(TlsConfig {
            cert: fixture("key.pem"),
            key: fixture("key.pem"),
        }),
        ..ServerConfig::default()
    };
    assert!(floodway_server::Server::new(broker, swapped).is_err());
}
