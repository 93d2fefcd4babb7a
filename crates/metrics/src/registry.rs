//! [`Registry`]: everything one process exports, as [`Source`]s read when scraped.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};

use crate::encode::encode;
use crate::error::MetricsError;
use crate::limits;
use crate::samples::Samples;

/// What [`Source::collect`] returns: a boxed future, so sources can be trait objects and a
/// source may await (a broker's statistics) or answer at once (counters in memory).
pub type SourceFuture<'a> = Pin<Box<dyn Future<Output = Result<(), MetricsError>> + Send + 'a>>;

/// Something that adds samples to a scrape: a worker, a producer, the server's request
/// counters, a broker's queue statistics.
///
/// A source reads its values when collected, so a scrape shows the state at that moment;
/// nothing is pushed or buffered in between. A source that keeps everything in memory
/// answers with `Box::pin(std::future::ready(Ok(())))` after adding its samples.
pub trait Source: Send + Sync {
    /// Adds the source's samples, or fails (the scrape then fails as a whole).
    fn collect<'a>(&'a self, samples: &'a mut Samples) -> SourceFuture<'a>;
}

/// A registered source: kept for the registry's life, or exported only while its owner
/// keeps it alive.
enum Entry {
    Strong(Arc<dyn Source>),
    Weak(Weak<dyn Source>),
}

impl Entry {
    fn live(&self) -> Option<Arc<dyn Source>> {
        match self {
            Entry::Strong(source) => Some(source.clone()),
            Entry::Weak(source) => source.upgrade(),
        }
    }
}

/// The sources of one process, read and encoded together on each scrape.
///
/// A process makes one, registers what it runs (workers with
/// `WorkerBuilder::metrics`, producers with `Producer::register_metrics`, a broker's queues
/// with a [`crate::BrokerSource`]) and serves [`Registry::encode`] at `/metrics`
/// (`floodway_server::metrics::router` does it with axum). Cheap to share behind an `Arc`.
pub struct Registry {
    /// At most [`limits::SOURCES_MAX`] live entries; dead weak ones are dropped on every
    /// registration and scrape.
    sources: Mutex<Vec<Entry>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry {
            sources: Mutex::new(Vec::new()),
        }
    }

    /// Exports `source` for as long as the registry lives.
    pub fn register(&self, source: Arc<dyn Source>) -> Result<(), MetricsError> {
        self.add(Entry::Strong(source))
    }

    /// Exports `source` while something else keeps it alive: once its last `Arc` is dropped
    /// (a worker that stopped, a producer dropped), its series leave the exposition.
    pub fn register_weak<S: Source + 'static>(&self, source: &Arc<S>) -> Result<(), MetricsError> {
        let weak: Weak<dyn Source> = Arc::downgrade(source) as Weak<dyn Source>;
        self.add(Entry::Weak(weak))
    }

    fn add(&self, entry: Entry) -> Result<(), MetricsError> {
        let mut sources = self.lock();
        sources.retain(|e| e.live().is_some());
        if sources.len() >= limits::SOURCES_MAX {
            return Err(MetricsError::TooManySources {
                max: limits::SOURCES_MAX,
            });
        }
        sources.push(entry);
        Ok(())
    }

    /// How many sources are live.
    pub fn len(&self) -> usize {
        self.lock().iter().filter(|e| e.live().is_some()).count()
    }

    /// True when no source is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads every live source, in the order registered, into `samples`.
    pub async fn collect(&self, samples: &mut Samples) -> Result<(), MetricsError> {
        // The lock is not held across an await: a slow source never blocks registrations.
        let live: Vec<Arc<dyn Source>> = {
            let mut sources = self.lock();
            sources.retain(|e| e.live().is_some());
            sources.iter().filter_map(Entry::live).collect()
        };
        for source in live {
            source.collect(samples).await?;
        }
        Ok(())
    }

    /// Every live source's samples.
    pub async fn gather(&self) -> Result<Samples, MetricsError> {
        let mut samples = Samples::new();
        self.collect(&mut samples).await?;
        Ok(samples)
    }

    /// The exposition of every live source, in the Prometheus text format
    /// ([`crate::CONTENT_TYPE`]): what to answer a scrape with, in any web framework.
    pub async fn encode(&self) -> Result<String, MetricsError> {
        Ok(encode(&self.gather().await?))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("sources", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{TASKS_ENQUEUED_TOTAL, WORKER_RUNNING};

    struct Fixed(&'static str, f64);

    impl Source for Fixed {
        fn collect<'a>(&'a self, samples: &'a mut Samples) -> SourceFuture<'a> {
            samples.gauge(&WORKER_RUNNING, &[self.0, "q"], self.1);
            Box::pin(std::future::ready(Ok(())))
        }
    }

    struct Failing;

    impl Source for Failing {
        fn collect<'a>(&'a self, _: &'a mut Samples) -> SourceFuture<'a> {
            Box::pin(std::future::ready(Err(MetricsError::Source {
                source_name: "broker".to_owned(),
                reason: "unreachable".to_owned(),
            })))
        }
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn sources_emitting_one_metric_share_its_help_and_type() {
        let registry = Registry::new();
        registry.register(Arc::new(Fixed("w1", 1.0))).unwrap();
        registry.register(Arc::new(Fixed("w2", 2.0))).unwrap();
        let text = block_on(registry.encode()).unwrap();
        assert_eq!(text.matches("# HELP floodway_worker_running").count(), 1);
        assert_eq!(text.matches("# TYPE floodway_worker_running").count(), 1);
        assert!(text.contains("{worker=\"w1\",queue=\"q\"} 1\n"), "{text}");
        assert!(text.contains("{worker=\"w2\",queue=\"q\"} 2\n"), "{text}");
        assert!(!text.contains(TASKS_ENQUEUED_TOTAL.name));
    }

    #[test]
    fn a_weak_source_leaves_when_its_owner_drops_it() {
        let registry = Registry::new();
        let worker = Arc::new(Fixed("w1", 1.0));
        registry.register_weak(&worker).unwrap();
        assert_eq!(registry.len(), 1);
        assert!(block_on(registry.encode()).unwrap().contains("w1"));
        drop(worker);
        assert!(registry.is_empty());
        assert_eq!(block_on(registry.encode()).unwrap(), "");
    }

    #[test]
    fn a_failing_source_fails_the_scrape() {
        let registry = Registry::new();
        registry.register(Arc::new(Fixed("w1", 1.0))).unwrap();
        registry.register(Arc::new(Failing)).unwrap();
        let error = block_on(registry.encode()).unwrap_err();
        assert!(error.is_retryable());
        assert!(error.to_string().contains("unreachable"), "{error}");
    }

    #[test]
    fn the_number_of_live_sources_is_bounded() {
        let registry = Registry::new();
        let kept: Vec<_> = (0..limits::SOURCES_MAX)
            .map(|_| Arc::new(Fixed("w", 1.0)))
            .collect();
        for source in &kept {
            registry.register_weak(source).unwrap();
        }
        let more = Arc::new(Fixed("w", 1.0));
        assert_eq!(
            registry.register_weak(&more),
            Err(MetricsError::TooManySources {
                max: limits::SOURCES_MAX
            })
        );
        drop(kept);
        registry.register_weak(&more).unwrap();
    }
}
