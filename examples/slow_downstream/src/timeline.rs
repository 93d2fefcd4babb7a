//! [`Timeline`]: what a W5 run looked like over time. The sampler reads the queue's stats every
//! [`crate::Scenario::sample_every`] ([`Sample`]) and folds them into one [`Row`] per second
//! with the counters of the downstream and the producers; rows are printed as they come,
//! written as CSV, and plotted.

use std::fmt::Write as _;
use std::time::Duration;

/// The queue at one instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Time since the run started.
    pub at: Duration,
    /// Waiting tasks (scheduled, ready, retrying): what the watermarks bound.
    pub depth: u64,
    /// Tasks leased to the worker.
    pub active: u64,
    /// Whether the queue was refusing enqueues (above its high watermark, or not yet back at
    /// the low one).
    pub refusing: bool,
}

/// One second of a run. Rates are per second over the row's span (about a second; longer if
/// the machine was too busy to sample on time).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Seconds since the run started, at the end of the row.
    pub at: f64,
    /// Waiting tasks at the end of the row.
    pub depth: u64,
    /// The most waiting tasks seen by any sample of the row.
    pub depth_max: u64,
    /// Tasks leased to the worker at the end of the row.
    pub active: u64,
    /// Tasks accepted by enqueue per second.
    pub accepted: u64,
    /// Tasks completed per second (the broker's count).
    pub completed: u64,
    /// Downstream requests served per second.
    pub downstream_served: u64,
    /// Downstream requests refused as overloaded (503) per second.
    pub downstream_refused: u64,
    /// Enqueue calls refused with backpressure (overloaded or full) per second: the signals
    /// the producers got.
    pub producer_refusals: u64,
    /// Dead letters so far.
    pub dead: u64,
    /// The worker's adaptive concurrency limit for the downstream's kind, if it has one.
    pub adaptive_limit: Option<u32>,
}

/// The CSV header, one column per [`Row`] field.
pub const CSV_HEADER: &str = "seconds,depth,depth_max,active,accepted_per_s,completed_per_s,downstream_served_per_s,downstream_refused_per_s,producer_refusals_per_s,dead_total,adaptive_limit";

impl Row {
    /// The row as a CSV line (no newline); an absent adaptive limit is an empty field.
    pub fn csv(&self) -> String {
        format!(
            "{:.1},{},{},{},{},{},{},{},{},{},{}",
            self.at,
            self.depth,
            self.depth_max,
            self.active,
            self.accepted,
            self.completed,
            self.downstream_served,
            self.downstream_refused,
            self.producer_refusals,
            self.dead,
            self.adaptive_limit
                .map(|l| l.to_string())
                .unwrap_or_default()
        )
    }

    /// The header of [`Row::line`].
    pub const LINE_HEADER: &str = "     t   depth  active  accepted/s  completed/s  downstream ok/s  503/s  producer refusals/s   dead  limit";

    /// The row for people, aligned under [`Row::LINE_HEADER`].
    pub fn line(&self) -> String {
        format!(
            "{:>6.1} {:>7} {:>7} {:>11} {:>12} {:>16} {:>6} {:>20} {:>6} {:>6}",
            self.at,
            self.depth,
            self.active,
            self.accepted,
            self.completed,
            self.downstream_served,
            self.downstream_refused,
            self.producer_refusals,
            self.dead,
            self.adaptive_limit
                .map(|l| l.to_string())
                .unwrap_or_else(|| "-".into())
        )
    }
}

/// Every sample and every row of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timeline {
    /// Each sample, in time order.
    pub samples: Vec<Sample>,
    /// Each second, in time order.
    pub rows: Vec<Row>,
}

impl Timeline {
    /// The rows as a CSV document with a header.
    pub fn csv(&self) -> String {
        let mut out = String::with_capacity(64 * (self.rows.len() + 1));
        out.push_str(CSV_HEADER);
        out.push('\n');
        for row in &self.rows {
            let _ = writeln!(out, "{}", row.csv());
        }
        out
    }

    /// The deepest the queue was in any sample.
    pub fn depth_max(&self) -> u64 {
        self.samples.iter().map(|s| s.depth).max().unwrap_or(0)
    }

    /// The queue's mean depth over the samples.
    pub fn depth_mean(&self) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        self.samples.iter().map(|s| s.depth as f64).sum::<f64>() / self.samples.len() as f64
    }

    /// The first sample at which the queue refused enqueues, and the lowest and highest depth
    /// from then on.
    pub fn after_first_refusal(&self) -> Option<(Duration, u64, u64)> {
        let first = self.samples.iter().position(|s| s.refusing)?;
        let after = &self.samples[first..];
        let min = after.iter().map(|s| s.depth).min()?;
        let max = after.iter().map(|s| s.depth).max()?;
        Some((self.samples[first].at, min, max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, depth: u64, refusing: bool) -> Sample {
        Sample {
            at: Duration::from_millis(ms),
            depth,
            active: 0,
            refusing,
        }
    }

    #[test]
    fn csv_has_one_field_per_header_column() {
        let row = Row {
            at: 1.0,
            depth: 2,
            depth_max: 3,
            active: 4,
            accepted: 5,
            completed: 6,
            downstream_served: 7,
            downstream_refused: 8,
            producer_refusals: 9,
            dead: 10,
            adaptive_limit: None,
        };
        let timeline = Timeline {
            samples: vec![],
            rows: vec![row],
        };
        let csv = timeline.csv();
        let mut lines = csv.lines();
        let header = lines.next().unwrap().split(',').count();
        assert_eq!(lines.next().unwrap(), "1.0,2,3,4,5,6,7,8,9,10,");
        assert_eq!(header, 11);
    }

    #[test]
    fn depth_after_the_first_refusal_starts_at_it() {
        let timeline = Timeline {
            samples: vec![
                sample(0, 10, false),
                sample(100, 90, true),
                sample(200, 40, true),
                sample(300, 70, false),
            ],
            rows: vec![],
        };
        assert_eq!(
            timeline.after_first_refusal(),
            Some((Duration::from_millis(100), 40, 90))
        );
        assert_eq!(timeline.depth_max(), 90);
        assert_eq!(timeline.depth_mean(), 52.5);
    }
}
