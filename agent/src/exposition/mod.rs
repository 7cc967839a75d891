//! Prometheus exposition of a scrape's [`View`].
//!
//! Encoded with `prometheus-client`, which writes OpenMetrics text. Scrapers
//! that do not ask for OpenMetrics get the Prometheus text format 0.0.4,
//! converted line by line ([`openmetrics_to_prometheus`]).

mod disk;
mod tcp;

use std::sync::{Mutex, PoisonError};

use agent_ebpf::histogram::{Histogram, SLOTS, upper_bound_ns};
use prometheus_client::{
    collector::Collector as PromCollector,
    encoding::{DescriptorEncoder, EncodeMetric as _, MetricEncoder, NoLabelSet},
    metrics::{MetricType, gauge::ConstGauge},
    registry::{Registry, Unit},
};

use crate::{
    cgroupfs::{CgroupStats, io::DeviceIo, memory::EVENTS, pressure::RESOURCES},
    collector::{Collector, View},
    labels::With,
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
        "stallwatch_memory_reclaim_stall",
        "Time tasks of the cgroup were stalled reclaiming memory: kind=\"direct\" for the page allocator (mm_vmscan_direct_reclaim), kind=\"memcg\" for the cgroup's own limit (mm_vmscan_memcg_reclaim).",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for (labels, kind, hist) in view.reclaim() {
        encode_kernel_histogram(&mut metric, &With(labels, [("kind", kind)]), hist, bounds)?;
    }

    disk::encode(view, bounds, encoder)?;
    tcp::encode(view, bounds, encoder)?;

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

    encode_cri(view, encoder)?;

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

    encode_file_stats(view, encoder)?;

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

/// A sample value: counts and sizes are exported as integers.
#[derive(Clone, Copy)]
pub(super) enum Num {
    Int(u64),
    Float(f64),
}

/// A per-cgroup series read from cgroup files.
struct FileFamily {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    kind: MetricType,
    value: fn(&CgroupStats) -> Option<Num>,
}

const fn family(
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    kind: MetricType,
    value: fn(&CgroupStats) -> Option<Num>,
) -> FileFamily {
    FileFamily {
        name,
        help,
        unit,
        kind,
        value,
    }
}

fn count(v: Option<u64>) -> Option<Num> {
    v.map(Num::Int)
}

fn secs(v: Option<f64>) -> Option<Num> {
    v.map(Num::Float)
}

/// Every single-valued series from cgroup files, in one table. The help text
/// names the source file and, where one exists, the cAdvisor equivalent.
const FILE_FAMILIES: [FileFamily; 20] = [
    family(
        "stallwatch_cpu_usage",
        "CPU time used (cpu.stat usage_usec; v1 cpuacct.usage). cAdvisor: container_cpu_usage_seconds_total.",
        Some(Unit::Seconds),
        MetricType::Counter,
        |s| secs(s.cpu.usage_seconds),
    ),
    family(
        "stallwatch_cpu_user",
        "CPU time in user mode (cpu.stat user_usec; v1 cpuacct.stat). cAdvisor: container_cpu_user_seconds_total.",
        Some(Unit::Seconds),
        MetricType::Counter,
        |s| secs(s.cpu.user_seconds),
    ),
    family(
        "stallwatch_cpu_system",
        "CPU time in kernel mode (cpu.stat system_usec; v1 cpuacct.stat). cAdvisor: container_cpu_system_seconds_total.",
        Some(Unit::Seconds),
        MetricType::Counter,
        |s| secs(s.cpu.system_seconds),
    ),
    family(
        "stallwatch_cpu_cfs_periods",
        "CFS enforcement periods that elapsed (cpu.stat nr_periods). cAdvisor: container_cpu_cfs_periods_total.",
        None,
        MetricType::Counter,
        |s| count(s.cpu.periods),
    ),
    family(
        "stallwatch_cpu_cfs_throttled_periods",
        "CFS periods in which the cgroup was throttled (cpu.stat nr_throttled). cAdvisor: container_cpu_cfs_throttled_periods_total.",
        None,
        MetricType::Counter,
        |s| count(s.cpu.throttled_periods),
    ),
    family(
        "stallwatch_cpu_cfs_throttled",
        "Time the cgroup was throttled (cpu.stat throttled_usec; v1 throttled_time). cAdvisor: container_cpu_cfs_throttled_seconds_total.",
        Some(Unit::Seconds),
        MetricType::Counter,
        |s| secs(s.cpu.throttled_seconds),
    ),
    family(
        "stallwatch_cpu_cfs_burst_periods",
        "CFS periods in which the cgroup used burst (cpu.stat nr_bursts).",
        None,
        MetricType::Counter,
        |s| count(s.cpu.burst_periods),
    ),
    family(
        "stallwatch_cpu_cfs_burst",
        "CPU time used in bursts (cpu.stat burst_usec; v1 burst_time).",
        Some(Unit::Seconds),
        MetricType::Counter,
        |s| secs(s.cpu.burst_seconds),
    ),
    family(
        "stallwatch_cpu_limit_cores",
        "CPU limit in cores, quota / period (cpu.max; v1 cpu.cfs_quota_us / cpu.cfs_period_us); absent when unlimited. cAdvisor: container_spec_cpu_quota / container_spec_cpu_period.",
        None,
        MetricType::Gauge,
        |s| secs(s.cpu.limit_cores),
    ),
    family(
        "stallwatch_cpu_weight",
        "CPU weight, 1 to 10000 (v2 cpu.weight).",
        None,
        MetricType::Gauge,
        |s| count(s.cpu.weight),
    ),
    family(
        "stallwatch_cpu_shares",
        "CPU shares (v1 cpu.shares). cAdvisor: container_spec_cpu_shares.",
        None,
        MetricType::Gauge,
        |s| count(s.cpu.shares),
    ),
    family(
        "stallwatch_memory_usage",
        "Memory in use, page cache included (memory.current; v1 memory.usage_in_bytes). cAdvisor: container_memory_usage_bytes.",
        Some(Unit::Bytes),
        MetricType::Gauge,
        |s| count(s.memory.usage_bytes),
    ),
    family(
        "stallwatch_memory_working_set",
        "Usage minus inactive file pages, what the kubelet evicts on. cAdvisor: container_memory_working_set_bytes.",
        Some(Unit::Bytes),
        MetricType::Gauge,
        |s| count(s.memory.working_set_bytes),
    ),
    family(
        "stallwatch_memory_rss",
        "Anonymous memory (memory.stat anon; v1 total_rss). cAdvisor: container_memory_rss.",
        Some(Unit::Bytes),
        MetricType::Gauge,
        |s| count(s.memory.rss_bytes),
    ),
    family(
        "stallwatch_memory_cache",
        "Page cache (memory.stat file; v1 total_cache). cAdvisor: container_memory_cache.",
        Some(Unit::Bytes),
        MetricType::Gauge,
        |s| count(s.memory.cache_bytes),
    ),
    family(
        "stallwatch_memory_kernel",
        "Kernel memory (memory.stat kernel, or its parts before 5.18; v1 memory.kmem.usage_in_bytes). cAdvisor: container_memory_kernel_usage.",
        Some(Unit::Bytes),
        MetricType::Gauge,
        |s| count(s.memory.kernel_bytes),
    ),
    family(
        "stallwatch_memory_swap",
        "Swap in use (memory.swap.current; v1 total_swap). cAdvisor: container_memory_swap.",
        Some(Unit::Bytes),
        MetricType::Gauge,
        |s| count(s.memory.swap_bytes),
    ),
    family(
        "stallwatch_memory_limit",
        "Memory limit (memory.max; v1 memory.limit_in_bytes); absent when unlimited. cAdvisor: container_spec_memory_limit_bytes.",
        Some(Unit::Bytes),
        MetricType::Gauge,
        |s| count(s.memory.limit_bytes),
    ),
    family(
        "stallwatch_memory_high",
        "Memory throttling threshold (v2 memory.high); absent when unlimited.",
        Some(Unit::Bytes),
        MetricType::Gauge,
        |s| count(s.memory.high_bytes),
    ),
    family(
        "stallwatch_memory_major_page_faults",
        "Major page faults (memory.stat pgmajfault; v1 total_pgmajfault). cAdvisor: container_memory_failures_total{failure_type=\"pgmajfault\"}.",
        None,
        MetricType::Counter,
        |s| count(s.memory.major_faults),
    ),
];

pub(super) fn encode_value(
    metric: &mut MetricEncoder<'_>,
    kind: MetricType,
    value: Num,
) -> Result<(), std::fmt::Error> {
    match (kind, value) {
        (MetricType::Counter, Num::Int(v)) => {
            metric.encode_counter::<NoLabelSet, u64, f64>(&v, None)
        }
        (MetricType::Counter, Num::Float(v)) => {
            metric.encode_counter::<NoLabelSet, f64, f64>(&v, None)
        }
        (_, Num::Int(v)) => metric.encode_gauge(&v),
        (_, Num::Float(v)) => metric.encode_gauge(&v),
    }
}

/// (name, help, unit, counter) of a per-device series.
type DeviceFamily = (
    &'static str,
    &'static str,
    Option<Unit>,
    fn(&DeviceIo) -> u64,
);

fn encode_file_stats(
    view: &View<'_>,
    encoder: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    // Resolved once, not once per family.
    let rows: Vec<_> = view.file_stats().collect();
    for f in &FILE_FAMILIES {
        let mut metric = encoder.encode_descriptor(f.name, f.help, f.unit.as_ref(), f.kind)?;
        for &(labels, stats) in &rows {
            if let Some(value) = (f.value)(stats) {
                encode_value(&mut metric.encode_family(labels)?, f.kind, value)?;
            }
        }
    }

    let mut metric = encoder.encode_descriptor(
        "stallwatch_memory_workingset_refaults",
        "Pages refaulted after eviction from the working set (memory.stat workingset_refault*).",
        None,
        MetricType::Counter,
    )?;
    for &(labels, stats) in &rows {
        if let Some(v) = stats.memory.workingset_refaults {
            encode_value(
                &mut metric.encode_family(labels)?,
                MetricType::Counter,
                Num::Int(v),
            )?;
        }
    }

    let mut metric = encoder.encode_descriptor(
        "stallwatch_memory_events",
        "Memory events (memory.events low, high, max, oom, oom_kill; v1 memory.failcnt as max and memory.oom_control oom_kill). cAdvisor: container_oom_events_total is event=\"oom_kill\".",
        None,
        MetricType::Counter,
    )?;
    for &(labels, stats) in &rows {
        for (event, value) in EVENTS.iter().zip(stats.memory.events) {
            if let Some(v) = value {
                encode_value(
                    &mut metric.encode_family(&With(labels, [("event", event)]))?,
                    MetricType::Counter,
                    Num::Int(v),
                )?;
            }
        }
    }

    let mut metric = encoder.encode_descriptor(
        "stallwatch_pressure_stalled",
        "Time some or all of the cgroup's tasks were stalled on a resource (cpu.pressure, memory.pressure, io.pressure total). cAdvisor: container_pressure_<resource>_waiting_seconds_total is kind=\"some\", _stalled_ is kind=\"full\".",
        Some(&Unit::Seconds),
        MetricType::Counter,
    )?;
    for &(labels, stats) in &rows {
        for (resource, stall) in RESOURCES.iter().zip(stats.pressure) {
            for (kind, value) in [("some", stall.some_seconds), ("full", stall.full_seconds)] {
                if let Some(v) = value {
                    let set = With(labels, [("resource", resource), ("kind", kind)]);
                    encode_value(
                        &mut metric.encode_family(&set)?,
                        MetricType::Counter,
                        Num::Float(v),
                    )?;
                }
            }
        }
    }

    let mut metric = encoder.encode_descriptor(
        "stallwatch_node_pressure_stalled",
        "Time some or all of the node's tasks were stalled on a resource (/proc/pressure). node_exporter: node_pressure_<resource>_waiting_seconds_total is kind=\"some\".",
        Some(&Unit::Seconds),
        MetricType::Counter,
    )?;
    for (resource, stall) in RESOURCES.iter().zip(view.node_pressure) {
        for (kind, value) in [("some", stall.some_seconds), ("full", stall.full_seconds)] {
            if let Some(v) = value {
                let set = [("resource", *resource), ("kind", kind)];
                encode_value(
                    &mut metric.encode_family(&set)?,
                    MetricType::Counter,
                    Num::Float(v),
                )?;
            }
        }
    }

    let io: [DeviceFamily; 4] = [
        (
            "stallwatch_disk_read",
            "Bytes read from a block device (io.stat rbytes; v1 blkio.throttle.io_service_bytes). cAdvisor: container_fs_reads_bytes_total.",
            Some(Unit::Bytes),
            |d| d.read_bytes,
        ),
        (
            "stallwatch_disk_written",
            "Bytes written to a block device (io.stat wbytes; v1 blkio.throttle.io_service_bytes). cAdvisor: container_fs_writes_bytes_total.",
            Some(Unit::Bytes),
            |d| d.write_bytes,
        ),
        (
            "stallwatch_disk_reads",
            "Read operations on a block device (io.stat rios; v1 blkio.throttle.io_serviced). cAdvisor: container_fs_reads_total.",
            None,
            |d| d.reads,
        ),
        (
            "stallwatch_disk_writes",
            "Write operations on a block device (io.stat wios; v1 blkio.throttle.io_serviced). cAdvisor: container_fs_writes_total.",
            None,
            |d| d.writes,
        ),
    ];
    for (name, help, unit, value) in io {
        let mut metric =
            encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
        for &(labels, stats) in &rows {
            for (device, name, number) in view.devices_of(stats) {
                let set = With(labels, [("device", name), ("major_minor", number)]);
                encode_value(
                    &mut metric.encode_family(&set)?,
                    MetricType::Counter,
                    Num::Int(value(device)),
                )?;
            }
        }
    }

    let mut metric = encoder.encode_descriptor(
        "stallwatch_cgroup_read_errors",
        "Malformed lines and failed reads in cgroup files, by file name; each file is logged once.",
        None,
        MetricType::Counter,
    )?;
    for (file, n) in view.read_errors.iter() {
        encode_value(
            &mut metric.encode_family(&[("file", file)])?,
            MetricType::Counter,
            Num::Int(n),
        )?;
    }
    Ok(())
}

/// The container runtime: names of containers, and whether it answers.
fn encode_cri(view: &View<'_>, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
    let Some(health) = view.cri() else {
        return Ok(());
    };
    let mut metric = encoder.encode_descriptor(
        "stallwatch_container_info",
        "1 for every container the container runtime names (container=\"POD\" is the pod's sandbox), with its image and runtime. cAdvisor: the image label of container_* series.",
        None,
        MetricType::Gauge,
    )?;
    for (labels, names) in view.named_containers() {
        let image = names.image.as_deref().unwrap_or_default();
        let set = With(
            labels,
            [("image", image), ("runtime", names.runtime.as_str())],
        );
        metric.encode_family(&set)?.encode_gauge(&1i64)?;
    }
    if let Some(up) = health.up {
        let mut metric = encoder.encode_descriptor(
            "stallwatch_cri_up",
            "Whether the last call to the container runtime (CRI) succeeded; absent while no runtime socket is found.",
            None,
            MetricType::Gauge,
        )?;
        metric.encode_gauge(&i64::from(up))?;
    }
    let mut metric = encoder.encode_descriptor(
        "stallwatch_cri_errors",
        "Failed connections and calls to the container runtime (CRI); labels stay as last known meanwhile.",
        None,
        MetricType::Counter,
    )?;
    metric.encode_counter::<NoLabelSet, _, u64>(&health.errors, None)?;
    Ok(())
}

/// Encodes one histogram as the kernel counted it, on the kernel's bounds.
pub(super) fn encode_kernel_histogram(
    metric: &mut MetricEncoder<'_>,
    labels: &impl prometheus_client::encoding::EncodeLabelSet,
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

/// Size of the last scrape, to size the next one's buffer in one go.
static LAST_SCRAPE_BYTES: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(64 * 1024);

/// Encodes one scrape in the requested format.
pub fn render(registry: &Registry, openmetrics: bool) -> Result<String, std::fmt::Error> {
    use std::sync::atomic::Ordering::Relaxed;
    let expected = LAST_SCRAPE_BYTES.load(Relaxed);
    let mut text = String::with_capacity(expected + expected / 8);
    if openmetrics {
        prometheus_client::encoding::text::encode(&mut text, registry)?;
    } else {
        // Converted as it is written, so the scrape is held in memory once.
        let mut converter = PrometheusText::new(&mut text);
        prometheus_client::encoding::text::encode(&mut converter, registry)?;
        converter.finish();
    }
    LAST_SCRAPE_BYTES.store(text.len(), Relaxed);
    Ok(text)
}

/// OpenMetrics text → Prometheus text format 0.0.4, line by line as it is
/// written: drops `# UNIT` and `# EOF`, and names counter families after
/// their `_total` samples, as the 0.0.4 format does. Samples are the same in
/// both. Only the current line and a pending `# HELP` are buffered.
pub struct PrometheusText<'a> {
    out: &'a mut String,
    line: String,
    pending_help: Option<String>,
    /// In the middle of a sample line, which is copied through as written.
    in_sample: bool,
}

impl<'a> PrometheusText<'a> {
    pub fn new(out: &'a mut String) -> Self {
        Self {
            out,
            line: String::with_capacity(512),
            pending_help: None,
            in_sample: false,
        }
    }

    /// Writes out a last line without a newline, and a pending `# HELP`.
    pub fn finish(mut self) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.convert(&line);
        }
        if let Some(help) = self.pending_help.take() {
            push_line(self.out, &["# HELP ", &help]);
        }
    }

    fn convert(&mut self, line: &str) {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            return;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some(help) = self.pending_help.replace(rest.to_owned()) {
                push_line(self.out, &["# HELP ", &help]);
            }
            return;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (total, kind) = match kind {
                "counter" => ("_total", "counter"),
                "unknown" => ("", "untyped"),
                other => ("", other),
            };
            if let Some(help) = self.pending_help.take() {
                let help_text = help.strip_prefix(name).unwrap_or(&help);
                push_line(self.out, &["# HELP ", name, total, help_text]);
            }
            push_line(self.out, &["# TYPE ", name, total, " ", kind]);
            return;
        }
        if let Some(help) = self.pending_help.take() {
            push_line(self.out, &["# HELP ", &help]);
        }
        push_line(self.out, &[line]);
    }
}

