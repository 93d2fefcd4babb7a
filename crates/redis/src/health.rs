//! What the broker knows about the Redis it runs on: version, eviction policy, persistence
//! and replication of every primary, checked when connecting and on request
//! ([`crate::RedisBroker::health`]), with what each setting means for the tasks.

use std::fmt;

use redis::Value;

use crate::connection::{Connection, text};

/// One primary's settings that matter for floodway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeReport {
    /// The node (`host:port`, or `server` for a single server).
    pub node: String,
    /// `redis_version` from `INFO server`.
    pub version: String,
    /// `maxmemory-policy`; `None` if `CONFIG GET` is not allowed (an ACL, a managed service).
    pub maxmemory_policy: Option<String>,
    /// Whether the append-only file is on.
    pub appendonly: Option<bool>,
    /// `appendfsync`: `always`, `everysec` or `no`.
    pub appendfsync: Option<String>,
    /// `save`: the RDB snapshot schedule, empty when off.
    pub save: Option<String>,
    /// Replicas connected to this primary.
    pub replicas: Option<u32>,
    /// Whether the server has `WAITAOF` (Redis 7.2 and later).
    pub has_waitaof: bool,
}

/// How much of what Redis acknowledged survives a crash of Redis, per its settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// AOF with `appendfsync always`: every acknowledged change is on disk.
    AofAlways,
    /// AOF with `appendfsync everysec`: a crash can lose about the last second.
    AofEverySec,
    /// AOF with `appendfsync no`: the OS writes back when it likes (about 30 s on Linux).
    AofNo,
    /// RDB snapshots only: a crash loses everything since the last snapshot.
    SnapshotsOnly,
    /// Nothing: a restart loses every task (detected, reported unhealthy).
    None,
    /// Unknown: `CONFIG GET` was refused.
    Unknown,
}

impl Persistence {
    /// A short name: `aof-always`, `aof-everysec`, `aof-no`, `rdb`, `none` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Persistence::AofAlways => "aof-always",
            Persistence::AofEverySec => "aof-everysec",
            Persistence::AofNo => "aof-no",
            Persistence::SnapshotsOnly => "rdb",
            Persistence::None => "none",
            Persistence::Unknown => "unknown",
        }
    }
}

impl NodeReport {
    /// The node's persistence as floodway sees it.
    pub fn persistence(&self) -> Persistence {
        match (
            self.appendonly,
            self.appendfsync.as_deref(),
            self.save.as_deref(),
        ) {
            (Some(true), Some("always"), _) => Persistence::AofAlways,
            (Some(true), Some("everysec"), _) => Persistence::AofEverySec,
            (Some(true), Some("no"), _) => Persistence::AofNo,
            (Some(false), _, Some(save)) if !save.trim().is_empty() => Persistence::SnapshotsOnly,
            (Some(false), _, Some(_)) => Persistence::None,
            _ => Persistence::Unknown,
        }
    }
}

impl fmt::Display for Persistence {
    /// What the setting means for acknowledged tasks, in one sentence.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Persistence::AofAlways => {
                "AOF with appendfsync always: acknowledged changes survive a crash of Redis"
            }
            Persistence::AofEverySec => {
                "AOF with appendfsync everysec: a crash of Redis can lose about the last second of \
                 acknowledged changes"
            }
            Persistence::AofNo => {
                "AOF with appendfsync no: a crash of the machine can lose the changes the OS had not \
                 written back (about 30 s on Linux)"
            }
            Persistence::SnapshotsOnly => {
                "RDB snapshots only: a crash of Redis loses every change since the last snapshot"
            }
            Persistence::None => {
                "no persistence: a restart of Redis loses every task (floodway detects it and \
                 reports itself unhealthy)"
            }
            Persistence::Unknown => "unknown persistence: CONFIG GET was refused",
        })
    }
}

/// The broker's health: whether it can serve, and why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// True when the broker is connected, Redis answers, and floodway's data is there.
    pub healthy: bool,
    /// What is wrong (empty when healthy), and warnings about settings that risk tasks.
    pub problems: Vec<String>,
    /// Every primary's settings.
    pub nodes: Vec<NodeReport>,
}

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

/// The value of a `CONFIG GET` reply (a map or a flat array).
fn config_value(reply: &Value) -> Option<String> {
    match reply {
        Value::Array(items) => items.get(1).and_then(text),
        Value::Map(pairs) => pairs.first().and_then(|(_, value)| text(value)),
        _ => None,
    }
}

