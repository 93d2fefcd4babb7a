//! The deployment files (Dockerfile, compose.yaml, deploy/) checked against the code they
//! deploy, since no container engine or cluster runs here: every file parses; every flag and
//! `FLOODWAY_*` variable they use is one the real binary accepts; the probes ask routes the
//! server and the worker serve, on the ports they listen on; the ConfigMap and the Secret, filled
//! in as docs/deploy.md says, start a real server whose tokens fit the workers and Prometheus;
//! every metric the autoscalers query is declared in the code; and the time a supervisor gives a
//! process to stop covers its shutdown.
//!
//! Metric names are read from the string literals of `crates/metrics`, where every metric
//! floodway exports is declared.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use floodway_server::auth::{generate_token, hash_token};
use yaml_rust2::{Yaml, YamlLoader};

use crate::serving::{Serving, terminate};
use crate::{BIN, Floodway};

/// What a worker needs beyond its grace period to stop: the reserve call in flight ends (at
/// most `POLL_WAIT_DEFAULT`), then the remaining tasks are released and every pending ack,
/// fail and release is sent.
const WORKER_STOP_MARGIN: Duration = Duration::from_secs(15);

/// What a server needs beyond its preStop sleep and its own shutdown grace.
const SERVER_STOP_MARGIN: Duration = Duration::from_secs(5);

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every YAML document in `path`.
fn yaml(path: &Path) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

/// Every `.yaml`/`.yml` file under `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Every Kubernetes object (a document with a `kind`) under deploy/kubernetes, with its file.
fn objects() -> Vec<(PathBuf, Yaml)> {
    yaml_files(&root().join("deploy/kubernetes"))
        .into_iter()
        .flat_map(|file| {
            yaml(&file)
                .into_iter()
                .filter(|doc| doc["kind"].as_str().is_some())
                .map(move |doc| (file.clone(), doc))
        })
        .collect()
}

fn text(yaml: &Yaml) -> String {
    match yaml {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(n) => n.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("expected a scalar, found {other:?}"),
    }
}

fn list(yaml: &Yaml) -> Vec<Yaml> {
    yaml.as_vec().cloned().unwrap_or_default()
}

fn strings(yaml: &Yaml) -> Vec<String> {
    list(yaml).iter().map(text).collect()
}

/// Every string scalar in `yaml`, at any depth.
fn all_strings(yaml: &Yaml, out: &mut Vec<String>) {
    match yaml {
        Yaml::String(s) => out.push(s.clone()),
        Yaml::Array(items) => items.iter().for_each(|i| all_strings(i, out)),
        Yaml::Hash(map) => map.iter().for_each(|(k, v)| {
            all_strings(k, out);
            all_strings(v, out);
        }),
        _ => {}
    }
}

fn duration(text: &str) -> Duration {
    floodway_core::duration::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// The value after `flag` in `args`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .map(|i| args[i + 1].as_str())
}

/// The port of an address such as `0.0.0.0:9464`.
fn port_of(address: &str) -> u16 {
    address.rsplit(':').next().unwrap().parse().unwrap()
}

/// One container of a Deployment, as the checks need it.
#[derive(Debug)]
struct Container {
    deployment: String,
    /// The floodway subcommand: `serve` or `worker` (the image's entrypoint is `floodway`).
    args: Vec<String>,
    /// Literal values, and `secret:KEY` / `field:PATH` for references.
    env: BTreeMap<String, String>,
    ports: BTreeMap<String, u16>,
    /// (probe, path, port number).
    probes: Vec<(String, String, u16)>,
    termination_grace: Duration,
    pre_stop_sleep: Duration,
    /// mountPath → ConfigMap name.
    config_mounts: BTreeMap<String, String>,
    run_as_user: Option<i64>,
}

