//! The HTTP API's request decoding on arbitrary bodies: the first byte picks a route that
//! decodes a body and a content type, the rest is the body. The real router (over an embedded
//! broker) must answer with a status it documents for bad input, never a 5xx (a panic in an
//! extractor or handler shows as one, or as no answer), and with the JSON error body for
//! every 4xx. Stable twin: crates/server/tests/it/fuzz.rs.
#![no_main]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, OnceLock};

use floodway_embedded::{Durability, EmbeddedBroker, Options};
use floodway_server::{Server, ServerConfig};
use libfuzzer_sys::fuzz_target;

const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/queues/fz/tasks"),
    ("POST", "/v1/queues/fz/reserve"),
    ("POST", "/v1/leases/ack"),
    ("POST", "/v1/leases/extend"),
    ("POST", "/v1/leases/fail"),
    ("POST", "/v1/leases/release"),
    ("POST", "/v1/leases/effects"),
    ("PUT", "/v1/queues/fz"),
    ("POST", "/v1/tasks/cancel"),
    ("POST", "/v1/dead-letters/replay"),
    ("POST", "/v1/dead-letters/purge"),
];
const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "text/plain",
    "application/json; charset=utf-16",
];
const EXPECTED: &[u16] = &[200, 201, 400, 404, 409, 413, 415, 422, 429];

/// The server, started once per fuzzing process; its address.
fn server() -> &'static str {
    static ADDRESS: OnceLock<String> = OnceLock::new();
    ADDRESS.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let dir = tempfile::tempdir().unwrap();
                let options = Options {
                    durability: Durability::Off,
                    ..Options::default()
                };
                let broker = Arc::new(EmbeddedBroker::open(dir.path(), options).unwrap());
                let config = ServerConfig {
                    listen: "127.0.0.1:0".parse().unwrap(),
                    ..ServerConfig::default()
                };
                let server = Server::new(broker, config).unwrap().bind().await.unwrap();
                tx.send(server.local_addr().to_string()).unwrap();
                server.serve(std::future::pending()).await.unwrap();
                drop(dir);
            });
        });
        rx.recv().unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, body)) = data.split_first() else {
        return;
    };
    let (method, path) = ROUTES[usize::from(choice) % ROUTES.len()];
    let content_type = CONTENT_TYPES[usize::from(choice / 16) % CONTENT_TYPES.len()];
    let address = server();
    let mut stream = TcpStream::connect(address).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    let reply = String::from_utf8_lossy(&reply);
    let status: u16 = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {reply:?}"));
    assert!(
        EXPECTED.contains(&status),
        "{method} {path} answered {status}: {reply}"
    );
    if status >= 400 {
        let body = reply.split("\r\n\r\n").nth(1).unwrap_or("");
        let json: serde_json::Value = serde_json::from_str(body).expect("an error body is JSON");
        assert!(
            json["error"]["code"].is_string(),
            "not an error body: {body}"
        );
    }
});
