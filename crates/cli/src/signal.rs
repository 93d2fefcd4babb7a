//! SIGINT and SIGTERM for the commands that run until stopped (`serve`, `worker`, the
//! refreshing views), with their handlers installed before the command announces itself.
//!
//! `floodway_worker::shutdown_signal` installs its handlers when first polled. A command that
//! printed "listening on …" or logged "worker started" before that poll could be killed by a
//! signal sent in between (the default action), instead of stopping gracefully: an
//! orchestrator that stops a container right after it started, or a test, would see an exit
//! by signal.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

/// A shutdown signal whose handlers are installed.
pub(crate) type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// `floodway_worker::shutdown_signal()`, polled once so its handlers are in place from now on.
/// Completes at once if a signal arrived during that poll.
pub(crate) async fn shutdown_signal() -> Shutdown {
    let mut signal: Shutdown = Box::pin(floodway_worker::shutdown_signal());
    let arrived = std::future::poll_fn(|cx| Poll::Ready(signal.as_mut().poll(cx).is_ready())).await;
    if arrived {
        Box::pin(std::future::ready(()))
    } else {
        signal
    }
}
