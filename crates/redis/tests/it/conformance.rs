//! The conformance suite (crate `floodway-conformance`) against a real Redis and a real
//! three-primary Redis Cluster: one test per case for each. Every harness is a fresh broker
//! with a key prefix of its own on a server (or cluster) the whole test binary shares, time
//! from the harness's manual clock, and no background maintenance.

use std::sync::Arc;

use floodway_conformance::Harness;
use floodway_core::{ManualClock, Timestamp};
use floodway_redis::{Options, RedisBroker, TimeSource};

use crate::server;

pub(crate) struct RedisHarness {
    broker: RedisBroker,
    clock: ManualClock,
    url: String,
    prefix: String,
}

fn options(clock: &ManualClock, prefix: &str) -> Options {
    Options {
        prefix: prefix.to_owned(),
        time: TimeSource::Injected(Arc::new(clock.clone())),
        maintenance_interval: None,
        ..Options::default()
    }
}

impl RedisHarness {
    pub(crate) async fn open(url: String) -> RedisHarness {
        let clock = ManualClock::new(Timestamp::from_millis(1_800_000_000_000));
        let prefix = server::fresh_prefix();
        let broker = RedisBroker::connect(&url, options(&clock, &prefix))
            .await
            .expect("connecting to the test Redis");
        RedisHarness {
            broker,
            clock,
            url,
            prefix,
        }
    }
}

impl Harness for RedisHarness {
    type Broker = RedisBroker;

    fn broker(&self) -> &RedisBroker {
        &self.broker
    }

    fn clock(&self) -> &ManualClock {
        &self.clock
    }

    fn can_restart(&self) -> bool {
        true
    }

    /// Drops the broker and connects a new one to the same Redis and prefix: what a restart
    /// of a floodway process is.
    async fn restart(&mut self) {
        self.broker = RedisBroker::connect(&self.url, options(&self.clock, &self.prefix))
            .await
            .expect("reconnecting to the test Redis");
    }
}

async fn single() -> RedisHarness {
    RedisHarness::open(server::shared().url()).await
}

async fn cluster() -> RedisHarness {
    RedisHarness::open(server::shared_cluster().url()).await
}

mod single {
    floodway_conformance::suite!(super::single);
}

mod cluster {
    floodway_conformance::suite!(super::cluster);
}
