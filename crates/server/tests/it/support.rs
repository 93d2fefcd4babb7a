//! The test fixture: a server on a loopback port over an embedded broker whose clock the test
//! moves by hand, and a plain HTTP client.

use std::sync::Arc;
use std::time::Duration;

use floodway_core::{Broker, ManualClock, QueueStats, Task, TaskFilter, Timestamp, limits};
use floodway_embedded::{Durability, EmbeddedBroker, Options};
use floodway_server::auth::hash_token;
use floodway_server::{Scope, Server, ServerConfig, TokenConfig};
use reqwest::Method;
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server, its broker and its clock.
pub(crate) struct Api {
    /// `http://127.0.0.1:<port>`.
    pub(crate) url: String,
    /// The broker behind the API, for checks behind its back.
    pub(crate) broker: Arc<EmbeddedBroker>,
    /// The broker's clock.
    pub(crate) clock: ManualClock,
    /// The server's metrics registry, where a test registers in-process sources.
    pub(crate) registry: Arc<floodway_metrics::Registry>,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    _dir: TempDir,
}

/// An answer: status, headers, and the body as JSON (`Value::Null` when it is not JSON).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) json: Value,
    pub(crate) text: String,
}

impl Reply {
    /// The error code of an error answer, after checking the body has the error shape.
    pub(crate) fn code(&self) -> &str {
        let error = &self.json["error"];
        assert!(
            error["code"].is_string() && error["message"].is_string(),
            "not an error body: {}",
            self.text
        );
        assert_eq!(
            self.headers["content-type"], "application/json",
            "errors are JSON"
        );
        error["code"].as_str().unwrap()
    }
}

/// A config with one token per scope set: `admin` (everything), `producer` (produce on
/// `orders*`), `worker` (consume on `orders*`), `other` (everything on `elsewhere`).
pub(crate) fn config_with_tokens() -> ServerConfig {
    let token = |name: &str, scopes: &[Scope], queues: &[&str]| TokenConfig {
        name: name.to_owned(),
        hash: hash_token(&secret(name)),
        scopes: scopes.to_vec(),
        queues: queues.iter().map(|q| (*q).to_owned()).collect(),
        rate: None,
    };
    ServerConfig {
        tokens: vec![
            token(
                "admin",
                &[Scope::Admin, Scope::Produce, Scope::Consume],
                &["*"],
            ),
            token("producer", &[Scope::Produce], &["orders*"]),
            token("worker", &[Scope::Consume], &["orders*"]),
            token(
                "other",
                &[Scope::Admin, Scope::Produce, Scope::Consume],
                &["elsewhere"],
            ),
        ],
        ..ServerConfig::default()
    }
}

/// The secret of the token named `name` in [`config_with_tokens`].
pub(crate) fn secret(name: &str) -> String {
    format!("fw_test_{name}_secret")
}

impl Api {
    /// A server with the default configuration (no tokens).
    pub(crate) async fn start() -> Self {
        Api::start_with(ServerConfig::default()).await
    }

    /// A server with `config` on a free loopback port.
    pub(crate) async fn start_with(config: ServerConfig) -> Self {
        Api::start_at(config, Timestamp::from_millis(1_800_000_000_000)).await
    }

    /// A server with `config` whose broker's clock starts at `start`.
    pub(crate) async fn start_at(config: ServerConfig, start: Timestamp) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(start);
        let broker = Arc::new(
            EmbeddedBroker::open(
                dir.path(),
                Options {
                    durability: Durability::Off,
                    clock: Arc::new(clock.clone()),
                    maintenance_interval: None,
                    ..Options::default()
                },
            )
            .unwrap(),
        );
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..config
        };
        let server = Server::new(broker.clone(), config).unwrap();
        let registry = server.registry();
        let server = server.bind().await.unwrap();
        let url = server.url();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Api {
            url,
            broker,
            clock,
            registry,
            http: http_client(),
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// Sends `method path` with `token` (as a bearer token) and `body` (as JSON, with its
    /// content type) and reads the answer.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Reply {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .timeout(Duration::from_secs(30));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some((content_type, bytes)) = body {
            request = request.header("content-type", content_type).body(bytes);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            json,
            text,
        }
    }

    /// `GET path` without a token.
    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, None).await
    }

    /// `method path` with a JSON body, without a token.
    pub(crate) async fn json(&self, method: Method, path: &str, body: Value) -> Reply {
        self.send(
            method,
            path,
            None,
            Some(("application/json", serde_json::to_vec(&body).unwrap())),
        )
        .await
    }

    /// `POST path` with a JSON body, without a token.
    pub(crate) async fn post(&self, path: &str, body: Value) -> Reply {
        self.json(Method::POST, path, body).await
    }

    /// Everything the broker holds: every task and every queue's statistics.
    pub(crate) async fn snapshot(&self) -> (Vec<Task>, Vec<QueueStats>) {
        let tasks = self
            .broker
            .list(TaskFilter {
                limit: limits::LIST_LIMIT_MAX,
                ..TaskFilter::default()
            })
            .await
            .unwrap();
        (tasks, self.broker.stats(None).await.unwrap())
    }

    /// Stops the server and waits for it to end.
    pub(crate) async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// A plain HTTP client. reqwest is built without a TLS provider of its own; these tests speak
/// plain HTTP, and the TLS tests configure theirs.
pub(crate) fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().http1_only().build().unwrap()
}
