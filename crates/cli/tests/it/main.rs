//! Integration tests of the `floodway` binary: one test binary, one module per area.
//!
//! Every test runs the real binary (`CARGO_BIN_EXE_floodway`) against a data directory of its
//! own in a temporary directory, and reads its stdout, stderr and exit code as a user or a
//! script would.

mod admin;
mod bad_input;
mod chaos;
mod clock;
mod crash;
mod demo;
mod deploy;
mod disk_full;
#[cfg(feature = "otel-tests")]
mod otel;
mod python_worker;
mod secrets;
mod serve;
mod serve_redis;
mod serving;
mod trace;
mod watch;
mod worker_metrics;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use tempfile::TempDir;

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_floodway");

/// A data directory and the commands that run against it.
pub(crate) struct Floodway {
    /// Holds the data directory; deleted when the test ends.
    root: TempDir,
}

impl Floodway {
    /// A fresh, not yet existing, data directory.
    pub(crate) fn new() -> Self {
        Floodway {
            root: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    /// The data directory (created by the first command that writes).
    pub(crate) fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// A scratch path next to the data directory.
    pub(crate) fn scratch(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// `floodway --data <dir> args...`, with the environment cleared of floodway settings.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        command(&self.data(), args)
    }

    /// Runs `args` to the end.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .expect("the floodway binary runs")
    }

    /// Runs `args`, expects success, and returns stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "floodway {args:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("stdout is UTF-8")
    }

    /// Runs `args --json`, expects success, and parses stdout as one JSON document.
    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let stdout = self.ok(&args);
        serde_json::from_str(&stdout).unwrap_or_else(|error| {
            panic!("floodway {args:?} printed invalid JSON ({error}): {stdout}")
        })
    }

    /// Runs `args`, expects exit code `code` with nothing on stdout and a one-line message on
    /// stderr, and returns that line.
    pub(crate) fn fails(&self, args: &[&str], code: i32) -> String {
        let output = self.run(args);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(
            output.status.code(),
            Some(code),
            "floodway {args:?}: expected exit code {code}, stderr: {stderr}"
        );
        assert!(
            output.stdout.is_empty(),
            "floodway {args:?} printed on stdout: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "floodway {args:?}: not one line: {stderr}");
        assert!(lines[0].starts_with("error: "), "{stderr}");
        lines[0].to_owned()
    }

    /// Enqueues one task and returns its id.
    pub(crate) fn enqueue(&self, queue: &str, kind: &str) -> String {
        self.ok(&["enqueue", queue, kind]).trim().to_owned()
    }
}

/// `floodway --data <data> args...`, with the environment cleared of floodway settings.
pub(crate) fn command(data: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("FLOODWAY_DATA")
        .env_remove("FLOODWAY_DURABILITY")
        .env_remove("FLOODWAY_SERVER")
        .env_remove("FLOODWAY_TOKEN")
        .env_remove("RUST_LOG");
    command
}