fn containers() -> Vec<Container> {
    let mut found = Vec::new();
    for (file, doc) in objects() {
        if doc["kind"].as_str() != Some("Deployment") {
            continue;
        }
        let pod = &doc["spec"]["template"]["spec"];
        let config_volumes: BTreeMap<String, String> = list(&pod["volumes"])
            .iter()
            .filter_map(|v| {
                v["configMap"]["name"]
                    .as_str()
                    .map(|c| (text(&v["name"]), c.to_owned()))
            })
            .collect();
        for c in list(&pod["containers"]) {
            assert!(
                c["command"].is_badvalue(),
                "{}: keep the image's entrypoint (floodway); give args",
                file.display()
            );
            let env = list(&c["env"])
                .iter()
                .map(|e| {
                    let value = if let Some(v) = e["value"].as_str() {
                        v.to_owned()
                    } else if let Some(key) = e["valueFrom"]["secretKeyRef"]["key"].as_str() {
                        format!("secret:{key}")
                    } else {
                        format!("field:{}", text(&e["valueFrom"]["fieldRef"]["fieldPath"]))
                    };
                    (text(&e["name"]), value)
                })
                .collect();
            let ports: BTreeMap<String, u16> = list(&c["ports"])
                .iter()
                .map(|p| {
                    (
                        text(&p["name"]),
                        p["containerPort"].as_i64().unwrap() as u16,
                    )
                })
                .collect();
            let probes = ["startupProbe", "livenessProbe", "readinessProbe"]
                .iter()
                .filter(|probe| !c[**probe].is_badvalue())
                .map(|probe| {
                    let get = &c[*probe]["httpGet"];
                    let port = match &get["port"] {
                        Yaml::Integer(n) => *n as u16,
                        named => *ports
                            .get(&text(named))
                            .unwrap_or_else(|| panic!("{probe} names an undeclared port")),
                    };
                    (probe.to_string(), text(&get["path"]), port)
                })
                .collect();
            let pre_stop = strings(&c["lifecycle"]["preStop"]["exec"]["command"]);
            let pre_stop_sleep = match pre_stop.as_slice() {
                [] => Duration::ZERO,
                [sleep, seconds] if sleep == "sleep" => {
                    Duration::from_secs(seconds.parse().unwrap())
                }
                other => panic!("a preStop other than `sleep N`: {other:?}"),
            };
            let config_mounts = list(&c["volumeMounts"])
                .iter()
                .filter_map(|m| {
                    config_volumes
                        .get(&text(&m["name"]))
                        .map(|cm| (text(&m["mountPath"]), cm.clone()))
                })
                .collect();
            found.push(Container {
                deployment: text(&doc["metadata"]["name"]),
                args: strings(&c["args"]),
                env,
                ports,
                probes,
                termination_grace: Duration::from_secs(
                    pod["terminationGracePeriodSeconds"].as_i64().unwrap_or(30) as u64,
                ),
                pre_stop_sleep,
                config_mounts,
                run_as_user: pod["securityContext"]["runAsUser"].as_i64(),
            });
        }
    }
    found
}

fn container(subcommand: &str) -> Container {
    containers()
        .into_iter()
        .find(|c| c.args.first().map(String::as_str) == Some(subcommand))
        .unwrap_or_else(|| panic!("no Deployment runs `floodway {subcommand}`"))
}

/// The compose file's services.
fn compose() -> Yaml {
    yaml(&root().join("compose.yaml")).remove(0)
}

fn compose_command(service: &str) -> Vec<String> {
    strings(&compose()["services"][service]["command"])
}

fn compose_env(service: &str) -> BTreeMap<String, String> {
    compose()["services"][service]["environment"]
        .as_hash()
        .map(|env| env.iter().map(|(k, v)| (text(k), text(v))).collect())
        .unwrap_or_default()
}

