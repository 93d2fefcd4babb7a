//! Scale-out (issue 3, item 2): a queue partitioned over several shards in a real
//! three-primary Redis Cluster spreads its tasks over the nodes, loses none, and keeps FIFO
//! per partition key.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use floodway_core::{Broker, NewTask, QueueName, ReserveRequest, TaskFilter, limits};
use floodway_redis::{Options, RedisBroker};

use crate::server;

const SHARDS: u16 = 6;
const KEYS: u64 = 24;
const PER_KEY: u64 = 25;

#[tokio::test]
async fn a_partitioned_queue_spreads_over_cluster_nodes_and_keeps_fifo_per_key() {
    let cluster = server::shared_cluster();
    let prefix = server::fresh_prefix();
    let q = QueueName::new("wide").unwrap();
    let broker = RedisBroker::connect(
        &cluster.url(),
        Options {
            prefix: prefix.clone(),
            maintenance_interval: None,
            ..Options::default()
        }
        .shards(q.clone(), SHARDS),
    )
    .await
    .unwrap();

    // Tasks of each key in sequence order, keys interleaved, plus tasks without a key.
    let mut tasks = Vec::new();
    for seq in 0..PER_KEY {
        for key in 0..KEYS {
            tasks.push(
                NewTask::new("job", format!(r#"{{"key":{key},"seq":{seq}}}"#))
                    .partition_key(format!("customer-{key}")),
            );
        }
        tasks.push(NewTask::new("free", format!(r#"{{"seq":{seq}}}"#)));
    }
    let total = tasks.len() as u64;
    for chunk in tasks.chunks(limits::BATCH_SIZE_MAX) {
        broker.enqueue(&q, chunk.to_vec()).await.unwrap();
    }

    // The shards live on different nodes: count the task records each node holds.
    let mut per_node = BTreeMap::new();
    for node in &cluster.nodes {
        let mut held = 0;
        for shard in 0..SHARDS {
            let key = format!("{prefix}:{{wide#{shard}}}:t");
            held += node.cli(&["hlen", &key]).trim().parse::<u64>().unwrap_or(0);
        }
        per_node.insert(node.port, held);
    }
    eprintln!("tasks per cluster node: {per_node:?}");
    assert_eq!(
        per_node.values().sum::<u64>(),
        total,
        "every task is on some node"
    );
    assert!(
        per_node.values().filter(|held| **held > 0).count() >= 2,
        "the shards spread over more than one node: {per_node:?}"
    );

    let stats = &broker.stats(Some(&q)).await.unwrap()[0];
    assert_eq!((stats.counts.ready, stats.totals.enqueued), (total, total));
    let listed = broker
        .list(TaskFilter {
            queue: Some(q.clone()),
            limit: limits::LIST_LIMIT_MAX,
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert!(
        listed.windows(2).all(|w| w[0].id < w[1].id),
        "listed in id order across shards"
    );

    // Drain: never two tasks of one key at once, and each key's tasks in sequence order.
    let mut done_per_key: HashMap<String, Vec<u64>> = HashMap::new();
    let mut completed = 0;
    for _ in 0..10_000 {
        let held = broker
            .reserve(ReserveRequest::new(q.clone(), 40, Duration::from_secs(60)))
            .await
            .unwrap();
        if held.is_empty() {
            break;
        }
        let mut keys_held = HashSet::new();
        for r in &held {
            if let Some(key) = &r.task.partition_key {
                assert!(keys_held.insert(key.clone()), "two tasks of {key} at once");
                let body: serde_json::Value = serde_json::from_slice(&r.task.payload).unwrap();
                done_per_key
                    .entry(key.clone())
                    .or_default()
                    .push(body["seq"].as_u64().unwrap());
            }
        }
        let leases: Vec<_> = held.iter().map(|r| r.lease.as_ref()).collect();
        assert!(broker.ack(&leases).await.unwrap().iter().all(Result::is_ok));
        completed += held.len() as u64;
    }
    assert_eq!(completed, total, "none lost, none twice");
    assert_eq!(done_per_key.len() as u64, KEYS);
    for (key, seqs) in &done_per_key {
        assert_eq!(
            *seqs,
            (0..PER_KEY).collect::<Vec<_>>(),
            "{key} ran in order"
        );
    }
    let stats = &broker.stats(Some(&q)).await.unwrap()[0];
    assert_eq!((stats.length(), stats.totals.completed), (0, total));
}
