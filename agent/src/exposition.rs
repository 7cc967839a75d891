//! Prometheus exposition of a scrape's [`View`].
//!
//! Encoded with `prometheus-client`, which writes OpenMetrics text. Scrapers
//! that do not ask for OpenMetrics get the Prometheus text format 0.0.4,
//! converted line by line ([`openmetrics_to_prometheus`]).

use std::sync::{Mutex, PoisonError};

use agent_ebpf::histogram::{Histogram, SLOTS, upper_bound_ns};
use prometheus_client::{
    collector::Collector as PromCollector,
    encoding::{DescriptorEncoder, EncodeMetric as _, MetricEncoder, NoLabelSet},
    metrics::{MetricType, gauge::ConstGauge},
    registry::{Registry, Unit},
};

use crate::{
    collector::{Collector, View},
    labels::CgroupLabels,
};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The registry's single collector: everything is read when scraped.
#[derive(Debug)]
pub struct Exporter {
    collector: Mutex<Collector>,
    bounds: [(f64, u64); SLOTS],
}

impl Exporter {
    pub fn new(collector: Collector) -> Self {
        Self {
            collector: Mutex::new(collector),
            bounds: histogram_bounds(),
        }
    }

    /// Runs `f` with the collector locked (a poisoned lock is recovered: the
    /// collector holds no invariant a panic could break halfway).
    pub fn with_collector<R>(&self, f: impl FnOnce(&mut Collector) -> R) -> R {
        let mut guard = self
            .collector
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }
}

/// The exported `le` bounds in seconds: exactly the kernel's, `+Inf` last.
fn histogram_bounds() -> [(f64, u64); SLOTS] {
    let mut bounds = [(f64::MAX, 0); SLOTS];
    for (slot, bound) in bounds.iter_mut().enumerate() {
        if let Some(ns) = upper_bound_ns(slot) {
            bound.0 = ns as f64 / 1e9;
        }
    }
    bounds
}

impl PromCollector for Exporter {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.with_collector(|collector| {
            let view = collector.collect();
            encode_view(&view, &self.bounds, &mut encoder)
        })
    }
}

fn encode_view(
    view: &View<'_>,
    bounds: &[(f64, u64); SLOTS],
    encoder: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(
        "stallwatch_cpu_runqueue_latency",
        "Time tasks of the cgroup spent runnable, waiting for a CPU, from wakeup or preemption to running.",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for (labels, hist) in view.runqueue() {
        encode_kernel_histogram(&mut metric, labels, hist, bounds)?;
    }

    let mut metric = encoder.encode_descriptor(
        "stallwatch_probe_up",
        "Whether the probes of a signal are attached (1) or failed to attach (0); see /readyz and the log for why.",
        None,
        MetricType::Gauge,
    )?;
    for status in view.probes {
        let up = i64::from(status.state == crate::probes::ProbeState::Up);
        metric
            .encode_family(&[("probe", status.signal.name())])?
            .encode_gauge(&up)?;
    }

    let mut metric = encoder.encode_descriptor(
        "stallwatch_map_full",
        "Inserts into a bounded eBPF map that failed because it was full: samples lost. Raise the map's size flag.",
        None,
        MetricType::Counter,
    )?;
    for (map, count) in view.map_full {
        metric
            .encode_family(&[("map", map.map_name())])?
            .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
    }

    let gauges: [(&str, &str, Option<&Unit>, f64); 2] = [
        (
            "stallwatch_scrape_duration",
            "Time this scrape spent reading the kernel maps and cgroups.",
            Some(&Unit::Seconds),
            view.collect_duration.as_secs_f64(),
        ),
        (
            "stallwatch_tracked_cgroups",
            "Cgroups with state in the kernel maps.",
            None,
            view.tracked_cgroups as f64,
        ),
    ];
    for (name, help, unit, value) in gauges {
        let gauge = ConstGauge::new(value);
        gauge.encode(encoder.encode_descriptor(name, help, unit, gauge.metric_type())?)?;
    }

    let mut metric = encoder.encode_descriptor(
        "stallwatch_build_info",
        "The agent's version; always 1.",
        None,
        MetricType::Gauge,
    )?;
    metric
        .encode_family(&[("version", VERSION)])?
        .encode_gauge(&1i64)?;
    Ok(())
}

/// Encodes one histogram as the kernel counted it, on the kernel's bounds.
fn encode_kernel_histogram(
    metric: &mut MetricEncoder<'_>,
    labels: &CgroupLabels,
    hist: &Histogram,
    bounds: &[(f64, u64); SLOTS],
) -> Result<(), std::fmt::Error> {
    let mut buckets = *bounds;
    for (bucket, count) in buckets.iter_mut().zip(hist.buckets.iter()) {
        bucket.1 = *count;
    }
    metric
        .encode_family(labels)?
        .encode_histogram::<NoLabelSet>(hist.sum_ns as f64 / 1e9, hist.count(), &buckets, None)
}

/// A registry with the exporter as its only collector.
pub fn registry(exporter: std::sync::Arc<Exporter>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(exporter));
    registry
}

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// Encodes one scrape in the requested format.
pub fn render(registry: &Registry, openmetrics: bool) -> Result<String, std::fmt::Error> {
    let mut text = String::with_capacity(64 * 1024);
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    if openmetrics {
        Ok(text)
    } else {
        Ok(openmetrics_to_prometheus(&text))
    }
}

