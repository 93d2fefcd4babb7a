//! A real headless Chromium driven through `chromedriver` with the W3C WebDriver protocol: a
//! few JSON calls over HTTP with the reqwest client the tests already use, rather than a
//! WebDriver crate (see docs/decisions/0016).
//!
//! Debian's `chromium` and `chromedriver` (package `chromium-driver`) must be on `PATH`.
//! Without them the browser tests print why and pass, except with `CI=true`, where they fail:
//! `.ci/run` installs both.
//!
//! Each [`Browser`] starts its own `chromedriver` on a free loopback port, in a process group
//! of its own, with a fresh profile directory; dropping it ends the session and kills the
//! group (chromedriver and every Chromium process it started), also when a test fails.
//! Waits poll the page for a condition until a deadline; nothing sleeps for a fixed time.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

/// How long a wait for the page lasts before the test fails.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// One browser at a time in this test binary: Chromium is heavy and the machine may be small.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A Chromium session.
pub(crate) struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    driver: Child,
    _profile: TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// An element of the page, by its WebDriver reference.
#[derive(Clone, Debug)]
pub(crate) struct Element(String);

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The Chromium and chromedriver programs, or `None` (with the reason printed) when they are
/// missing outside CI. In CI a missing program fails the test.
fn programs() -> Option<(PathBuf, PathBuf)> {
    let chromium = on_path(&["chromium", "chromium-browser"]);
    let driver = on_path(&["chromedriver"]);
    match (chromium, driver) {
        (Some(chromium), Some(driver)) => Some((chromium, driver)),
        (chromium, driver) => {
            let missing: Vec<&str> = [
                chromium.is_none().then_some("chromium"),
                driver.is_none().then_some("chromedriver"),
            ]
            .into_iter()
            .flatten()
            .collect();
            let reason = format!(
                "{} not on PATH (apt-get install chromium chromium-driver)",
                missing.join(" and ")
            );
            assert!(
                !in_ci(),
                "CI=true and the browser tests cannot run: {reason}"
            );
            println!("skipping the dashboard's browser test: {reason}");
            None
        }
    }
}

/// Starts `chromedriver` on a free port and returns it with the port it reports.
fn start_driver(driver: &Path) -> (Child, u16) {
    let mut child = Command::new(driver)
        .arg("--port=0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // A group of its own, so that killing the group ends Chromium too.
        .process_group(0)
        .spawn()
        .expect("chromedriver starts");
    let stdout = child.stdout.take().unwrap();
    let (lines, port) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Reads every line, so chromedriver never blocks on a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                let _ = lines.send(rest.trim_end_matches('.').trim().parse::<u16>());
            }
        }
    });
    match port.recv_timeout(WAIT) {
        Ok(Ok(port)) => (child, port),
        other => {
            kill_group(&mut child);
            panic!("chromedriver did not report its port: {other:?}");
        }
    }
}

fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

impl Browser {
    /// A fresh headless Chromium with a window of `width` × `height`, or `None` when the
    /// programs are missing outside CI.
    pub(crate) async fn start(width: u32, height: u32) -> Option<Browser> {
        Browser::start_with(width, height, &[]).await
    }

    /// As [`Browser::start`], with more Chromium flags (`--force-dark-mode`).
    pub(crate) async fn start_with(width: u32, height: u32, flags: &[&str]) -> Option<Browser> {
        let (chromium, driver) = programs()?;
        let turn = ONE_AT_A_TIME.lock().await;
        let profile = tempfile::tempdir().unwrap();
        let (driver, port) = start_driver(&driver);
        let mut browser = Browser {
            http: crate::support::http_client(),
            session: String::new(),
            driver,
            _profile: profile,
            _turn: turn,
        };
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        args.extend(flags.iter().map(|flag| (*flag).to_owned()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let created = browser
            .raw(
                reqwest::Method::POST,
                &format!("http://127.0.0.1:{port}/session"),
                Some(capabilities),
            )
            .await
            .unwrap_or_else(|error| panic!("a WebDriver session starts: {error}"));
        let id = created["sessionId"].as_str().expect("a session id");
        browser.session = format!("http://127.0.0.1:{port}/session/{id}");
        Some(browser)
    }

    async fn raw(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self
            .http
            .request(method, url)
            .timeout(Duration::from_secs(60));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).unwrap());
        }
        let response = request
            .send()
            .await
            .map_err(|error| format!("chromedriver does not answer: {error}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let answer: Value =
            serde_json::from_str(&text).map_err(|_| format!("not JSON: {status} {text}"))?;
        let value = answer["value"].clone();
        if status.is_success() {
            Ok(value)
        } else {
            Err(format!(
                "{}: {}",
                value["error"].as_str().unwrap_or("error"),
                value["message"]
                    .as_str()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("")
            ))
        }
    }

    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        self.raw(method, &format!("{}{path}", self.session), body)
            .await
    }

    /// Opens `url` and waits for it to load.
    pub(crate) async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await
            .unwrap();
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page and returns what it
    /// returns.
    pub(crate) async fn execute(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
        .unwrap_or_else(|error| panic!("script failed: {error}\n{script}"))
    }