async fn per_node(conn: &Connection, args: &[&str]) -> Vec<(String, Option<Value>)> {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    match conn.on_primaries(cmd).await {
        Ok(replies) => replies
            .into_iter()
            .map(|(node, reply)| {
                let ok = !matches!(reply, Value::ServerError(_));
                (node, ok.then_some(reply))
            })
            .collect(),
        Err(err) => {
            tracing::debug!(%err, command = args[0], "asking every primary failed");
            Vec::new()
        }
    }
}

/// Asks every primary for its settings.
pub(crate) async fn inspect(conn: &Connection) -> Result<Vec<NodeReport>, redis::RedisError> {
    let infos = conn
        .on_primaries({
            let mut cmd = redis::cmd("INFO");
            cmd.arg("server").arg("replication");
            cmd
        })
        .await?;
    let mut nodes: Vec<NodeReport> = infos
        .into_iter()
        .map(|(node, reply)| {
            let info = text(&reply).unwrap_or_default();
            NodeReport {
                node,
                version: field(&info, "redis_version").unwrap_or("?").to_owned(),
                maxmemory_policy: None,
                appendonly: None,
                appendfsync: None,
                save: None,
                replicas: field(&info, "connected_slaves").and_then(|n| n.parse().ok()),
                has_waitaof: false,
            }
        })
        .collect();
    for (setting, apply) in [
        ("maxmemory-policy", 0),
        ("appendonly", 1),
        ("appendfsync", 2),
        ("save", 3),
    ] {
        for (node, reply) in per_node(conn, &["CONFIG", "GET", setting]).await {
            let value = reply.as_ref().and_then(config_value);
            if let Some(report) = nodes.iter_mut().find(|n| n.node == node) {
                match apply {
                    0 => report.maxmemory_policy = value,
                    1 => report.appendonly = value.map(|v| v == "yes"),
                    2 => report.appendfsync = value,
                    _ => report.save = value,
                }
            }
        }
    }
    for (node, reply) in per_node(conn, &["COMMAND", "INFO", "WAITAOF"]).await {
        let has = matches!(&reply, Some(Value::Array(items)) if items.iter().any(|i| !matches!(i, Value::Nil)));
        if let Some(report) = nodes.iter_mut().find(|n| n.node == node) {
            report.has_waitaof = has;
        }
    }
    Ok(nodes)
}

/// True when `version` is at least 7.0.
pub(crate) fn version_supported(version: &str) -> bool {
    version
        .split('.')
        .next()
        .and_then(|major| major.parse::<u32>().ok())
        .is_some_and(|major| major >= 7)
}

/// Warnings about settings that risk tasks, one per node and setting.
pub(crate) fn warnings(nodes: &[NodeReport]) -> Vec<String> {
    let mut out = Vec::new();
    for node in nodes {
        match node.persistence() {
            Persistence::AofAlways => {}
            other => out.push(format!("{}: {other}", node.node)),
        }
        match node.maxmemory_policy.as_deref() {
            Some("noeviction") => {}
            Some(policy) => out.push(format!(
                "{}: maxmemory-policy {policy} lets Redis delete tasks under memory pressure",
                node.node
            )),
            None => out.push(format!(
                "{}: maxmemory-policy unknown (CONFIG GET refused); it must be noeviction",
                node.node
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(appendonly: Option<bool>, fsync: Option<&str>, save: Option<&str>) -> NodeReport {
        NodeReport {
            node: "n".into(),
            version: "7.0.15".into(),
            maxmemory_policy: Some("noeviction".into()),
            appendonly,
            appendfsync: fsync.map(str::to_owned),
            save: save.map(str::to_owned),
            replicas: Some(0),
            has_waitaof: false,
        }
    }

    #[test]
    fn persistence_follows_the_settings() {
        let cases = [
            (
                node(Some(true), Some("always"), Some("")),
                Persistence::AofAlways,
            ),
            (
                node(Some(true), Some("everysec"), Some("3600 1")),
                Persistence::AofEverySec,
            ),
            (
                node(Some(false), Some("everysec"), Some("3600 1")),
                Persistence::SnapshotsOnly,
            ),
            (
                node(Some(false), Some("everysec"), Some("")),
                Persistence::None,
            ),
            (node(None, None, None), Persistence::Unknown),
        ];
        for (report, expected) in cases {
            assert_eq!(report.persistence(), expected, "{report:?}");
        }
        assert!(warnings(&[node(Some(true), Some("always"), None)]).is_empty());
        assert_eq!(warnings(&[node(Some(false), None, Some(""))]).len(), 1);
    }

    #[test]
    fn versions_from_seven_on_are_supported() {
        assert!(version_supported("7.0.15"));
        assert!(version_supported("8.2.1"));
        assert!(!version_supported("6.2.14"));
        assert!(!version_supported("?"));
    }
}