/// The Dockerfile's instructions (continuation lines joined), as (INSTRUCTION, rest).
fn dockerfile() -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in read(&root().join("Dockerfile")).lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => current.push_str(start),
            None => {
                current.push_str(line);
                let (instruction, rest) = current.split_once(' ').unwrap_or((&current, ""));
                instructions.push((instruction.to_uppercase(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    instructions
}

/// The arguments of the last Dockerfile instruction `name` in JSON (exec) form.
fn dockerfile_exec_form(name: &str) -> Vec<String> {
    let (_, rest) = dockerfile()
        .into_iter()
        .rfind(|(i, _)| i == name)
        .unwrap_or_else(|| panic!("no {name} in the Dockerfile"));
    serde_json::from_str(&rest).unwrap_or_else(|e| panic!("{name} {rest}: {e}"))
}

/// The Dockerfile's `ENV NAME=value` settings.
fn dockerfile_env() -> BTreeMap<String, String> {
    dockerfile()
        .into_iter()
        .filter(|(i, _)| i == "ENV")
        .map(|(_, rest)| {
            let (name, value) = rest.split_once('=').expect("ENV NAME=value");
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

/// `floodway <args> --help`: succeeds only if every flag before `--help`, and its value,
/// is accepted.
fn accepts(args: &[String]) -> Result<String, String> {
    let output = Command::new(BIN)
        .args(args)
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn help(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    accepts(&args).unwrap()
}

/// The variables `floodway` reads, as its `--help` names them (`[env: NAME`).
fn documented_variables() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for args in [&["serve"][..], &["worker"]] {
        let text = help(args);
        for part in text.split("[env: ").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            names.insert(name);
        }
    }
    names
}

/// True when `FLOODWAY_SERVE_<PATH>` names a setting of the server's configuration.
fn is_server_setting(variable: &str) -> bool {
    let Some(path) = variable.strip_prefix(floodway_server::config::ENV_PREFIX) else {
        return false;
    };
    let mut node = serde_json::to_value(floodway_server::ServerConfig::default()).unwrap();
    for key in path.to_lowercase().split("__") {
        match node.get(key) {
            Some(next) => node = next.clone(),
            None => return false,
        }
    }
    true
}

#[test]
fn every_deployment_file_parses_and_the_kustomizations_list_existing_files() {
    let mut files = yaml_files(&root().join("deploy"));
    files.push(root().join("compose.yaml"));
    for file in &files {
        assert!(!yaml(file).is_empty(), "{} is empty", file.display());
    }
    let kustomizations: Vec<&PathBuf> = files
        .iter()
        .filter(|f| f.file_name().unwrap() == "kustomization.yaml")
        .collect();
    assert!(kustomizations.len() >= 3, "base and two overlays");
    for file in kustomizations {
        let doc = yaml(file).remove(0);
        let dir = file.parent().unwrap();
        let mut referenced = strings(&doc["resources"]);
        for generator in list(&doc["configMapGenerator"]) {
            referenced.extend(strings(&generator["files"]));
        }
        for name in referenced {
            assert!(
                dir.join(&name).exists(),
                "{} lists {name}, which does not exist",
                file.display()
            );
        }
    }
    // The objects the overlays and the docs rely on are all there.
    let kinds: BTreeSet<String> = objects().iter().map(|(_, o)| text(&o["kind"])).collect();
    for kind in [
        "Deployment",
        "Service",
        "Secret",
        "PodDisruptionBudget",
        "ScaledObject",
        "HorizontalPodAutoscaler",
        "PodMonitor",
    ] {
        assert!(kinds.contains(kind), "no {kind} under deploy/kubernetes");
    }
}

#[test]
fn every_flag_and_variable_in_the_deployment_files_is_one_floodway_accepts() {
    let mut commands: Vec<(String, Vec<String>)> = containers()
        .into_iter()
        .map(|c| (format!("Deployment {}", c.deployment), c.args))
        .collect();
    for service in ["server", "worker"] {
        commands.push((
            format!("compose service {service}"),
            compose_command(service),
        ));
    }
    commands.push(("Dockerfile CMD".into(), dockerfile_exec_form("CMD")));
    assert_eq!(dockerfile_exec_form("ENTRYPOINT"), ["floodway"]);
    for (place, args) in commands {
        if let Err(error) = accepts(&args) {
            panic!("{place}: `floodway {}` is refused: {error}", args.join(" "));
        }
    }

    // Variables: those the binary documents, the server's settings, and the image's own.
    let documented = documented_variables();
    let image = dockerfile_env();
    let mut used: Vec<(String, String)> = Vec::new();
    for c in containers() {
        used.extend(
            c.env
                .keys()
                .map(|k| (format!("Deployment {}", c.deployment), k.clone())),
        );
    }
    for service in ["server", "worker"] {
        used.extend(
            compose_env(service)
                .into_keys()
                .map(|k| (format!("compose service {service}"), k)),
        );
    }
    used.extend(image.keys().map(|k| ("Dockerfile".to_owned(), k.clone())));
    for (place, name) in used {
        let known = documented.contains(&name)
            || is_server_setting(&name)
            || (name == "FLOODWAY_HEALTHCHECK_URL" && image.contains_key(&name));
        assert!(known, "{place} sets {name}, which floodway does not read");
    }
    assert!(documented.contains("FLOODWAY_WORKER_GRACE_PERIOD"));
    assert!(is_server_setting("FLOODWAY_SERVE_LIMITS__REQUEST_TIMEOUT"));
    assert!(!is_server_setting("FLOODWAY_SERVE_LISTNE"));
}

#[test]
fn stopping_takes_less_than_the_supervisor_allows() {
    // Worker: its grace period, from its flags (or environment, or the default).
    let worker = container("worker");
    let grace = flag_value(&worker.args, "--grace-period")
        .map(duration)
        .or_else(|| {
            worker
                .env
                .get("FLOODWAY_WORKER_GRACE_PERIOD")
                .map(|g| duration(g))
        })
        .unwrap_or(floodway_worker::limits::GRACE_PERIOD_DEFAULT);
    assert!(WORKER_STOP_MARGIN > floodway_worker::limits::POLL_WAIT_DEFAULT * 2);
    assert!(
        worker.termination_grace >= grace + WORKER_STOP_MARGIN,
        "worker: terminationGracePeriodSeconds {:?} < grace period {grace:?} + {WORKER_STOP_MARGIN:?}",
        worker.termination_grace
    );
    let compose_grace = duration(flag_value(&compose_command("worker"), "--grace-period").unwrap());
    let compose_stop = duration(&text(&compose()["services"]["worker"]["stop_grace_period"]));
    assert!(
        compose_stop >= compose_grace + WORKER_STOP_MARGIN,
        "compose worker: stop_grace_period {compose_stop:?} < {compose_grace:?} + {WORKER_STOP_MARGIN:?}"
    );

    // Server: the preStop sleep, then its own shutdown grace.
    let server = container("serve");
    let needed =
        server.pre_stop_sleep + floodway_server::limits::SHUTDOWN_GRACE + SERVER_STOP_MARGIN;
    assert!(
        server.termination_grace >= needed,
        "server: terminationGracePeriodSeconds {:?} < {needed:?}",
        server.termination_grace
    );
    let compose_stop = duration(&text(&compose()["services"]["server"]["stop_grace_period"]));
    assert!(compose_stop >= floodway_server::limits::SHUTDOWN_GRACE + SERVER_STOP_MARGIN);
    assert_eq!(
        dockerfile()
            .iter()
            .rfind(|(i, _)| i == "STOPSIGNAL")
            .map(|(_, s)| s.as_str()),
        Some("SIGTERM")
    );
}

/// Names of metrics the code declares (string literals of `crates/metrics`), and where they
/// were read.
fn declared_metrics() -> (BTreeSet<String>, PathBuf) {
    let source = root().join("crates/metrics/src");
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(&source).unwrap() {
        let file = entry.unwrap().path();
        if file.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        for literal in read(&file).split('"').skip(1).step_by(2) {
            if literal.starts_with("floodway_")
                && literal
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                names.insert(literal.to_owned());
            }
        }
    }
    (names, source)
}

/// The `floodway_*` names in `text`.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("floodway_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// The metric names the autoscalers and the adapter rules query, with their files.
fn queried_metrics() -> BTreeSet<(PathBuf, String)> {
    let mut queried = BTreeSet::new();
    let overlays = root().join("deploy/kubernetes/overlays");
    for file in yaml_files(&overlays) {
        let mut texts = Vec::new();
        for doc in yaml(&file) {
            all_strings(&doc, &mut texts);
        }
        for name in texts.iter().flat_map(|t| metric_names_in(t)) {
            queried.insert((file.clone(), name));
        }
    }
    queried
}

#[test]
fn autoscalers_query_only_metrics_the_code_declares() {
    let (declared, source) = declared_metrics();
    assert!(declared.contains("floodway_queue_depth"), "{declared:?}");
    let queried = queried_metrics();
    let names: BTreeSet<&str> = queried.iter().map(|(_, n)| n.as_str()).collect();
    assert!(
        names.contains("floodway_queue_backlog_seconds") && names.contains("floodway_queue_depth"),
        "the autoscalers follow backlog seconds, with depth as the alternative: {names:?}"
    );
    for (file, name) in &queried {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|b| declared.contains(*b))
            .unwrap_or(name);
        if declared.contains(base) {
            continue;
        }
        panic!(
            "{} queries {name}, which {} does not declare",
            file.display(),
            source.display()
        );
    }
}

#[test]
fn the_image_runs_as_the_manifests_user_and_exposes_their_ports() {
    let instructions = dockerfile();
    let user = instructions
        .iter()
        .rfind(|(i, _)| i == "USER")
        .map(|(_, u)| u.clone())
        .expect("a USER");
    let uid: i64 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric USER");
    assert_ne!(uid, 0, "the image runs as root");
    for c in containers() {
        assert_eq!(c.run_as_user, Some(uid), "{}: runAsUser", c.deployment);
    }
    let exposed: BTreeSet<u16> = instructions
        .iter()
        .filter(|(i, _)| i == "EXPOSE")
        .flat_map(|(_, ports)| ports.split_whitespace().map(|p| p.parse().unwrap()))
        .collect::<Vec<u16>>()
        .into_iter()
        .collect();
    let env = dockerfile_env();
    assert!(exposed.contains(&port_of(&env["FLOODWAY_SERVE_LISTEN"])));
    for c in containers() {
        for port in c.ports.values() {
            assert!(exposed.contains(port), "{} uses port {port}", c.deployment);
        }
    }
    let volume: Vec<String> = dockerfile_exec_form("VOLUME");
    assert_eq!(
        volume,
        [env["FLOODWAY_DATA"].clone()],
        "the data directory is the volume"
    );
    assert!(instructions.iter().any(|(i, _)| i == "HEALTHCHECK"));
    assert!(env["FLOODWAY_HEALTHCHECK_URL"].ends_with(&format!(
        ":{}/healthz",
        port_of(&env["FLOODWAY_SERVE_LISTEN"])
    )));
    // The builder and the runtime are on the same Debian release (glibc).
    let from: Vec<&String> = instructions
        .iter()
        .filter(|(i, _)| i == "FROM")
        .map(|(_, f)| f)
        .collect();
    assert!(from.len() >= 3, "a multi-stage build");
    assert!(from[0].starts_with("rust:${RUST_VERSION}-${DEBIAN_RELEASE}"));
    assert!(
        from.last()
            .unwrap()
            .starts_with("debian:${DEBIAN_RELEASE}-slim")
    );
}

#[test]
fn compose_runs_redis_as_a_queue_and_wires_the_ports_together() {
    let redis = compose_command("redis").join(" ");
    for setting in [
        "--appendonly yes",
        "--appendfsync always",
        "--maxmemory-policy noeviction",
    ] {
        assert!(
            redis.contains(setting),
            "redis: {setting} missing in {redis}"
        );
    }
    let server = compose()["services"]["server"].clone();
    let listen = compose_env("server")
        .get("FLOODWAY_SERVE_LISTEN")
        .cloned()
        .unwrap_or_else(|| dockerfile_env()["FLOODWAY_SERVE_LISTEN"].clone());
    let published = strings(&server["ports"]);
    assert!(
        published
            .iter()
            .all(|p| p.ends_with(&format!(":{}", port_of(&listen)))),
        "{published:?}"
    );
    assert!(
        published.iter().all(|p| p.starts_with("127.0.0.1:")),
        "an --insecure server is published on loopback only"
    );
    let worker_port = port_of(flag_value(&compose_command("worker"), "--listen").unwrap());
    assert_eq!(
        compose_env("worker")["FLOODWAY_HEALTHCHECK_URL"],
        format!("http://127.0.0.1:{worker_port}/healthz")
    );
    let server_command = compose_command("server");
    let broker = flag_value(&server_command, "--broker").unwrap();
    assert!(broker.starts_with("redis://redis:"), "{broker}");
    assert!(compose_env("worker")["FLOODWAY_SERVER"].ends_with(&format!(":{}", port_of(&listen))));

    // Prometheus scrapes the routes and ports the server and the worker serve.
    let prometheus = yaml(&root().join("deploy/prometheus/prometheus.yml")).remove(0);
    let routes = server_routes();
    for job in list(&prometheus["scrape_configs"]) {
        let path = job["metrics_path"].as_str().unwrap_or("/metrics");
        assert!(routes.contains(path), "{path} is not a server route");
        for target in list(&job["static_configs"])
            .iter()
            .flat_map(|s| strings(&s["targets"]))
        {
            assert_eq!(target, format!("server:{}", port_of(&listen)));
        }
        for sd in list(&job["dns_sd_configs"]) {
            assert_eq!(strings(&sd["names"]), ["worker"]);
            assert_eq!(sd["port"].as_i64(), Some(i64::from(worker_port)));
        }
    }
}

/// The paths the server routes, from its OpenAPI document (built from the same handlers).
fn server_routes() -> BTreeSet<String> {
    floodway_server::openapi()
        .paths
        .paths
        .keys()
        .cloned()
        .collect()
}

/// The Secret example with every `REPLACE_WITH_<NAME>_TOKEN`/`_HASH` filled in with a new
/// token and its hash, as docs/deploy.md says to do with `floodway token`; and the tokens by
/// `<NAME>`.
fn filled_secret() -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let secret = yaml(&root().join("deploy/kubernetes/secret.example.yaml")).remove(0);
    let mut values: BTreeMap<String, String> = secret["stringData"]
        .as_hash()
        .unwrap()
        .iter()
        .map(|(k, v)| (text(k), text(v)))
        .collect();
    let mut tokens: BTreeMap<String, String> = BTreeMap::new();
    for value in values.values_mut() {
        while let Some(at) = value.find("REPLACE_WITH_") {
            let placeholder: String = value[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect();
            let (name, what) = placeholder["REPLACE_WITH_".len()..]
                .rsplit_once('_')
                .unwrap();
            let token = tokens
                .entry(name.to_owned())
                .or_insert_with(|| generate_token().unwrap())
                .clone();
            let filled = match what {
                "TOKEN" => token,
                "HASH" => hash_token(&token),
                // The Redis password: the test serves the embedded broker instead.
                _ => "unused".to_owned(),
            };
            value.replace_range(at..at + placeholder.len(), &filled);
        }
    }
    (values, tokens)
}

/// A request over a fresh connection; the status code and body.
fn http(url: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let address = url.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n{auth}\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}

/// A child process killed when the test ends early.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn the_manifests_start_a_server_and_a_worker_that_answer_their_probes() {
    let floodway = Floodway::new();
    let server = container("serve");
    let routes = server_routes();

    // The server: its args with the ConfigMap's file where it is mounted, the filled-in
    // Secret's tokens, and the embedded broker in place of Redis; on a free loopback port.
    let mut args: Vec<String> = server.args[1..].to_vec();
    let config = flag_value(&server.args, "--config").expect("the server reads --config");
    let (mount, config_map) = server
        .config_mounts
        .iter()
        .find(|(mount, _)| config.starts_with(mount.as_str()))
        .expect("--config is inside a mounted ConfigMap");
    assert_eq!(config_map, "floodway-config");
    let file = root().join("deploy/kubernetes/base").join(
        config
            .strip_prefix(mount.as_str())
            .unwrap()
            .trim_start_matches('/'),
    );
    let i = args.iter().position(|a| a == "--config").unwrap();
    args[i + 1] = file.to_str().unwrap().to_owned();
    let (secret, tokens) = filled_secret();
    let secret_env = |c: &Container| -> Vec<(String, String)> {
        c.env
            .iter()
            .filter_map(|(name, value)| {
                let key = value.strip_prefix("secret:")?;
                let value = secret
                    .get(key)
                    .unwrap_or_else(|| panic!("{}: the Secret has no key {key}", c.deployment));
                Some((name.clone(), value.clone()))
            })
            .collect()
    };
    let mut env = secret_env(&server);
    env.retain(|(name, _)| name != "FLOODWAY_BROKER");
    let listen = floodway_server::ServerConfig::load(
        Some(&file),
        &floodway_server::Overrides {
            // The file alone has no tokens; they come from the Secret.
            insecure: true,
            ..Default::default()
        },
    )
    .expect("the ConfigMap's configuration loads")
    .listen;
    assert_eq!(listen.port(), server.ports["http"], "the server's port");
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let serving = Serving::start(&floodway, &args_ref, &env_ref);

    for (probe, path, port) in &server.probes {
        assert_eq!(*port, server.ports["http"], "{probe} asks another port");
        assert!(
            routes.contains(path),
            "{probe}: {path} is not a server route"
        );
        assert_eq!(
            http(&serving.url, "GET", path, None, "").0,
            200,
            "{probe} {path}"
        );
    }

    // The tokens fit: producers may enqueue, the workers may reserve from their queues,
    // Prometheus may scrape.
    let worker = container("worker");
    let worker_token = &secret[worker.env["FLOODWAY_TOKEN"]
        .strip_prefix("secret:")
        .unwrap()];
    let queues = worker
        .env
        .get("FLOODWAY_WORKER_QUEUES")
        .cloned()
        .or_else(|| flag_value(&worker.args, "--queue").map(str::to_owned))
        .expect("the worker's queues");
    for queue in queues.split(',') {
        let queue = queue.split('=').next().unwrap();
        let (status, body) = http(
            &serving.url,
            "POST",
            &format!("/v1/queues/{queue}/tasks"),
            Some(&tokens["PRODUCERS"]),
            r#"{"kind": "deploy-test", "payload": {}}"#,
        );
        assert_eq!(status, 201, "the producers' token may not enqueue: {body}");
        let (status, body) = http(
            &serving.url,
            "POST",
            &format!("/v1/queues/{queue}/reserve"),
            Some(worker_token),
            r#"{"max": 1, "wait": "0s"}"#,
        );
        assert_eq!(
            status, 200,
            "the worker token may not reserve from {queue}: {body}"
        );
    }
    let podmonitor = objects()
        .into_iter()
        .find(|(_, o)| {
            o["kind"].as_str() == Some("PodMonitor")
                && o["metadata"]["name"].as_str() == Some("floodway-server")
        })
        .expect("a PodMonitor for the servers")
        .1;
    let endpoint = &podmonitor["spec"]["podMetricsEndpoints"][0];
    let metrics_path = text(&endpoint["path"]);
    assert!(routes.contains(&metrics_path));
    assert!(server.ports.contains_key(&text(&endpoint["port"])));
    let metrics_token = &secret[&text(&endpoint["authorization"]["credentials"]["key"])];
    let (status, metrics) = http(&serving.url, "GET", &metrics_path, Some(metrics_token), "");
    assert_eq!(status, 200, "Prometheus' token may not scrape: {metrics}");
    for (file, name) in queried_metrics() {
        // The queues the test enqueued into exist now, so their series are there.
        if !metrics.contains(&format!("{name}{{")) && !metrics.contains(&format!("# TYPE {name} "))
        {
            panic!(
                "{} queries {name}, which /metrics does not serve",
                file.display()
            );
        }
    }

    // The worker: its args and environment, pointed at this server.
    let mut args: Vec<String> = worker.args.clone();
    let probe_url = if let Some(i) = args.iter().position(|a| a == "--listen") {
        assert_eq!(
            port_of(&args[i + 1]),
            worker.ports["metrics"],
            "--listen and the metrics port"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        args[i + 1] = format!("127.0.0.1:{port}");
        format!("http://127.0.0.1:{port}")
    } else {
        panic!("the worker Deployment has no --listen: its probes and metrics port need it");
    };
    let mut command = floodway.command(&args.iter().map(String::as_str).collect::<Vec<_>>());
    for (name, value) in &worker.env {
        if value.starts_with("secret:") {
            continue;
        }
        let value = match name.as_str() {
            "FLOODWAY_SERVER" => serving.url.clone(),
            _ if value.starts_with("field:") => "floodway-worker-test".to_owned(),
            _ => value.clone(),
        };
        command.env(name, value);
    }
    for (name, value) in secret_env(&worker) {
        command.env(name, value);
    }
    let mut child = Running(
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut logs = BufReader::new(child.0.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if logs.read_line(&mut line).unwrap() == 0 {
            panic!("the worker stopped before it started: {seen}");
        }
        seen.push_str(&line);
        if line.contains("worker started") {
            break;
        }
    }
    // The worker binds its --listen address before it logs "worker started", and the server
    // it asks for /readyz is up: every probe answers at once.
    for (probe, path, port) in &worker.probes {
        assert_eq!(*port, worker.ports["metrics"], "{probe} asks another port");
        assert_eq!(
            http(&probe_url, "GET", path, None, "").0,
            200,
            "the worker's {probe} {path} did not answer 200"
        );
    }
    terminate(&child.0);
    let status = child.0.wait().unwrap();
    let mut rest = String::new();
    let _ = logs.read_to_string(&mut rest);
    assert!(
        status.success(),
        "the worker's shutdown: {status}: {seen}{rest}"
    );
    assert!(serving.stop().success());
}

#[test]
fn the_secret_example_as_shipped_is_refused() {
    // Placeholders, not working credentials: a server given them does not start.
    let floodway = Floodway::new();
    let secret = yaml(&root().join("deploy/kubernetes/secret.example.yaml")).remove(0);
    let tokens = text(&secret["stringData"]["serve-tokens"]);
    let output = floodway
        .command(&["serve", "--listen", "127.0.0.1:0"])
        .env("FLOODWAY_SERVE_TOKENS", &tokens)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tokens[0].hash"), "{stderr}");
}

#[test]
fn a_worker_configured_only_by_environment_works_tasks_without_handing_its_token_on() {
    // As a container runs it: no flags but --max-tasks (to end the test), everything else in
    // FLOODWAY_* variables; the command run per task must not see the worker's credentials.
    let floodway = Floodway::new();
    let token = generate_token().unwrap();
    let config = crate::serving::config_file(
        &floodway,
        "",
        &[("workers", &token, "\"consume\", \"produce\"")],
    );
    let serving = Serving::start(&floodway, &["--config", config.to_str().unwrap()], &[]);
    for n in 0..2 {
        let (status, body) = http(
            &serving.url,
            "POST",
            "/v1/queues/emails/tasks",
            Some(&token),
            &format!(r#"{{"kind": "send_email", "payload": {{"n": {n}}}}}"#),
        );
        assert_eq!(status, 201, "{body}");
    }
    let out = floodway.scratch("seen.txt");
    let script = format!(
        "echo \"$FLOODWAY_TASK_KIND token=${{FLOODWAY_TOKEN:-hidden}}\" >> {}",
        out.display()
    );
    let output = floodway
        .command(&["worker", "--max-tasks", "2"])
        .env("FLOODWAY_SERVER", &serving.url)
        .env("FLOODWAY_TOKEN", &token)
        .env("FLOODWAY_WORKER_QUEUES", "emails=2,other")
        .env("FLOODWAY_WORKER_KINDS", "send_email,other_kind")
        .env("FLOODWAY_WORKER_RUN", "exec")
        .env("FLOODWAY_WORKER_EXEC", &script)
        .env("FLOODWAY_WORKER_GRACE_PERIOD", "5s")
        .env("FLOODWAY_WORKER_NAME", "pod-7")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(read(&out), "send_email token=hidden\n".repeat(2));
    assert!(serving.stop().success());
}
