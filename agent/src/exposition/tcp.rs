//! The TCP and traffic series: connect latency and RTT histograms, TCP
//! event counters, and bytes and packets per container.

use agent_ebpf::{
    histogram::{Histogram, SLOTS},
    tcp::{DIRECTION_RX, DIRECTION_TX, TcpSeries, Traffic},
};
use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType, registry::Unit};

use super::{Num, encode_kernel_histogram, encode_value};
use crate::{collector::View, labels::With};

/// The eBPF TCP and traffic series, per container.
pub(super) fn encode(
    view: &View<'_>,
    bounds: &[(f64, u64); SLOTS],
    encoder: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    type Hist = (&'static str, &'static str, fn(&TcpSeries) -> &Histogram);
    let histograms: [Hist; 2] = [
        (
            "stallwatch_tcp_connect_latency",
            "Time the cgroup's TCP connects took, from connect() sending the SYN to ESTABLISHED (IPv4 and IPv6).",
            |s| &s.connect,
        ),
        (
            "stallwatch_tcp_rtt",
            "Smoothed RTT of the cgroup's TCP connections (client and server side), as the kernel estimates it: each connection's first estimate, then at most one per --tcp-rtt-interval.",
            |s| &s.rtt,
        ),
    ];
    for (name, help, hist) in histograms {
        let mut metric =
            encoder.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
        for (labels, series) in view.tcp() {
            encode_kernel_histogram(&mut metric, labels, hist(series), bounds)?;
        }
    }

    type Counter = (&'static str, &'static str, fn(&TcpSeries) -> u64);
    let counters: [Counter; 2] = [
        (
            "stallwatch_tcp_connect_failures",
            "TCP connects of the cgroup that never reached ESTABLISHED (SYN_SENT to CLOSE): refused by a reset, timed out, or abandoned.",
            |s| s.connect_failures,
        ),
        (
            "stallwatch_tcp_retransmits",
            "TCP segments the cgroup's connections retransmitted.",
            |s| s.retransmits,
        ),
    ];
    for (name, help, value) in counters {
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, series) in view.tcp() {
            encode_value(
                &mut metric.encode_family(labels)?,
                MetricType::Counter,
                Num::Int(value(series)),
            )?;
        }
    }

    let mut metric = encoder.encode_descriptor(
        "stallwatch_tcp_resets",
        "TCP resets the cgroup's connections sent or received (direction=\"sent\"|\"received\"). A refused connect receives one, and also counts in stallwatch_tcp_connect_failures_total.",
        None,
        MetricType::Counter,
    )?;
    for (labels, series) in view.tcp() {
        for (direction, value) in [
            ("sent", series.resets_sent),
            ("received", series.resets_received),
        ] {
            encode_value(
                &mut metric.encode_family(&With(labels, [("direction", direction)]))?,
                MetricType::Counter,
                Num::Int(value),
            )?;
        }
    }

    /// (name, help, unit, [tx, rx]).
    type TrafficCounter = (
        &'static str,
        &'static str,
        Option<Unit>,
        [fn(&Traffic) -> u64; 2],
    );
    let traffic: [TrafficCounter; 2] = [
        (
            "stallwatch_network",
            "IP traffic of the cgroup's sockets, in bytes at the IP layer including headers (direction=\"tx\"|\"rx\"). Counted per socket, so hostNetwork pods are told apart.",
            Some(Unit::Bytes),
            [|t| t.tx_bytes, |t| t.rx_bytes],
        ),
        (
            "stallwatch_network_packets",
            "IP packets of the cgroup's sockets (direction=\"tx\"|\"rx\"), each segment of an offloaded (GSO) packet counted.",
            None,
            [|t| t.tx_packets, |t| t.rx_packets],
        ),
    ];
    for (name, help, unit, [tx, rx]) in traffic {
        let mut metric =
            encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
        for (labels, counts) in view.traffic() {
            for (direction, value) in [(DIRECTION_TX, tx(counts)), (DIRECTION_RX, rx(counts))] {
                encode_value(
                    &mut metric.encode_family(&With(labels, [("direction", direction)]))?,
                    MetricType::Counter,
                    Num::Int(value),
                )?;
            }
        }
    }
    Ok(())
}
