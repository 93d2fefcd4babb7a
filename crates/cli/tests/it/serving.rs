//! `floodway serve` as a real process: started on a free port, read for its address, stopped
//! with SIGTERM; and the clients the tests talk to it with.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};

use floodway_client::{ClientConfig, HttpBroker, Producer, ProducerConfig, Token};
use floodway_server::auth::hash_token;

use crate::Floodway;

/// A running `floodway serve`.
pub(crate) struct Serving {
    child: Child,
    /// `http://127.0.0.1:<port>`, as the server printed it.
    pub(crate) url: String,
    /// Where the server's stderr (its logs) goes.
    pub(crate) stderr: PathBuf,
}

impl Serving {
    /// Starts `floodway serve <args>` with `envs` (listening on a free loopback port unless
    /// `args` say otherwise), and waits for the line with its address.
    pub(crate) fn start(floodway: &Floodway, args: &[&str], envs: &[(&str, &str)]) -> Serving {
        let stderr = floodway.scratch(&format!("serve-{}.log", fastrand::u32(..)));
        let mut all = vec!["serve"];
        if !args.contains(&"--listen") {
            all.extend(["--listen", "127.0.0.1:0"]);
        }
        all.extend_from_slice(args);
        let mut command = floodway.command(&all);
        command
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap());
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("floodway serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(url) = line.trim().strip_prefix("listening on ") else {
            let _ = child.wait();
            panic!(
                "floodway serve did not start: {line:?}; stderr: {}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        };
        Serving {
            url: url.to_owned(),
            child,
            stderr,
        }
    }

    /// Sends SIGTERM and waits for the server to stop.
    pub(crate) fn stop(mut self) -> ExitStatus {
        terminate(&self.child);
        self.child.wait().unwrap()
    }

    /// The server's logs so far.
    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        // A test that failed before `stop`: do not leave the server running.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends SIGTERM to `child`, a process this test started.
pub(crate) fn terminate(child: &Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "sending SIGTERM to {}", child.id());
}

/// Writes a configuration file with one token per `(name, secret, scopes)` and returns its
/// path.
pub(crate) fn config_file(
    floodway: &Floodway,
    extra: &str,
    tokens: &[(&str, &str, &str)],
) -> PathBuf {
    let mut text = extra.to_owned();
    for (name, secret, scopes) in tokens {
        text.push_str(&format!(
            "\n[[tokens]]\nname = \"{name}\"\nhash = \"{}\"\nscopes = [{scopes}]\n",
            hash_token(secret)
        ));
    }
    let path = floodway.scratch(&format!("serve-{}.toml", fastrand::u32(..)));
    std::fs::write(&path, text).unwrap();
    path
}

/// A producer for `url` with `token`.
pub(crate) fn producer(url: &str, token: Option<&str>) -> Producer {
    let mut config = ClientConfig::new(url);
    config.token = token.map(Token::new);
    Producer::new(config, ProducerConfig::default()).unwrap()
}

/// The HTTP broker for `url` with `token`.
pub(crate) async fn remote(url: &str, token: Option<&str>) -> HttpBroker {
    let mut config = ClientConfig::new(url);
    config.token = token.map(Token::new);
    HttpBroker::connect(config).await.unwrap()
}

/// A tokio runtime for a test's client calls.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