impl std::fmt::Write for PrometheusText<'_> {
    fn write_str(&mut self, mut s: &str) -> std::fmt::Result {
        while !s.is_empty() {
            // Sample lines, nearly all of the text, go straight through;
            // only comment lines are held until complete and rewritten.
            if self.line.is_empty() && !self.in_sample {
                if s.starts_with('#') {
                    self.line.push('#');
                    s = &s[1..];
                    continue;
                }
                self.in_sample = true;
            }
            let (chunk, rest, ended) = match s.find('\n') {
                Some(i) => (&s[..i], &s[i + 1..], true),
                None => (s, "", false),
            };
            if self.in_sample {
                if let Some(help) = self.pending_help.take() {
                    push_line(self.out, &["# HELP ", &help]);
                }
                self.out.push_str(chunk);
                if ended {
                    self.out.push('\n');
                    self.in_sample = false;
                }
            } else {
                self.line.push_str(chunk);
                if ended {
                    let line = std::mem::take(&mut self.line);
                    self.convert(&line);
                    self.line = line;
                    self.line.clear();
                }
            }
            s = rest;
        }
        Ok(())
    }
}

/// Converts a whole OpenMetrics text (see [`PrometheusText`]).
pub fn openmetrics_to_prometheus(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut converter = PrometheusText::new(&mut out);
    let _ = std::fmt::Write::write_str(&mut converter, openmetrics);
    converter.finish();
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
    fn conversion_does_not_depend_on_how_the_text_is_split() {
        let om = "# HELP c_x Things.\n# TYPE c_x counter\nc_x_total 3\n# EOF\n";
        let whole = openmetrics_to_prometheus(om);
        let mut piecewise = String::new();
        let mut converter = PrometheusText::new(&mut piecewise);
        for chunk in om.as_bytes().chunks(3) {
            let _ = std::fmt::Write::write_str(
                &mut converter,
                std::str::from_utf8(chunk).unwrap_or(""),
            );
        }
        converter.finish();
        assert_eq!(piecewise, whole);
        assert_eq!(
            whole,
            "# HELP c_x_total Things.\n# TYPE c_x_total counter\nc_x_total 3\n"
        );
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
