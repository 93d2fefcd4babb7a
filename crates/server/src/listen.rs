//! [`Server`]: the listening socket and the connections on it.
//!
//! The accept loop is written here rather than taken from `axum::serve` because every limit on
//! connections lives at this level: a connection is accepted only while fewer than
//! `connections_max` are open (the rest wait in the kernel's accept queue); hyper's HTTP/1
//! connection is given a timer, without which its header read timeout silently does nothing,
//! so a client that sends headers slowly or not at all (slowloris) is disconnected after
//! `header_read_timeout`, which also closes idle keep-alive connections; TLS handshakes have a
//! deadline of their own; and shutdown stops accepting, lets requests in flight finish for a
//! grace period, then closes what is left. docs/decisions/0007 records the choice.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use floodway_core::Broker;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::app::{self, App};
use crate::auth::Auth;
use crate::config::{ConfigError, Limits, ServerConfig, TlsConfig};
use crate::limits;
use crate::metrics::HttpMetrics;

/// The HTTP API over a broker, configured and ready to bind.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use floodway_embedded::{EmbeddedBroker, Options};
/// use floodway_server::{Server, ServerConfig};
///
/// let broker = Arc::new(EmbeddedBroker::open("./floodway-data", Options::default())?);
/// let server = Server::new(broker, ServerConfig::default())?.bind().await?;
/// println!("listening on {}", server.url());
/// server.serve(async { let _ = tokio::signal::ctrl_c().await; }).await?;
/// # Ok(()) }
/// ```
pub struct Server {
    config: ServerConfig,
    router: Router,
    tls: Option<TlsAcceptor>,
    registry: Arc<floodway_metrics::Registry>,
}

impl Server {
    /// The API over `broker` with `config`, which is validated (and its TLS files loaded)
    /// here, so a bad setting fails before anything listens.
    pub fn new<B: Broker>(broker: Arc<B>, config: ServerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let tls = config.tls.as_ref().map(load_tls).transpose()?;
        let metrics = Arc::new(HttpMetrics::default());
        let registry = Arc::new(floodway_metrics::Registry::new());
        registry
            .register(metrics.clone())
            .expect("a new registry has room");
        let app = Arc::new(App {
            broker,
            auth: Auth::new(&config),
            limits: config.limits.clone(),
            metrics,
            registry: registry.clone(),
            queues: floodway_metrics::QueueMetrics::new(),
        });
        let router = app::router(app, &config);
        Ok(Server {
            config,
            router,
            tls,
            registry,
        })
    }

    /// The registry `/metrics` exports (with the queues the caller may administer): it
    /// holds the server's request metrics; register a process's workers or producers in it
    /// to export them on the same endpoint.
    pub fn registry(&self) -> Arc<floodway_metrics::Registry> {
        self.registry.clone()
    }

    /// Binds the listening socket. With port 0 in `listen`, the system picks a free port:
    /// [`Listening::local_addr`] says which.
    pub async fn bind(self) -> io::Result<Listening> {
        let listener = TcpListener::bind(self.config.listen).await?;
        let local_addr = listener.local_addr()?;
        Ok(Listening {
            listener,
            local_addr,
            server: self,
        })
    }
}

/// A bound server, about to serve.
pub struct Listening {
    listener: TcpListener,
    local_addr: SocketAddr,
    server: Server,
}

impl Listening {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL clients use: `http://` or `https://` and the address.
    pub fn url(&self) -> String {
        let scheme = if self.server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.local_addr)
    }

    /// Serves connections until `shutdown` completes, then stops accepting, lets requests in
    /// flight finish for up to [`limits::SHUTDOWN_GRACE`], and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> io::Result<()> {
        let Listening {
            listener, server, ..
        } = self;
        serve_router(
            listener,
            server.router,
            server.tls,
            &server.config.limits,
            shutdown,
        )
        .await
    }
}

/// Serves `router` on `listener` until `shutdown` completes (the accept loop described in
/// the module docs), with TLS when given an acceptor.
pub(crate) async fn serve_router(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: &Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.connections_max));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits::HEADER_BYTES_MAX)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => {
                permit.expect("the connection semaphore is never closed")
            }
        };
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Out of file descriptors, say. The error is the machine's, not the
                    // client's: pause briefly so the loop does not spin on it.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            http: http.clone(),
            service: TowerToHyperService::new(router.clone()),
            watcher: graceful.watcher(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            connection.run(stream, tls).await;
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "shutting down: letting requests in flight finish"
    );
    if tokio::time::timeout(limits::SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after the shutdown grace period were cut off");
    }
    Ok(())
}

/// One accepted connection, served to its end.
struct Connection {
    http: hyper::server::conn::http1::Builder,
    service: TowerToHyperService<Router>,
    watcher: hyper_util::server::graceful::Watcher,
}

impl Connection {
    async fn run(self, stream: TcpStream, tls: Option<TlsAcceptor>) {
        match tls {
            None => self.serve(stream).await,
            Some(acceptor) => {
                match tokio::time::timeout(limits::TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                    .await
                {
                    Ok(Ok(stream)) => self.serve(stream).await,
                    Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            }
        }
    }

    async fn serve<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(self, io: I) {
        let connection = self.http.serve_connection(TokioIo::new(io), self.service);
        if let Err(error) = self.watcher.watch(connection).await {
            // Clients that go away, and the header timeout, end up here; neither is the
            // server's problem.
            tracing::debug!(%error, "connection ended with an error");
        }
    }
}

/// The TLS acceptor for `tls`: rustls with the ring provider, HTTP/1.1 by ALPN.
fn load_tls(tls: &TlsConfig) -> Result<TlsAcceptor, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| {
            ConfigError::Tls(format!(
                "reading the certificate chain {}: {error}",
                tls.cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(ConfigError::Tls(format!(
            "{} holds no PEM certificate",
            tls.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|error| {
        ConfigError::Tls(format!(
            "reading the private key {}: {error}",
            tls.key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ConfigError::Tls(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| {
            ConfigError::Tls(format!("the certificate and key do not work: {error}"))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
