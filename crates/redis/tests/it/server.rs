//! Real `redis-server` processes for the tests, on free loopback ports.
//!
//! Each server runs under a small `sh` wrapper that kills it (`kill -9`) when its standard
//! input closes, which happens when the test process exits however it exits: servers never
//! outlive the tests, even the shared ones held in statics (never dropped). Startup waits for
//! Redis's own "Ready to accept connections" line on its standard output, not for a timer.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A port no one listens on now (and, for Cluster nodes, its bus port + 10000 too).
pub(crate) fn free_port(with_bus: bool) -> u16 {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let port = listener.local_addr().expect("its address").port();
        if !with_bus || (port < 55_535 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()) {
            return port;
        }
    }
    panic!("no free loopback port found in 100 tries");
}

/// One `redis-server` and its data directory.
pub(crate) struct RedisServer {
    pub(crate) port: u16,
    /// The server's process id (not the wrapper's), for signals.
    pub(crate) pid: u32,
    /// Extra configuration it was started with, to restart it the same way.
    config: Vec<String>,
    dir: PathBuf,
    _tempdir: Option<TempDir>,
    wrapper: Child,
    /// Closing it makes the wrapper kill the server.
    stdin: Option<ChildStdin>,
}

impl RedisServer {
    /// Starts a server with `config` (e.g. `["--appendonly", "yes"]`) in a fresh directory.
    pub(crate) fn start(config: &[&str]) -> RedisServer {
        let tempdir = tempfile::tempdir().expect("a temporary directory");
        let dir = tempdir.path().to_owned();
        let config: Vec<String> = config.iter().map(|s| (*s).to_owned()).collect();
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port(config.iter().any(|c| c == "--cluster-enabled"));
            match spawn(port, &dir, &config) {
                Ok((wrapper, stdin, pid)) => {
                    return RedisServer {
                        port,
                        pid,
                        config,
                        dir,
                        _tempdir: Some(tempdir),
                        wrapper,
                        stdin: Some(stdin),
                    };
                }
                Err(err) => last_error = err,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends `signal` (`-9`, `-STOP`, `-CONT`) to the server.
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.pid.to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill {signal} {} failed", self.pid);
    }

    /// Kills the server with SIGKILL and waits until it is gone.
    pub(crate) fn kill(&mut self) {
        self.signal("-9");
        let deadline = Instant::now() + START_TIMEOUT;
        while Path::new(&format!("/proc/{}", self.pid)).exists()
            && !is_zombie(self.pid)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.stdin = None;
        let _ = self.wrapper.wait();
    }

    /// Starts the server again on the same port, directory and configuration.
    pub(crate) fn restart(&mut self) {
        let (wrapper, stdin, pid) =
            spawn(self.port, &self.dir, &self.config).expect("restarting redis-server");
        self.wrapper = wrapper;
        self.stdin = Some(stdin);
        self.pid = pid;
    }

    /// Starts a Redis Sentinel monitoring the primary at `primary_port` as `service`, with a
    /// quorum of one and a short down-after time.
    pub(crate) fn sentinel(service: &str, primary_port: u16) -> RedisServer {
        let tempdir = tempfile::tempdir().expect("a temporary directory");
        let dir = tempdir.path().to_owned();
        let port = free_port(false);
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "sentinel monitor {service} 127.0.0.1 {primary_port} 1\n\
                 sentinel down-after-milliseconds {service} 1000\n\
                 sentinel failover-timeout {service} 10000\n"
            ),
        )
        .expect("writing sentinel.conf");
        let mut wrapper = Command::new("sh")
            .arg("-c")
            .arg(r#"redis-server "$@" & echo "pid $!"; read _; kill -9 $! 2>/dev/null"#)
            .arg("sh")
            .arg(&conf)
            .arg("--sentinel")
            .arg("--port")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg("")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("running redis-server --sentinel");
        let (stdin, pid) = await_ready(&mut wrapper).expect("redis-sentinel starts");
        RedisServer {
            port,
            pid,
            config: Vec::new(),
            dir,
            _tempdir: Some(tempdir),
            wrapper,
            stdin: Some(stdin),
        }
    }

    /// Runs `redis-cli -p <port> args...` and answers its output.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .output()
            .expect("running redis-cli");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stdin = None;
        let _ = self.wrapper.wait();
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.split_whitespace().nth(2) == Some("Z"))
        .unwrap_or(true)
}

/// Starts the wrapper and the server; answers once the server is ready.
fn spawn(port: u16, dir: &Path, config: &[String]) -> Result<(Child, ChildStdin, u32), String> {
    let mut wrapper = Command::new("sh")
        .arg("-c")
        .arg(r#"redis-server "$@" & echo "pid $!"; read _; kill -9 $! 2>/dev/null"#)
        .arg("sh")
        .arg("--port")
        .arg(port.to_string())
        .arg("--bind")
        .arg("127.0.0.1")
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg("")
        .arg("--save")
        .arg("")
        .arg("--appendonly")
        .arg("no")
        .args(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|err| format!("cannot run sh/redis-server: {err}"))?;
    let (stdin, pid) = await_ready(&mut wrapper)?;
    Ok((wrapper, stdin, pid))
}

/// Waits for the wrapped server's pid and its readiness line; answers the wrapper's stdin
/// (closing it kills the server) and the server's pid.
fn await_ready(wrapper: &mut Child) -> Result<(ChildStdin, u32), String> {
    let stdin = wrapper.stdin.take().expect("piped stdin");
    let stdout = wrapper.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads the server's log: the pid, then "Ready to accept connections"; afterwards it
    // keeps draining the pipe so the server never blocks on a full one.
    std::thread::spawn(move || {
        let mut pid = None;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(p) = line.strip_prefix("pid ") {
                pid = p.trim().parse::<u32>().ok();
            } else if line.contains("Ready to accept connections")
                || line.contains("+monitor master")
            {
                let _ = tx.send(Ok(pid));
            } else if line.contains("Address already in use") || line.contains("# Fatal") {
                let _ = tx.send(Err(line.clone()));
            }
        }
        let _ = tx.send(Err("redis-server exited".to_owned()));
    });
    let mut stdin = Some(stdin);
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(Ok(Some(pid))) => Ok((stdin.take().expect("held"), pid)),
        Ok(Ok(None)) => Err("the wrapper did not report the pid".into()),
        Ok(Err(line)) => {
            drop(stdin.take());
            let _ = wrapper.wait();
            Err(line)
        }
        Err(_) => {
            if let Some(mut stdin) = stdin.take() {
                let _ = stdin.write_all(b"\n");
            }
            let _ = wrapper.wait();
            Err(format!("not ready within {START_TIMEOUT:?}"))
        }
    }
}

/// The server the conformance suite shares (each harness uses its own key prefix).
pub(crate) fn shared() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| RedisServer::start(&[]))
}

/// A three-primary Redis Cluster on loopback.
pub(crate) struct RedisCluster {
    pub(crate) nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub(crate) fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("running redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        // Redis announces no event when every node has learnt the slot map: poll, bounded.
        let deadline = Instant::now() + START_TIMEOUT;
        for node in &nodes {
            loop {
                let info = node.cli(&["cluster", "info"]);
                if info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster did not converge: {info}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        RedisCluster { nodes }
    }

    pub(crate) fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }
}

/// The cluster the conformance suite shares.
pub(crate) fn shared_cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(RedisCluster::start)
}

/// A key prefix no other harness in this run uses.
pub(crate) fn fresh_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
