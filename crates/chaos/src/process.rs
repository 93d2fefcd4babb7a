//! The real processes of a run: `floodway serve`, `redis-server` and `floodway chaos worker`,
//! started on loopback, signalled, killed and restarted the same way.
//!
//! Every child is started with `kill_on_drop`, so none outlives the harness when a run ends
//! early. Readiness is awaited on what the process prints (its address, Redis's "Ready to
//! accept connections"), never on a timer.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::limits;

/// An error starting or signalling a process.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProcessError(pub String);

/// A port no one listens on now, on 127.0.0.1.
pub fn free_port() -> Result<u16, ProcessError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| ProcessError(format!("binding a loopback port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| ProcessError(format!("reading a loopback port: {e}")))
}

/// Sends `signal` (`KILL`, `STOP`, `CONT`, `TERM`) to process `pid` with kill(1).
pub async fn signal(pid: u32, signal: &str) -> Result<(), ProcessError> {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .await
        .map_err(|e| ProcessError(format!("running kill: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(ProcessError(format!(
            "kill -{signal} {pid} failed: {status}"
        )))
    }
}

/// A child and its pid.
struct Running {
    child: Child,
    pid: u32,
}

impl Running {
    fn spawn(
        mut command: Command,
        log: &Path,
    ) -> Result<(Running, tokio::process::ChildStdout), ProcessError> {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| ProcessError(format!("opening {}: {e}", log.display())))?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| ProcessError(format!("starting {command:?}: {e}")))?;
        let pid = child
            .id()
            .ok_or_else(|| ProcessError("the child exited at once".into()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        Ok((Running { child, pid }, stdout))
    }

    async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// SIGTERM, then SIGKILL if the process has not exited within [`limits::STOP_TIMEOUT`].
    async fn terminate(&mut self) {
        let _ = signal(self.pid, "TERM").await;
        if tokio::time::timeout(limits::STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(pid = self.pid, "a process ignored SIGTERM; killing it");
            self.kill().await;
        }
    }
}

/// Waits for a line of `child`'s stdout matching `ready`, and returns it.
async fn ready_line(
    stdout: tokio::process::ChildStdout,
    what: &str,
    log: &Path,
    ready: impl Fn(&str) -> bool,
) -> Result<String, ProcessError> {
    let mut lines = BufReader::new(stdout).lines();
    let found = tokio::time::timeout(limits::START_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if ready(&line) {
                return Some(line);
            }
        }
        None
    })
    .await;
    let tail = || std::fs::read_to_string(log).unwrap_or_default();
    match found {
        Ok(Some(line)) => {
            // Keep draining stdout so the child never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            Ok(line)
        }
        Ok(None) => Err(ProcessError(format!(
            "{what} exited before it was ready; its log: {}",
            tail()
        ))),
        Err(_) => Err(ProcessError(format!(
            "{what} was not ready within {:?}; its log: {}",
            limits::START_TIMEOUT,
            tail()
        ))),
    }
}

/// `floodway serve` on a fixed loopback port, restartable on the same port and data.
pub struct Server {
    floodway: PathBuf,
    data: PathBuf,
    broker: Option<String>,
    log: PathBuf,
    port: u16,
    running: Option<Running>,
    /// How many times it was started.
    pub starts: u32,
}

impl Server {
    /// Starts `floodway serve` on a free port, on the embedded broker in `data` (fsync
    /// durability) or on the Redis at `broker`.
    pub async fn start(
        floodway: &Path,
        data: &Path,
        broker: Option<String>,
        log: &Path,
    ) -> Result<Server, ProcessError> {
        let mut server = Server {
            floodway: floodway.to_owned(),
            data: data.to_owned(),
            broker,
            log: log.to_owned(),
            port: free_port()?,
            running: None,
            starts: 0,
        };
        server.restart().await?;
        Ok(server)
    }

    /// The server's address, `127.0.0.1:port`.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// SIGKILLs the server (no graceful shutdown, nothing flushed).
    pub async fn kill(&mut self) {
        if let Some(mut running) = self.running.take() {
            running.kill().await;
        }
    }

