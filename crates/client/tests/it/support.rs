//! A real server on a loopback port over an embedded broker, started and stopped by tests.

use std::sync::Arc;

use floodway_embedded::EmbeddedBroker;
use floodway_server::{Server, ServerConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server and the broker behind it.
pub(crate) struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub(crate) url: String,
    /// The broker the server serves, for checks behind the API's back.
    pub(crate) broker: Arc<EmbeddedBroker>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Serves `broker` with `config` (its `listen` is replaced by a free loopback port).
    pub(crate) async fn start(broker: Arc<EmbeddedBroker>, config: ServerConfig) -> Self {
        let listen = "127.0.0.1:0".parse().expect("a loopback address");
        TestServer::start_on(listen, broker, config).await
    }

    /// Serves `broker` with `config` on `listen`.
    pub(crate) async fn start_on(
        listen: std::net::SocketAddr,
        broker: Arc<EmbeddedBroker>,
        config: ServerConfig,
    ) -> Self {
        let config = ServerConfig { listen, ..config };
        let server = Server::new(broker.clone(), config)
            .expect("a valid server configuration")
            .bind()
            .await
            .expect("binding a loopback port");
        let url = server.url();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        TestServer {
            url,
            broker,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops accepting, lets requests in flight finish, and waits for the server to end.
    pub(crate) async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("the server task ends cleanly")
                .expect("the server stops without error");
        }
    }
}

/// A fresh embedded broker with the default options in `dir`.
pub(crate) fn broker(dir: &tempfile::TempDir) -> Arc<EmbeddedBroker> {
    Arc::new(
        EmbeddedBroker::open(dir.path(), floodway_embedded::Options::default())
            .expect("opening the embedded broker"),
    )
}
