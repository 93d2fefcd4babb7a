//! A shortened W5 with backpressure on, run against the real embedded broker and worker.

use std::time::Duration;

use floodway_backpressure::{AimdConfig, RateLimit, Watermarks};

use crate::downstream::DownstreamConfig;
use crate::scenario::Scenario;

/// W5 scaled down: 400 tasks/s offered for 3 s to a downstream serving 100/s, watermarks
/// 200/100, producer deadline 1.5 s.
fn short_w5() -> Scenario {
    let mut scenario = Scenario::w5(true, Duration::from_secs(3));
    scenario.offer_rate = 400;
    scenario.producers = 2;
    scenario.batch = 10;
    scenario.calls_max = 500;
    scenario.producer_deadline = Duration::from_millis(1500);
    scenario.retry_cap = Duration::from_millis(1500);
    scenario.downstream = DownstreamConfig {
        rate: 100.0,
        burst: 10,
        queue_delay_max: Duration::from_millis(200),
        latency: Duration::from_millis(10),
    };
    scenario.queue.rate_limit = Some(RateLimit {
        rate: 96.0,
        burst: 8,
    });
    scenario.queue.concurrency_max = Some(16);
    scenario.queue.watermarks = Some(Watermarks {
        high: 200,
        low: 100,
    });
    scenario.worker_concurrency = 16;
    scenario.adaptive = Some(AimdConfig {
        min: 2,
        max: 16,
        initial: 8,
        decrease_factor: 0.5,
        cooldown: Duration::from_secs(1),
    });
    scenario.sample_every = Duration::from_millis(50);
    scenario
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_loses_nothing_and_holds_depth_at_the_high_watermark() {
    let scenario = short_w5();
    let high = scenario.high_watermark().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut rows = 0;
    let run = crate::run(&scenario, dir.path(), |_| rows += 1)
        .await
        .unwrap();
    let s = &run.summary;
    let context = format!("{s}");

    assert_eq!(s.offered, 1200, "{context}");
    assert!(s.accepted > 0 && s.completed > 0, "{context}");
    assert_eq!(s.lost, 0, "{context}");
    assert_eq!(s.unacknowledged, 0, "{context}");
    assert_eq!(
        s.accepted,
        s.completed + s.dead() + s.waiting,
        "every accepted task is accounted for\n{context}"
    );
    // Offered at four times what the queue drains, so the producers must have been pushed
    // back, and the queue never held more than one batch beyond its high watermark.
    let check = s.watermarks.unwrap();
    assert!(check.first_refusal_at.is_some(), "{context}");
    assert!(s.producer_refusals > 0, "{context}");
    assert!(
        s.depth_max <= high + u64::from(scenario.batch),
        "depth {} above {high} + one batch\n{context}",
        s.depth_max
    );
    assert!(rows >= 3, "a row per second: {rows}");
    assert_eq!(rows, run.timeline.rows.len());

    // The plot draws from the same run.
    let png = crate::plot::png(&run).unwrap();
    assert_eq!(&png[1..4], b"PNG");
}