    /// Starts the server again (after [`Server::kill`]) on the same port and data, and waits
    /// until it listens.
    pub async fn restart(&mut self) -> Result<(), ProcessError> {
        self.kill().await;
        let mut command = Command::new(&self.floodway);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("--data")
            .arg(&self.data)
            .args(["--durability", "fsync", "serve", "--no-dashboard"])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)]);
        if let Some(broker) = &self.broker {
            command.args(["--broker", broker]);
        }
        let (running, stdout) = Running::spawn(command, &self.log)?;
        ready_line(stdout, "floodway serve", &self.log, |l| {
            l.starts_with("listening on ")
        })
        .await?;
        self.running = Some(running);
        self.starts += 1;
        Ok(())
    }

    /// Stops the server gracefully (SIGTERM) and waits for it.
    pub async fn stop(&mut self) {
        if let Some(mut running) = self.running.take() {
            running.terminate().await;
        }
    }
}

/// A `redis-server` with AOF on, on a fixed loopback port, restartable on the same data.
pub struct Redis {
    binary: PathBuf,
    dir: PathBuf,
    appendfsync: &'static str,
    log: PathBuf,
    port: u16,
    running: Option<Running>,
}

impl Redis {
    /// Starts `redis-server` in `dir` with `appendonly yes` and `appendfsync`, no RDB
    /// snapshots, on a free port.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        appendfsync: &'static str,
        log: &Path,
    ) -> Result<Redis, ProcessError> {
        let mut redis = Redis {
            binary: binary.to_owned(),
            dir: dir.to_owned(),
            appendfsync,
            log: log.to_owned(),
            port: free_port()?,
            running: None,
        };
        redis.restart().await?;
        Ok(redis)
    }

    /// The server's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The pid of the running server, for SIGSTOP and SIGCONT.
    pub fn pid(&self) -> Option<u32> {
        self.running.as_ref().map(|r| r.pid)
    }

    /// SIGKILLs Redis.
    pub async fn kill(&mut self) {
        if let Some(mut running) = self.running.take() {
            running.kill().await;
        }
    }

    /// Starts Redis again on the same port and directory (it reloads its AOF), and waits until
    /// it accepts connections.
    pub async fn restart(&mut self) -> Result<(), ProcessError> {
        self.kill().await;
        let mut command = Command::new(&self.binary);
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--appendonly", "yes", "--appendfsync", self.appendfsync])
            .args(["--save", "", "--daemonize", "no", "--loglevel", "notice"])
            .args(["--protected-mode", "no"]);
        let (running, stdout) = Running::spawn(command, &self.log)?;
        ready_line(stdout, "redis-server", &self.log, |l| {
            l.contains("Ready to accept connections")
        })
        .await?;
        self.running = Some(running);
        Ok(())
    }
}

/// The `floodway chaos worker` processes of a run. A worker that exits on its own (a poison
/// task aborted it) is noticed by [`Workers::revive`] and replaced.
pub struct Workers {
    floodway: PathBuf,
    server: String,
    dir: PathBuf,
    lease_ms: u64,
    concurrency: usize,
    slots: Vec<Option<Running>>,
    /// libfaketime and its control file, when the workers' clocks are to jump.
    faketime: Option<(PathBuf, PathBuf)>,
    /// Processes started, the first ones included.
    pub starts: u32,
}

/// Where Debian's `faketime` package puts libfaketime, if it is installed.
pub fn libfaketime() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|path| path.exists())
}

impl Workers {
    /// Starts `count` workers against the server at `server` (a URL), each logging to
    /// `dir/worker-<i>.log` and performing effects in `dir/downstream`. With `faketime`
    /// (libfaketime's path), every worker runs with it preloaded, its wall clock offset by
    /// what `dir/faketime` says (see [`Workers::set_clock`]).
    pub async fn start(
        floodway: &Path,
        server: String,
        dir: &Path,
        count: usize,
        concurrency: usize,
        lease_ms: u64,
        faketime: Option<PathBuf>,
    ) -> Result<Workers, ProcessError> {
        let faketime = faketime.map(|lib| (lib, dir.join("faketime")));
        let mut workers = Workers {
            faketime,
            floodway: floodway.to_owned(),
            server,
            dir: dir.to_owned(),
            lease_ms,
            concurrency,
            slots: (0..count).map(|_| None).collect(),
            starts: 0,
        };
        workers.set_clock("+0")?;
        for i in 0..count {
            workers.start_one(i)?;
        }
        Ok(workers)
    }