    /// Runs `script`, which calls its last argument with the result (a promise's value).
    pub(crate) async fn execute_async(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({"script": script, "args": args})),
        )
        .await
        .unwrap_or_else(|error| panic!("script failed: {error}\n{script}"))
    }

    async fn find(&self, css: &str) -> Result<Element, String> {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        Ok(Element(found[ELEMENT].as_str().unwrap().to_owned()))
    }

    /// Waits until an element matching `css` is on the page and shown, then returns it.
    pub(crate) async fn wait_for(&self, css: &str) -> Element {
        self.wait_until(
            &format!("{css} is shown"),
            "const e = document.querySelector(arguments[0]); \
             return !!e && e.getClientRects().length > 0;",
            json!([css]),
        )
        .await;
        self.find(css).await.unwrap()
    }

    /// Waits until the text of the element matching `css` satisfies `check`; returns it.
    pub(crate) async fn wait_text(
        &self,
        css: &str,
        description: &str,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        loop {
            let text = self
                .execute(
                    "const e = document.querySelector(arguments[0]); \
                     return e ? e.innerText : null;",
                    json!([css]),
                )
                .await;
            if let Some(text) = text.as_str() {
                if check(text) {
                    return text.to_owned();
                }
                last = text.to_owned();
            }
            if Instant::now() > deadline {
                panic!(
                    "{css}: {description}: not within {WAIT:?}; last text {last:?}\n{}",
                    self.console().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `script` (a function body) returns true in the page.
    pub(crate) async fn wait_until(&self, description: &str, script: &str, args: Value) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.execute(script, args.clone()).await == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{description}: not within {WAIT:?}\n{}",
                    self.console().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks the element matching `css` once it is shown, as a user would (the pointer, at
    /// the element's centre); tries again if the page replaced the element meanwhile.
    pub(crate) async fn click(&self, css: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let element = self.wait_for(css).await;
            let clicked = self
                .command(
                    reqwest::Method::POST,
                    &format!("/element/{}/click", element.0),
                    Some(json!({})),
                )
                .await;
            match clicked {
                Ok(_) => return,
                Err(error) if Instant::now() < deadline => {
                    println!("clicking {css} again: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("clicking {css}: {error}"),
            }
        }
    }

    /// Chooses the option with `value` in the `<select>` matching `css`, as a user would (a
    /// WebDriver click on the option selects it and fires `change`).
    pub(crate) async fn choose(&self, css: &str, value: &str) {
        self.wait_for(css).await;
        let option = self
            .find(&format!(r#"{css} option[value="{value}"]"#))
            .await
            .unwrap_or_else(|error| panic!("{css} has no option {value:?}: {error}"));
        self.command(
            reqwest::Method::POST,
            &format!("/element/{}/click", option.0),
            Some(json!({})),
        )
        .await
        .unwrap_or_else(|error| panic!("choosing {value:?} in {css}: {error}"));
    }

    /// Types `text` into the element matching `css`.
    pub(crate) async fn type_into(&self, css: &str, text: &str) {
        let element = self.wait_for(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{}/value", element.0),
            Some(json!({"text": text})),
        )
        .await
        .unwrap();
    }

    /// A PNG of the window.
    pub(crate) async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let data = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await
            .unwrap();
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap()
    }

    async fn cdp(&self, command: &str, params: Value) {
        self.command(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({"cmd": command, "params": params})),
        )
        .await
        .unwrap_or_else(|error| panic!("{command}: {error}"));
    }

    /// From the next page loaded on, records the method and path of every `fetch` the page
    /// makes, for [`Browser::requests`] (a script run before the page's own, through the
    /// Chrome DevTools Protocol).
    pub(crate) async fn record_requests(&self) {
        self.cdp(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": "window.__requests = []; const fetched = window.fetch; \
                window.fetch = function (input, init) { \
                  const url = new URL(input instanceof Request ? input.url : input, document.baseURI); \
                  window.__requests.push([(init && init.method) || 'GET', url.pathname]); \
                  return fetched.apply(this, arguments); };"}),
        )
        .await;
    }

    /// The `(method, path)` of every request recorded since the page loaded.
    pub(crate) async fn requests(&self) -> Vec<(String, String)> {
        let recorded = self
            .execute("return window.__requests || [];", json!([]))
            .await;
        serde_json::from_value(recorded).unwrap()
    }

    /// Makes the page see `prefers-color-scheme: dark` (Chrome DevTools Protocol, through
    /// chromedriver's `goog/cdp/execute`).
    pub(crate) async fn prefer_dark(&self) {
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
        )
        .await;
    }

    /// Undoes [`Browser::prefer_dark`].
    pub(crate) async fn prefer_light(&self) {
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": "light"}]}),
        )
        .await;
    }

    /// What the page logged to its console (errors included), for failure messages.
    pub(crate) async fn console(&self) -> String {
        match self
            .command(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({"type": "browser"})),
            )
            .await
        {
            Ok(Value::Array(entries)) if !entries.is_empty() => entries
                .iter()
                .map(|e| format!("console: {} {}", e["level"], e["message"]))
                .collect::<Vec<_>>()
                .join("\n"),
            Ok(_) => "console: (empty)".to_owned(),
            Err(error) => format!("console: unavailable ({error})"),
        }
    }

    /// Ends the session (Chromium exits); dropping the browser then stops chromedriver.
    pub(crate) async fn close(self) {
        let _ = self.command(reqwest::Method::DELETE, "", None).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}
