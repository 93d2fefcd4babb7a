//! [`Samples`]: the values one scrape gathers, by metric and label values.

use crate::catalog::{Kind, Metric};
use crate::histogram::HistogramSnapshot;

/// One sample's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A counter's total.
    Counter(u64),
    /// A gauge's level.
    Gauge(f64),
    /// A histogram's counts and sum.
    Histogram(HistogramSnapshot),
}

/// One series' value: a metric, the values of its labels (in the metric's label order), and
/// the value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The metric.
    pub metric: &'static Metric,
    /// One value per label of the metric, in its order.
    pub labels: Vec<String>,
    /// The value.
    pub value: Value,
}

/// The samples of one scrape, in the order sources added them. The encoder groups them by
/// metric, so sources may add in any order and several may add to one metric.
///
/// The adders assert that the value fits the metric (a counter to a counter, label values to
/// its labels): a mismatch is a bug in the source, not an operating error.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    samples: Vec<Sample>,
}

impl Samples {
    /// No samples.
    pub fn new() -> Self {
        Samples::default()
    }

    /// Adds a counter's total.
    pub fn counter(&mut self, metric: &'static Metric, labels: &[&str], total: u64) {
        assert_eq!(
            metric.kind,
            Kind::Counter,
            "{} is not a counter",
            metric.name
        );
        self.push(metric, labels, Value::Counter(total));
    }

    /// Adds a gauge's level.
    pub fn gauge(&mut self, metric: &'static Metric, labels: &[&str], level: f64) {
        assert_eq!(metric.kind, Kind::Gauge, "{} is not a gauge", metric.name);
        self.push(metric, labels, Value::Gauge(level));
    }

    /// Adds a histogram, whose counts must match the metric's buckets.
    pub fn histogram(
        &mut self,
        metric: &'static Metric,
        labels: &[&str],
        histogram: HistogramSnapshot,
    ) {
        let Kind::Histogram(bounds) = metric.kind else {
            panic!("{} is not a histogram", metric.name);
        };
        assert_eq!(
            histogram.counts.len(),
            bounds.len() + 1,
            "{}: one count per bucket and one for +Inf",
            metric.name
        );
        self.push(metric, labels, Value::Histogram(histogram));
    }

    fn push(&mut self, metric: &'static Metric, labels: &[&str], value: Value) {
        assert_eq!(
            labels.len(),
            metric.labels.len(),
            "{} takes the labels {:?}",
            metric.name,
            metric.labels
        );
        self.samples.push(Sample {
            metric,
            labels: labels.iter().map(|&label| label.to_owned()).collect(),
            value,
        });
    }

    /// Every sample, in the order added.
    pub fn iter(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }

    /// How many samples there are.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Keeps only the samples `keep` says yes to (a caller's view, say).
    pub fn retain(&mut self, keep: impl FnMut(&Sample) -> bool) {
        self.samples.retain(keep);
    }

    /// Adds every sample of `other`.
    pub fn extend(&mut self, other: Samples) {
        self.samples.extend(other.samples);
    }

    /// The value of the series of `metric` with these label values, if there is one (the
    /// first, if several sources added it).
    pub fn find(&self, metric: &Metric, labels: &[&str]) -> Option<&Value> {
        self.samples
            .iter()
            .find(|s| s.metric.name == metric.name && s.labels.iter().eq(labels.iter()))
            .map(|s| &s.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{QUEUE_DEPTH, TASKS_ENQUEUED_TOTAL};

    #[test]
    fn samples_are_found_by_metric_and_labels() {
        let mut samples = Samples::new();
        samples.gauge(&QUEUE_DEPTH, &["a", "ready"], 3.0);
        samples.counter(&TASKS_ENQUEUED_TOTAL, &["a"], 7);
        assert_eq!(
            samples.find(&QUEUE_DEPTH, &["a", "ready"]),
            Some(&Value::Gauge(3.0))
        );
        assert_eq!(samples.find(&QUEUE_DEPTH, &["a", "active"]), None);
        assert_eq!(samples.len(), 2);
    }

    #[test]
    #[should_panic(expected = "takes the labels")]
    fn a_sample_with_the_wrong_labels_is_a_bug() {
        Samples::new().gauge(&QUEUE_DEPTH, &["a"], 1.0);
    }
}