    /// Sets the workers' clock offset (libfaketime's syntax: `+0`, `+1d`, `-1d`); every
    /// worker reads it at its next clock call. Does nothing without libfaketime.
    pub fn set_clock(&self, offset: &str) -> Result<(), ProcessError> {
        if let Some((_, file)) = &self.faketime {
            std::fs::write(file, offset)
                .map_err(|e| ProcessError(format!("writing {}: {e}", file.display())))?;
        }
        Ok(())
    }

    /// How many worker slots the run has.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when the run has no workers.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn start_one(&mut self, i: usize) -> Result<(), ProcessError> {
        let log = self.dir.join(format!("worker-{i}.stderr"));
        let mut command = Command::new(&self.floodway);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .args(["chaos", "worker", "--server", &self.server])
            .args(["--name", &format!("chaos-worker-{i}-{}", self.starts)])
            .args(["--concurrency", &self.concurrency.to_string()])
            .args(["--lease-ms", &self.lease_ms.to_string()])
            .arg("--history")
            .arg(self.dir.join(format!("worker-{i}.history")))
            .arg("--downstream")
            .arg(self.dir.join("downstream"));
        if let Some((lib, file)) = &self.faketime {
            command
                .env("LD_PRELOAD", lib)
                .env("FAKETIME_TIMESTAMP_FILE", file)
                .env("FAKETIME_NO_CACHE", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let (running, stdout) = Running::spawn(command, &log)?;
        // Nothing is read from a worker's stdout; drain it so it never blocks.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(_)) = lines.next_line().await {}
        });
        self.slots[i] = Some(running);
        self.starts += 1;
        Ok(())
    }

    /// The pid of worker `i`, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.slots[i].as_ref().map(|r| r.pid)
    }

    /// SIGKILLs worker `i` and starts a new process in its place.
    pub async fn kill_and_replace(&mut self, i: usize) -> Result<(), ProcessError> {
        if let Some(mut running) = self.slots[i].take() {
            running.kill().await;
        }
        self.start_one(i)
    }

    /// Replaces every worker that exited on its own; returns how many.
    pub fn revive(&mut self) -> Result<u32, ProcessError> {
        let mut revived = 0;
        for i in 0..self.slots.len() {
            let exited = match &mut self.slots[i] {
                Some(running) => matches!(running.child.try_wait(), Ok(Some(_))),
                None => true,
            };
            if exited {
                self.start_one(i)?;
                revived += 1;
            }
        }
        Ok(revived)
    }

    /// Stops every worker gracefully (SIGTERM), waiting for each.
    pub async fn stop(&mut self) {
        for mut running in self.slots.iter_mut().filter_map(Option::take) {
            running.terminate().await;
        }
    }
}

/// A tmpfs mounted on a directory (the embedded broker's data directory for the disk-full
/// nemesis), unmounted when dropped. Mounting needs root (or CAP_SYS_ADMIN).
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_mib` MiB on `dir` (created if missing).
    pub fn mount(dir: &Path, size_mib: u64) -> Result<Tmpfs, ProcessError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ProcessError(format!("creating {}: {e}", dir.display())))?;
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| ProcessError(format!("running mount: {e}")))?;
        if !output.status.success() {
            return Err(ProcessError(format!(
                "the disk-full nemesis mounts a small tmpfs, which needs root: mount said {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(Tmpfs {
            dir: dir.to_owned(),
        })
    }

    /// Fills the file system with a ballast file until a write fails for lack of space;
    /// returns the bytes written.
    pub fn fill(&self) -> Result<u64, ProcessError> {
        use std::io::Write;
        let mut file = std::fs::File::create(self.ballast())
            .map_err(|e| ProcessError(format!("creating the ballast: {e}")))?;
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => return Ok(written),
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => return Ok(written), // ENOSPC
                Err(e) => return Err(ProcessError(format!("writing the ballast: {e}"))),
            }
        }
    }

    /// Deletes the ballast, freeing the space.
    pub fn free(&self) -> Result<(), ProcessError> {
        match std::fs::remove_file(self.ballast()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ProcessError(format!("removing the ballast: {e}"))),
        }
    }

    fn ballast(&self) -> PathBuf {
        self.dir.join("ballast")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}
