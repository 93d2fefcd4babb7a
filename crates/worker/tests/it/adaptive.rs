//! Adaptive concurrency: a kind's limit falls when its downstream reports overload or its
//! attempts time out, rises slowly with successes, stays within its bounds, and gates how many
//! tasks of the kind run, without holding handler slots or leases it cannot use.

use std::sync::Arc;
use std::time::Duration;

use floodway_core::{NewTask, TaskState};
use floodway_worker::{AimdConfig, Outcome, TaskContext, WorkerStats};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::support::{Harness, QUEUE, T0, recv, signals, start};

#[derive(Debug, Serialize, Deserialize)]
enum Answer {
    Ok,
    Overloaded,
    Hang,
}

fn call(answer: Answer) -> NewTask {
    NewTask::json("call", &answer).unwrap()
}

fn limit(stats: &WorkerStats) -> Option<u32> {
    stats.kind("call").unwrap().limit
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_cuts_the_kind_limit_and_successes_raise_it_slowly_within_bounds() {
    let h = Harness::new();
    let retry_after = Duration::from_secs(7);
    let worker = h
        .builder()
        // One at a time, so each outcome lands before the next task starts.
        .queue(QUEUE, 1)
        .handler("call", move |_: TaskContext, answer: Answer| async move {
            match answer {
                Answer::Ok => Outcome::Complete,
                Answer::Overloaded => Outcome::overloaded_for(retry_after, "HTTP 429"),
                Answer::Hang => std::future::pending().await,
            }
        })
        .kind_timeout("call", Duration::from_millis(300))
        .adaptive(
            "call",
            AimdConfig {
                min: 2,
                max: 6,
                initial: 6,
                decrease_factor: 0.5,
                // Every signal cuts, so the test need not move time.
                cooldown: Duration::ZERO,
            },
        )
        .build()
        .unwrap();
    let running = start(worker);
    assert_eq!(limit(&running.handle.stats()), Some(6));

    // Three overloads: 6 -> 3 -> 2, and the floor holds at 2. Each is retried after the hint,
    // and none counts as an error.
    let overloaded = h
        .enqueue((0..3).map(|_| call(Answer::Overloaded)).collect())
        .await;
    let report = running.wait_for(|r| r.retried == 3).await;
    assert_eq!(report.overloaded, 3);
    assert_eq!(report.panicked + report.timed_out + report.dead_lettered, 0);
    let stats = running.handle.stats();
    let kind = stats.kind("call").unwrap();
    assert_eq!(kind.limit, Some(2));
    assert_eq!((kind.overloaded, kind.limit_cuts), (3, 3));
    for id in overloaded {
        let task = h.get(id).await;
        assert_eq!(task.state, TaskState::Retrying);
        assert_eq!(task.run_at, T0.saturating_add(retry_after));
        assert_eq!(task.last_error.as_deref(), Some("HTTP 429"));
    }

    // Successes raise it by 1/limit each: two leave it at 2 (2.9), the third makes it 3.
    for (completed, expected) in [(1, 2), (2, 2), (3, 3)] {
        h.enqueue_one(call(Answer::Ok)).await;
        running.wait_for(|r| r.completed == completed).await;
        assert_eq!(limit(&running.handle.stats()), Some(expected));
    }

    // Many more reach the ceiling and stay there.
    h.enqueue((0..40).map(|_| call(Answer::Ok)).collect()).await;
    running.wait_for(|r| r.completed == 43).await;
    assert_eq!(limit(&running.handle.stats()), Some(6));

    // A timeout is an overload signal too: 6 -> 3.
    h.enqueue_one(call(Answer::Hang)).await;
    let report = running.wait_for(|r| r.retried == 4).await;
    assert_eq!(report.timed_out, 1);
    let stats = running.handle.stats();
    let kind = stats.kind("call").unwrap();
    assert_eq!(kind.limit, Some(3));
    assert_eq!((kind.timed_out, kind.limit_cuts), (1, 4));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_held_back_by_its_kind_limit_leaves_its_handler_slot_to_other_kinds() {
    let h = Harness::new();
    let first = h.enqueue_one(NewTask::new("slow", "{}").priority(9)).await;
    let second = h.enqueue_one(NewTask::new("slow", "{}").priority(8)).await;
    let other = h.enqueue_one(NewTask::new("other", "{}").priority(1)).await;
    let gate = Arc::new(Semaphore::new(0));
    let (tx, mut rx) = signals();
    let (slow_tx, other_tx, handler_gate) = (tx.clone(), tx, gate.clone());
    let lease = Duration::from_secs(60);
    let worker = h
        .builder()
        // Two handler slots, and room to hold one task more than that.
        .queue(QUEUE, 2)
        .prefetch(QUEUE, 1)
        .lease_duration(lease)
        .handler("slow", move |ctx: TaskContext, _: serde_json::Value| {
            let (tx, gate) = (slow_tx.clone(), handler_gate.clone());
            async move {
                tx.send(ctx.id()).await.unwrap();
                gate.acquire().await.unwrap().forget();
            }
        })
        .handler("other", move |ctx: TaskContext, _: serde_json::Value| {
            let tx = other_tx.clone();
            async move {
                tx.send(ctx.id()).await.unwrap();
            }
        })
        .adaptive(
            "slow",
            AimdConfig {
                min: 1,
                max: 1,
                initial: 1,
                ..AimdConfig::default()
            },
        )
        .build()
        .unwrap();
    let running = start(worker);

    // One slow task runs; the other waits for its kind, not for a handler slot, so the other
    // kind's task runs in the second slot meanwhile. (Which slow task wins the kind's one slot
    // is up to the scheduler.)
    let started = [recv(&mut rx).await, recv(&mut rx).await];
    assert!(started.contains(&other), "{started:?}");
    let held = if started.contains(&first) {
        second
    } else {
        assert!(started.contains(&second), "{started:?}");
        first
    };
    let stats = running
        .wait_for_stats(|s| s.queue(QUEUE).unwrap().held_back == 1)
        .await;
    let slow = stats.kind("slow").unwrap();
    assert_eq!((slow.running, slow.waiting, slow.limit), (1, 1, Some(1)));
    assert_eq!(h.get(held).await.state, TaskState::Active);

    // The held-back task's lease is kept alive like a running one's.
    h.clock.advance(Duration::from_secs(50));
    running.handle.heartbeat_now().await.unwrap();
    assert_eq!(
        h.get(held).await.lease_expires_at,
        Some(T0.saturating_add(Duration::from_secs(50) + lease))
    );

    // It starts once the first finishes.
    gate.add_permits(1);
    assert_eq!(recv(&mut rx).await, held);
    gate.add_permits(1);
    let report = running.wait_for(|r| r.completed == 3).await;
    assert_eq!(report.lease_lost + report.refused, 0);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_kind_is_at_its_limit_the_rest_stay_in_the_broker() {
    let h = Harness::new();
    let count = 4;
    h.enqueue((0..count).map(|_| NewTask::new("slow", "{}")).collect())
        .await;
    let gate = Arc::new(Semaphore::new(0));
    let (tx, mut rx) = signals();
    let handler_gate = gate.clone();
    let worker = h
        .builder()
        .queue(QUEUE, 4)
        .handler("slow", move |ctx: TaskContext, _: serde_json::Value| {
            let (tx, gate) = (tx.clone(), handler_gate.clone());
            async move {
                tx.send(ctx.id()).await.unwrap();
                gate.acquire().await.unwrap().forget();
            }
        })
        .adaptive(
            "slow",
            AimdConfig {
                min: 1,
                max: 1,
                initial: 1,
                ..AimdConfig::default()
            },
        )
        .build()
        .unwrap();
    let running = start(worker);

    // Four handler slots, but the only kind may run one task: the worker leases just one.
    recv(&mut rx).await;
    let broker = h.stats().await;
    assert_eq!((broker.counts.active, broker.counts.ready), (1, count - 1));
    let stats = running.handle.stats();
    let queue = stats.queue(QUEUE).unwrap();
    assert_eq!((queue.leases, queue.held_back), (1, 0));

    // Each finished task makes room for exactly one more.
    for done in 1..count {
        gate.add_permits(1);
        recv(&mut rx).await;
        running.wait_for(|r| r.completed == done).await;
        assert_eq!(h.stats().await.counts.active, 1);
    }
    gate.add_permits(1);
    let report = running.wait_for(|r| r.completed == count).await;
    assert_eq!(report.reserved, count);
    running.stop().await;
}
