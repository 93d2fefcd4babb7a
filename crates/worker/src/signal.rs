//! [`shutdown_signal`]: the future most programs pass to [`crate::Worker::run`].

/// Completes when the process receives SIGINT (Ctrl-C) or, on Unix, SIGTERM (what container
/// runtimes and systemd send to stop a service).
///
/// If a signal handler cannot be installed, the error is logged and the other signal is still
/// awaited; if neither can be, the future never completes, so a worker is never shut down by
/// mistake.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
