//! The suite run against [`ModelBroker`], the model behind the `Broker` trait: every case must
//! hold for the simplest reading of the rules before any real broker runs it.

use floodway_conformance::model::ModelHarness;

async fn harness() -> ModelHarness {
    ModelHarness::new()
}

floodway_conformance::suite!(harness);
