//! [`encode`]: samples in the Prometheus text exposition format, version 0.0.4.
//!
//! Samples are grouped by metric, in the order each metric first appears, so each metric's
//! `# HELP` and `# TYPE` lines appear once, followed by all its series, however many sources
//! added to it. Two samples of one series (the same metric and label values, from two
//! sources) are added together: the exposition never repeats a series, which Prometheus
//! would refuse.

use std::collections::HashMap;
use std::fmt::Write;

use crate::catalog::{Kind, Metric};
use crate::samples::{Samples, Value};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One metric's series, in the order first added, with same-label samples added together.
struct Family<'s> {
    metric: &'static Metric,
    series: Vec<(&'s [String], Value)>,
    index: HashMap<&'s [String], usize>,
}

/// The exposition of `samples`.
pub fn encode(samples: &Samples) -> String {
    let mut order: Vec<&'static str> = Vec::new();
    let mut families: HashMap<&'static str, Family<'_>> = HashMap::new();
    for sample in samples.iter() {
        let family = families.entry(sample.metric.name).or_insert_with(|| {
            order.push(sample.metric.name);
            Family {
                metric: sample.metric,
                series: Vec::new(),
                index: HashMap::new(),
            }
        });
        let labels = sample.labels.as_slice();
        match family.index.get(labels) {
            Some(&at) => add(&mut family.series[at].1, &sample.value),
            None => {
                family.index.insert(labels, family.series.len());
                family.series.push((labels, sample.value.clone()));
            }
        }
    }
    let mut out = String::with_capacity(64 * samples.len() + 256);
    for name in order {
        let family = &families[name];
        let metric = family.metric;
        let _ = writeln!(out, "# HELP {} {}", metric.name, escape_help(metric.help));
        let _ = writeln!(out, "# TYPE {} {}", metric.name, metric.kind.as_str());
        for (labels, value) in &family.series {
            write_series(&mut out, metric, labels, value);
        }
    }
    out
}

/// Adds `more` to `sum`: a second sample of one series.
fn add(sum: &mut Value, more: &Value) {
    match (sum, more) {
        (Value::Counter(a), Value::Counter(b)) => *a = a.saturating_add(*b),
        (Value::Gauge(a), Value::Gauge(b)) => *a += b,
        (Value::Histogram(a), Value::Histogram(b)) => a.add(b),
        // `Samples` checks values against their metric's kind, so two samples of one metric
        // have values of one kind.
        _ => unreachable!("samples of one metric have one kind"),
    }
}

fn write_series(out: &mut String, metric: &Metric, labels: &[String], value: &Value) {
    match value {
        Value::Counter(total) => {
            write_name(out, metric.name, "", metric.labels, labels, None);
            let _ = writeln!(out, " {total}");
        }
        Value::Gauge(level) => {
            write_name(out, metric.name, "", metric.labels, labels, None);
            let _ = writeln!(out, " {}", float(*level));
        }
        Value::Histogram(histogram) => {
            let Kind::Histogram(bounds) = metric.kind else {
                unreachable!("samples check histograms against their metric")
            };
            let mut cumulative = 0u64;
            for (i, count) in histogram.counts.iter().enumerate() {
                cumulative += count;
                let le = bounds
                    .get(i)
                    .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
                write_name(
                    out,
                    metric.name,
                    "_bucket",
                    metric.labels,
                    labels,
                    Some(&le),
                );
                let _ = writeln!(out, " {cumulative}");
            }
            write_name(out, metric.name, "_sum", metric.labels, labels, None);
            let _ = writeln!(out, " {}", float(histogram.sum_seconds));
            write_name(out, metric.name, "_count", metric.labels, labels, None);
            let _ = writeln!(out, " {cumulative}");
        }
    }
}

