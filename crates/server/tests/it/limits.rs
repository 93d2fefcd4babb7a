//! Limits on connections, at the socket: slow and silent clients are disconnected after the
//! header read timeout, and connections beyond the maximum wait until one closes. (Body,
//! batch and rate limits are in `errors.rs`.)

use std::time::{Duration, Instant};

use floodway_server::{Limits, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::Api;

const HEADER_TIMEOUT: Duration = Duration::from_millis(500);

fn with_limits(limits: Limits) -> ServerConfig {
    ServerConfig {
        limits,
        ..ServerConfig::default()
    }
}

async fn connect(api: &Api) -> TcpStream {
    TcpStream::connect(api.url.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection, and returns what it sent. Fails the test if
/// that takes longer than `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut received))
        .await
        .expect("the server closes the connection in time")
        .ok();
    received
}

#[tokio::test]
async fn a_client_sending_headers_too_slowly_is_disconnected() {
    let api = Api::start_with(with_limits(Limits {
        header_read_timeout: HEADER_TIMEOUT,
        ..Limits::default()
    }))
    .await;
    let mut slow = connect(&api).await;
    let started = Instant::now();
    slow.write_all(b"POST /v1/queues/q/tasks HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let received = read_until_closed(&mut slow, Duration::from_secs(10)).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= HEADER_TIMEOUT,
        "closed after {elapsed:?}, before the timeout"
    );
    // hyper may answer 408 before closing; it never answers anything else.
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );

    // A silent connection (a client that connects and says nothing) goes the same way.
    let mut silent = connect(&api).await;
    read_until_closed(&mut silent, Duration::from_secs(10)).await;

    // Meanwhile the server answers everyone else.
    assert_eq!(api.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn connections_beyond_the_maximum_wait_until_one_closes() {
    let api = Api::start_with(with_limits(Limits {
        connections_max: 2,
        ..Limits::default()
    }))
    .await;
    // Two clients hold both connections, idle.
    let first = connect(&api).await;
    let mut second = connect(&api).await;
    second
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 1024];
    let n = second.read(&mut buffer).await.unwrap();
    assert!(
        buffer[..n].starts_with(b"HTTP/1.1 200"),
        "the server holds two connections"
    );

    // A third is accepted by the kernel but not served...
    let mut third = connect(&api).await;
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut buffer)).await;
    assert!(
        early.is_err(),
        "a third connection was served while two were open"
    );
    // ...until one of the first two closes.
    drop(first);
    let answer = read_until_closed(&mut third, Duration::from_secs(10)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}
