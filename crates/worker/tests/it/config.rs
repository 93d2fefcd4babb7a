//! A misconfigured worker fails to build, and the error names the setting.

use std::time::Duration;

use floodway_worker::{TaskContext, WorkerError};

use crate::support::{Harness, QUEUE};

#[tokio::test]
async fn builder_names_the_bad_setting() {
    let h = Harness::new();
    let noop = |_: TaskContext, _: serde_json::Value| async {};
    let setting = |result: Result<_, WorkerError>| match result {
        Err(WorkerError::Invalid { setting, reason }) => format!("{setting}: {reason}"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("the worker was built"),
    };

    let err = setting(h.builder().handler("k", noop).build());
    assert!(err.starts_with("queue:"), "{err}");
    let err = setting(h.builder().queue("bad name", 1).handler("k", noop).build());
    assert!(err.starts_with("queue:"), "{err}");
    let err = setting(h.builder().queue(QUEUE, 1).build());
    assert!(err.starts_with("handler:"), "{err}");
    let err = setting(
        h.builder()
            .queue(QUEUE, 1)
            .handler("k", noop)
            .handler("k", noop)
            .build(),
    );
    assert!(err.contains("registered twice"), "{err}");
    let err = setting(
        h.builder()
            .queue(QUEUE, 1)
            .handler("no spaces", noop)
            .build(),
    );
    assert!(err.starts_with("handler:"), "{err}");
    let err = setting(
        h.builder()
            .queue(QUEUE, 1)
            .handler("k", noop)
            .kind_timeout("other", Duration::from_secs(1))
            .build(),
    );
    assert!(
        err.starts_with("kind_timeout:") && err.contains("\"other\""),
        "{err}"
    );
    let err = setting(
        h.builder()
            .queue(QUEUE, 1)
            .handler("k", noop)
            .timeout(Duration::ZERO)
            .build(),
    );
    assert!(err.starts_with("timeout:"), "{err}");
    let err = setting(
        h.builder()
            .queue(QUEUE, 1)
            .handler("k", noop)
            .lease_duration(Duration::from_millis(10))
            .build(),
    );
    assert!(err.starts_with("lease_duration:"), "{err}");
    let err = setting(
        h.builder()
            .queue(QUEUE, 1)
            .handler("k", noop)
            .poll_wait(Duration::ZERO)
            .build(),
    );
    assert!(err.starts_with("poll_wait:"), "{err}");
    let err = setting(
        h.builder()
            .queue(QUEUE, 1)
            .handler("k", noop)
            .reserve_batch_max(0)
            .build(),
    );
    assert!(err.starts_with("reserve_batch_max:"), "{err}");
    let err = setting(
        h.builder()
            .queue(QUEUE, 1)
            .handler("k", noop)
            .name("")
            .build(),
    );
    assert!(err.starts_with("name:"), "{err}");

    let worker = h
        .builder()
        .queue(QUEUE, 1)
        .handler("k", noop)
        .build()
        .unwrap();
    assert_eq!(worker.name(), "test-worker");
}

#[tokio::test]
async fn handle_of_a_worker_dropped_unrun_reports_it_stopped() {
    let h = Harness::new();
    let worker = h
        .builder()
        .queue(QUEUE, 1)
        .handler("k", |_: TaskContext, _: serde_json::Value| async {})
        .build()
        .unwrap();
    let handle = worker.handle();
    drop(worker);
    assert_eq!(
        handle.wait_for(|r| r.completed > 0).await,
        Err(WorkerError::Stopped)
    );
    assert_eq!(handle.heartbeat_now().await, Err(WorkerError::Stopped));
}
