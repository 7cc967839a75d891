//! The disk I/O series: latency and queue-time histograms and counters per
//! container, device and op, and the completions nobody's start was seen for.

use agent_ebpf::{disk::DiskSeries, histogram::SLOTS};
use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType, registry::Unit};

use super::{Num, encode_kernel_histogram, encode_value};
use crate::{collector::View, labels::With};

/// The eBPF disk I/O series, per container, device and op.
pub(super) fn encode(
    view: &View<'_>,
    bounds: &[(f64, u64); SLOTS],
    encoder: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(
        "stallwatch_disk_io_latency",
        "Time the cgroup's block requests took on the device, from issue to the driver (block_rq_issue) to completion (block_rq_complete). Writeback by kernel threads counts for cgroup \"/\".",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for (labels, device, op, series) in view.disk_series() {
        let set = With(labels, [("device", device), ("op", op)]);
        encode_kernel_histogram(&mut metric, &set, &series.latency, bounds)?;
    }

    let mut metric = encoder.encode_descriptor(
        "stallwatch_disk_io_queue",
        "Time the cgroup's block requests waited in the block layer (I/O scheduler) before issue, block_rq_insert to block_rq_issue; requests issued directly have no sample.",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for (labels, device, op, hist) in view.disk_queue() {
        let set = With(labels, [("device", device), ("op", op)]);
        encode_kernel_histogram(&mut metric, &set, hist, bounds)?;
    }

    type Counter = (
        &'static str,
        &'static str,
        Option<Unit>,
        fn(&DiskSeries) -> u64,
    );
    let counters: [Counter; 3] = [
        (
            "stallwatch_disk_io_requests",
            "Block requests of the cgroup completed by the device (block_rq_complete).",
            None,
            |s| s.requests,
        ),
        (
            "stallwatch_disk_io",
            "Bytes of the cgroup's completed block requests.",
            Some(Unit::Bytes),
            |s| s.bytes,
        ),
        (
            "stallwatch_disk_io_errors",
            "Block requests of the cgroup that completed with an error.",
            None,
            |s| s.errors,
        ),
    ];
    for (name, help, unit, value) in counters {
        let mut metric =
            encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
        for (labels, device, op, series) in view.disk_series() {
            let set = With(labels, [("device", device), ("op", op)]);
            encode_value(
                &mut metric.encode_family(&set)?,
                MetricType::Counter,
                Num::Int(value(series)),
            )?;
        }
    }

    let mut metric = encoder.encode_descriptor(
        "stallwatch_disk_io_unmatched",
        "Block requests completed whose start was not seen (in flight when the agent started, or the in-flight map was full): counted, never given a latency. With stallwatch_disk_io_requests_total they add up to the device's completions.",
        None,
        MetricType::Counter,
    )?;
    for (device, op, requests) in view.disk_unmatched() {
        encode_value(
            &mut metric.encode_family(&[("device", device), ("op", op)])?,
            MetricType::Counter,
            Num::Int(requests),
        )?;
    }
    Ok(())
}