/// `name{label="value",...}` (without the braces when there are no labels).
fn write_name(
    out: &mut String,
    name: &str,
    suffix: &str,
    names: &[&str],
    values: &[String],
    le: Option<&str>,
) {
    out.push_str(name);
    out.push_str(suffix);
    if names.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    let pairs = names
        .iter()
        .copied()
        .zip(values.iter().map(String::as_str))
        .chain(le.map(|le| ("le", le)));
    for (name, value) in pairs {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

/// A float as the format writes it: `+Inf`, `-Inf`, `NaN`, or a number (with an exponent
/// when it is very large or very small, rather than hundreds of digits).
fn float(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if value != 0.0 && !(1e-6..1e15).contains(&value.abs()) {
        format!("{value:e}")
    } else {
        value.to_string()
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{
        HTTP_REQUEST_DURATION_SECONDS, QUEUE_DEPTH, TASKS_ENQUEUED_TOTAL, WORKER_RUNNING,
    };
    use crate::histogram::Histogram;
    use std::time::Duration;

    #[test]
    fn each_metric_has_one_help_and_type_and_its_series_follow() {
        let mut samples = Samples::new();
        samples.gauge(&WORKER_RUNNING, &["w1", "emails"], 2.0);
        samples.counter(&TASKS_ENQUEUED_TOTAL, &["emails"], 7);
        // A second source emitting the same metric.
        samples.gauge(&WORKER_RUNNING, &["w2", "emails"], 3.0);
        let text = encode(&samples);
        assert_eq!(
            text,
            "# HELP floodway_worker_running Handlers of the queue's tasks running in the worker now (in flight).\n\
             # TYPE floodway_worker_running gauge\n\
             floodway_worker_running{worker=\"w1\",queue=\"emails\"} 2\n\
             floodway_worker_running{worker=\"w2\",queue=\"emails\"} 3\n\
             # HELP floodway_tasks_enqueued_total Tasks accepted by enqueue (duplicates excluded).\n\
             # TYPE floodway_tasks_enqueued_total counter\n\
             floodway_tasks_enqueued_total{queue=\"emails\"} 7\n"
        );
    }

    #[test]
    fn the_same_series_from_two_sources_is_added_up() {
        let mut samples = Samples::new();
        samples.counter(&TASKS_ENQUEUED_TOTAL, &["emails"], 7);
        samples.counter(&TASKS_ENQUEUED_TOTAL, &["emails"], 5);
        let text = encode(&samples);
        assert!(
            text.contains("floodway_tasks_enqueued_total{queue=\"emails\"} 12\n"),
            "{text}"
        );
        assert_eq!(text.matches("floodway_tasks_enqueued_total{").count(), 1);
    }

    #[test]
    fn histograms_are_cumulative_buckets_then_sum_and_count() {
        let histogram = Histogram::new(match HTTP_REQUEST_DURATION_SECONDS.kind {
            Kind::Histogram(bounds) => bounds,
            _ => unreachable!(),
        });
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_millis(750));
        let mut samples = Samples::new();
        samples.histogram(
            &HTTP_REQUEST_DURATION_SECONDS,
            &["/v1/queues", "GET"],
            histogram.snapshot(),
        );
        let text = encode(&samples);
        let series = "floodway_http_request_duration_seconds";
        for line in [
            format!("{series}_bucket{{route=\"/v1/queues\",method=\"GET\",le=\"0.001\"}} 0"),
            format!("{series}_bucket{{route=\"/v1/queues\",method=\"GET\",le=\"0.005\"}} 1"),
            format!("{series}_bucket{{route=\"/v1/queues\",method=\"GET\",le=\"0.5\"}} 1"),
            format!("{series}_bucket{{route=\"/v1/queues\",method=\"GET\",le=\"1\"}} 2"),
            format!("{series}_bucket{{route=\"/v1/queues\",method=\"GET\",le=\"+Inf\"}} 2"),
            format!("{series}_sum{{route=\"/v1/queues\",method=\"GET\"}} 0.753"),
            format!("{series}_count{{route=\"/v1/queues\",method=\"GET\"}} 2"),
        ] {
            assert!(
                text.contains(&format!("{line}\n")),
                "missing {line} in\n{text}"
            );
        }
        assert_eq!(text.matches("# TYPE").count(), 1);
    }

    #[test]
    fn label_values_are_escaped_and_odd_floats_spelled_out() {
        let mut samples = Samples::new();
        samples.gauge(&QUEUE_DEPTH, &["a\"b\\c\nd", "ready"], f64::INFINITY);
        samples.gauge(&QUEUE_DEPTH, &["q", "ready"], 1e300);
        samples.gauge(&QUEUE_DEPTH, &["q", "active"], 0.25);
        let text = encode(&samples);
        assert!(
            text.contains("floodway_queue_depth{queue=\"a\\\"b\\\\c\\nd\",state=\"ready\"} +Inf\n"),
            "{text}"
        );
        assert!(text.contains("state=\"ready\"} 1e300\n"), "{text}");
        assert!(text.contains("state=\"active\"} 0.25\n"), "{text}");
    }
}