/// OpenMetrics text → Prometheus text format 0.0.4: drops `# UNIT` and
/// `# EOF`, and names counter families after their `_total` samples, as the
/// 0.0.4 format does. Samples are the same in both.
pub fn openmetrics_to_prometheus(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut pending_help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some(help) = pending_help.replace(rest) {
                push_line(&mut out, &["# HELP ", help]);
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (total, kind) = match kind {
                "counter" => ("_total", "counter"),
                "unknown" => ("", "untyped"),
                other => ("", other),
            };
            if let Some(help) = pending_help.take() {
                let help_text = help.strip_prefix(name).unwrap_or(help);
                push_line(&mut out, &["# HELP ", name, total, help_text]);
            }
            push_line(&mut out, &["# TYPE ", name, total, " ", kind]);
            continue;
        }
        if let Some(help) = pending_help.take() {
            push_line(&mut out, &["# HELP ", help]);
        }
        push_line(&mut out, &[line]);
    }
    out
}

fn push_line(out: &mut String, parts: &[&str]) {
    for part in parts {
        out.push_str(part);
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_the_kernel_bounds_in_seconds() {
        let bounds = histogram_bounds();
        assert_eq!(bounds[0].0, 1.024e-6);
        assert_eq!(bounds[1].0, 1.536e-6);
        assert_eq!(bounds[SLOTS - 2].0, 17.179869184);
        assert_eq!(bounds[SLOTS - 1].0, f64::MAX);
    }

    #[test]
    fn counters_are_renamed_and_openmetrics_only_lines_dropped() {
        let om = "# HELP x_map_full Inserts that failed.\n# TYPE x_map_full counter\nx_map_full_total{map=\"a\"} 3\n# HELP x_latency_seconds Waits.\n# TYPE x_latency_seconds histogram\n# UNIT x_latency_seconds seconds\nx_latency_seconds_sum 0.5\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus(om),
            "# HELP x_map_full_total Inserts that failed.\n# TYPE x_map_full_total counter\nx_map_full_total{map=\"a\"} 3\n# HELP x_latency_seconds Waits.\n# TYPE x_latency_seconds histogram\nx_latency_seconds_sum 0.5\n"
        );
    }

    /// A histogram as the kernel counts it, exported: cumulative buckets on
    /// the kernel's bounds, `_count` equal to `+Inf`, `_sum` in seconds.
    #[test]
    fn exposes_a_histogram_on_the_kernel_bounds() {
        use agent_ebpf::histogram::slot_for;

        #[derive(Debug)]
        struct One(Histogram, crate::labels::CgroupLabels);
        impl PromCollector for One {
            fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
                let mut metric = encoder.encode_descriptor(
                    "h",
                    "help",
                    Some(&Unit::Seconds),
                    MetricType::Histogram,
                )?;
                encode_kernel_histogram(&mut metric, &self.1, &self.0, &histogram_bounds())
            }
        }
        let mut hist = Histogram::ZERO;
        for ns in [500, 2_000_000, 3_000_000, 20_000_000_000] {
            hist.buckets[slot_for(ns)] += 1;
            hist.sum_ns += ns;
        }
        let labels = crate::labels::CgroupLabels::from_path(&format!("/docker/{}", "b".repeat(64)));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(One(hist, labels)));
        let text = render(&registry, false).expect("encodes");
        let cgroup = format!(
            "cgroup=\"/docker/{b}\",container_id=\"{b}\"",
            b = "b".repeat(64)
        );
        assert!(
            text.contains(&format!("h_seconds_count{{{cgroup}}} 4\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("h_seconds_sum{{{cgroup}}} 20.0050005\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "h_seconds_bucket{{le=\"0.000001024\",{cgroup}}} 1\n"
            )),
            "{text}"
        );
        // 2 ms and 3 ms are both <= 2^22 ns = 4.194304 ms.
        assert!(
            text.contains(&format!(
                "h_seconds_bucket{{le=\"0.004194304\",{cgroup}}} 3\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "h_seconds_bucket{{le=\"17.179869184\",{cgroup}}} 3\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("h_seconds_bucket{{le=\"+Inf\",{cgroup}}} 4\n")),
            "{text}"
        );
        assert_eq!(text.matches("h_seconds_bucket").count(), SLOTS);
        assert!(!text.contains("# EOF"));
    }
}
