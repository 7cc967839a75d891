//! The JSON API, version 1: `GET /api/v1/containers`.
//!
//! One document per request with, per container (every cgroup the agent
//! reads files of or has kernel series for), its labels and the current
//! values of its counters, gauges and histograms, as the Prometheus
//! exposition has them. Counters are totals since the agent (or the cgroup)
//! started: a client such as `agent top` derives rates and quantiles from two
//! documents itself, so the agent keeps no state per viewer.
//!
//! The same types serialize the document (borrowing from the collector's
//! [`View`]) and deserialize it in `agent top`. Fields are only ever added
//! within a version; a client ignores fields it does not know.

use std::borrow::Cow;

use agent_ebpf::{
    disk::DiskSeries,
    histogram::{self, SLOTS},
    tcp::{TcpSeries, Traffic},
};
use serde::{Deserialize, Serialize};

use crate::{
    cgroupfs::{CgroupStats, pressure::Stall},
    collector::View,
    labels::CgroupLabels,
    node::NodeTotals,
    probes::ProbeState,
};

/// The version in the path and in [`Snapshot::api_version`].
pub const API_VERSION: u32 = 1;
/// Where the document is served.
pub const CONTAINERS_PATH: &str = "/api/v1/containers";

/// The whole document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot<'a> {
    pub api_version: u32,
    pub agent: AgentStatus<'a>,
    pub node: Node,
    /// Upper bounds, in seconds, of every histogram's buckets but the last
    /// (which is `+Inf`): the kernel's own log-linear bounds.
    pub bucket_bounds_seconds: Cow<'a, [f64]>,
    pub containers: Vec<Container<'a>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentStatus<'a> {
    pub version: Cow<'a, str>,
    /// Seconds since the agent started, when this document was collected: a
    /// monotonic clock to compute rates with. A smaller value than in an
    /// earlier document means the agent restarted.
    pub uptime_seconds: f64,
    /// Time this collection spent reading the kernel maps and cgroup files.
    pub collect_seconds: f64,
    pub probes: Vec<Probe<'a>>,
    /// Inserts into the bounded kernel maps that failed because they were full.
    pub map_full_total: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probe<'a> {
    pub signal: Cow<'a, str>,
    pub up: bool,
    /// Why a probe is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Cow<'a, str>>,
}

/// Node-wide totals, from `/proc`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Node {
    /// `cpus`, `cpu_busy_seconds`, `memory_total_bytes`, `memory_available_bytes`.
    #[serde(flatten)]
    pub totals: NodeTotals,
    /// `/proc/pressure`, totals.
    pub pressure: Pressure,
}

/// Stall totals of the three pressure resources.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Pressure {
    pub cpu: Stalled,
    pub memory: Stalled,
    pub io: Stalled,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Stalled {
    pub some_seconds: Option<f64>,
    pub full_seconds: Option<f64>,
}

/// One cgroup: its labels and every series the agent has for it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Container<'a> {
    /// The path below the cgroup2 root, `/` for the root.
    pub cgroup: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos_class: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<Cow<'a, str>>,
    /// Kubernetes names, from the container runtime (CRI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Cow<'a, str>>,
    /// The Kubernetes container name; `POD` for the pod's sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pressure: Option<Pressure>,
    /// Run-queue latency: wakeup or preemption → running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runqueue: Option<Hist<'a>>,
    /// Reclaim stalls by kind (`direct`, `memcg`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reclaim: Vec<Reclaim<'a>>,
    /// Disk I/O by device and op.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disk: Vec<Disk<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<Tcp<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
}

/// `cpu.stat` and the CPU limit.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Cpu {
    pub usage_seconds: Option<f64>,
    pub user_seconds: Option<f64>,
    pub system_seconds: Option<f64>,
    pub periods: Option<u64>,
    pub throttled_periods: Option<u64>,
    pub throttled_seconds: Option<f64>,
    /// Quota / period; absent when unlimited.
    pub limit_cores: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Memory {
    pub usage_bytes: Option<u64>,
    pub working_set_bytes: Option<u64>,
    pub rss_bytes: Option<u64>,
    pub cache_bytes: Option<u64>,
    pub swap_bytes: Option<u64>,
    /// Absent when unlimited.
    pub limit_bytes: Option<u64>,
    pub oom_kills: Option<u64>,
    pub major_page_faults: Option<u64>,
}

/// A latency histogram: per-bucket counts (not cumulative) on
/// [`Snapshot::bucket_bounds_seconds`], trailing empty buckets left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hist<'a> {
    pub count: u64,
    pub sum_seconds: f64,
    pub buckets: Cow<'a, [u64]>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reclaim<'a> {
    pub kind: Cow<'a, str>,
    pub stall: Hist<'a>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Disk<'a> {
    pub device: Cow<'a, str>,
    pub op: Cow<'a, str>,
    /// Issue → completion.
    pub latency: Hist<'a>,
    pub requests: u64,
    pub bytes: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tcp<'a> {
    pub connect: Hist<'a>,
    pub rtt: Hist<'a>,
    pub connect_failures: u64,
    pub retransmits: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Network {
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub rx_packets: u64,
}

impl<'a> Hist<'a> {
    /// A kernel histogram, borrowed.
    pub fn of(hist: &'a histogram::Histogram) -> Self {
        let used = hist
            .buckets
            .iter()
            .rposition(|&n| n != 0)
            .map_or(0, |last| last + 1);
        Self {
            count: hist.count(),
            sum_seconds: hist.sum_ns as f64 / 1e9,
            buckets: Cow::Borrowed(hist.buckets.get(..used).unwrap_or_default()),
        }
    }
}

/// The bounds of every bucket but `+Inf`, in seconds.
pub fn bucket_bounds_seconds() -> Vec<f64> {
    (0..SLOTS)
        .filter_map(histogram::upper_bound_ns)
        .map(|ns| ns as f64 / 1e9)
        .collect()
}

fn stalled(stall: &Stall) -> Stalled {
    Stalled {
        some_seconds: stall.some_seconds,
        full_seconds: stall.full_seconds,
    }
}

fn pressure(stalls: &[Stall; 3]) -> Pressure {
    let [cpu, memory, io] = stalls;
    Pressure {
        cpu: stalled(cpu),
        memory: stalled(memory),
        io: stalled(io),
    }
}

impl<'a> Container<'a> {
    fn new(labels: &'a CgroupLabels) -> Self {
        let CgroupLabels {
            cgroup,
            container_id,
            pod_uid,
            qos_class,
            systemd_unit,
            kube,
            omit_cgroup: _,
            hidden: _,
        } = labels;
        let kube = kube.as_deref();
        Self {
            cgroup: Cow::Borrowed(cgroup),
            container_id: container_id.as_deref().map(Cow::Borrowed),
            pod_uid: pod_uid.as_deref().map(Cow::Borrowed),
            qos_class: qos_class.map(|q| Cow::Borrowed(q.as_str())),
            systemd_unit: systemd_unit.as_deref().map(Cow::Borrowed),
            namespace: kube.map(|k| Cow::Borrowed(k.namespace.as_str())),
            pod: kube.map(|k| Cow::Borrowed(k.pod.as_str())),
            container: kube.and_then(|k| k.container.as_deref()).map(Cow::Borrowed),
            image: kube.and_then(|k| k.image.as_deref()).map(Cow::Borrowed),
            ..Self::default()
        }
    }

    fn set_files(&mut self, stats: &CgroupStats) {
        let cpu = &stats.cpu;
        self.cpu = Some(Cpu {
            usage_seconds: cpu.usage_seconds,
            user_seconds: cpu.user_seconds,
            system_seconds: cpu.system_seconds,
            periods: cpu.periods,
            throttled_periods: cpu.throttled_periods,
            throttled_seconds: cpu.throttled_seconds,
            limit_cores: cpu.limit_cores,
        });
        let memory = &stats.memory;
        let [_low, _high, _max, _oom, oom_kill] = memory.events;
        self.memory = Some(Memory {
            usage_bytes: memory.usage_bytes,
            working_set_bytes: memory.working_set_bytes,
            rss_bytes: memory.rss_bytes,
            cache_bytes: memory.cache_bytes,
            swap_bytes: memory.swap_bytes,
            limit_bytes: memory.limit_bytes,
            oom_kills: oom_kill,
            major_page_faults: memory.major_faults,
        });
        self.pressure = Some(pressure(&stats.pressure));
    }

    fn set_disk(&mut self, device: &'a str, op: &'static str, series: &'a DiskSeries) {
        self.disk.push(Disk {
            device: Cow::Borrowed(device),
            op: Cow::Borrowed(op),
            latency: Hist::of(&series.latency),
            requests: series.requests,
            bytes: series.bytes,
            errors: series.errors,
        });
    }

    fn set_tcp(&mut self, series: &'a TcpSeries) {
        self.tcp = Some(Tcp {
            connect: Hist::of(&series.connect),
            rtt: Hist::of(&series.rtt),
            connect_failures: series.connect_failures,
            retransmits: series.retransmits,
            resets_sent: series.resets_sent,
            resets_received: series.resets_received,
        });
    }

    fn set_network(&mut self, traffic: &Traffic) {
        self.network = Some(Network {
            tx_bytes: traffic.tx_bytes,
            rx_bytes: traffic.rx_bytes,
            tx_packets: traffic.tx_packets,
            rx_packets: traffic.rx_packets,
        });
    }
}

/// The document for one collection, borrowing from it.
pub fn snapshot<'a>(
    view: &'a View<'a>,
    node: &NodeTotals,
    uptime_seconds: f64,
    bounds: &'a [f64],
) -> Snapshot<'a> {
    // Containers in cgroup-path order; each series finds its container by
    // path (rows of one signal come in map order, not path order).
    let mut containers: Vec<Container<'a>> = Vec::new();
    fn entry<'a, 'c>(
        containers: &'c mut Vec<Container<'a>>,
        labels: &'a CgroupLabels,
    ) -> &'c mut Container<'a> {
        let at = match containers.binary_search_by(|c| c.cgroup.as_ref().cmp(&labels.cgroup)) {
            Ok(at) => at,
            Err(at) => {
                containers.insert(at, Container::new(labels));
                at
            }
        };
        &mut containers[at]
    }
    for (labels, stats) in view.file_stats() {
        entry(&mut containers, labels).set_files(stats);
    }
    for (labels, hist) in view.runqueue() {
        entry(&mut containers, labels).runqueue = Some(Hist::of(hist));
    }
    for (labels, kind, hist) in view.reclaim() {
        entry(&mut containers, labels).reclaim.push(Reclaim {
            kind: Cow::Borrowed(kind),
            stall: Hist::of(hist),
        });
    }
    for (labels, device, op, series) in view.disk_series() {
        entry(&mut containers, labels).set_disk(device, op, series);
    }
    for (labels, series) in view.tcp() {
        entry(&mut containers, labels).set_tcp(series);
    }
    for (labels, traffic) in view.traffic() {
        entry(&mut containers, labels).set_network(traffic);
    }

    Snapshot {
        api_version: API_VERSION,
        agent: AgentStatus {
            version: Cow::Borrowed(crate::exposition::VERSION),
            uptime_seconds,
            collect_seconds: view.collect_duration.as_secs_f64(),
            probes: view
                .probes
                .iter()
                .map(|status| Probe {
                    signal: Cow::Borrowed(status.signal.name()),
                    up: status.state == ProbeState::Up,
                    reason: match &status.state {
                        ProbeState::Up => None,
                        ProbeState::Down(why) => Some(Cow::Borrowed(why)),
                    },
                })
                .collect(),
            map_full_total: view.map_full.iter().map(|(_, n)| n).sum(),
        },
        node: Node {
            totals: *node,
            pressure: pressure(&view.node_pressure),
        },
        bucket_bounds_seconds: Cow::Borrowed(bounds),
        containers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_leaves_out_trailing_empty_buckets() {
        let mut kernel = histogram::Histogram::ZERO;
        kernel.buckets[3] = 2;
        kernel.buckets[5] = 1;
        kernel.sum_ns = 3_000;
        let hist = Hist::of(&kernel);
        assert_eq!(hist.count, 3);
        assert_eq!(hist.buckets.as_ref(), &[0, 0, 0, 2, 0, 1]);
        assert!((hist.sum_seconds - 3e-6).abs() < 1e-12);
        assert!(Hist::of(&histogram::Histogram::ZERO).buckets.is_empty());
    }

    #[test]
    fn bounds_are_the_kernel_bounds_without_inf() {
        let bounds = bucket_bounds_seconds();
        assert_eq!(bounds.len(), SLOTS - 1);
        assert!((bounds[0] - 1024e-9).abs() < 1e-15);
        assert!(bounds.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_document_round_trips_and_tolerates_unknown_fields() {
        let mut kernel = histogram::Histogram::ZERO;
        kernel.buckets[1] = 4;
        let labels = CgroupLabels::from_path(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0a1b2c3d_4e5f_4a5b_8c9d_0e1f2a3b4c5d.slice/cri-containerd-abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789.scope",
        );
        let mut container = Container::new(&labels);
        container.runqueue = Some(Hist::of(&kernel));
        let doc = Snapshot {
            api_version: API_VERSION,
            agent: AgentStatus {
                version: Cow::Borrowed("0.1.0"),
                uptime_seconds: 12.5,
                collect_seconds: 0.002,
                probes: vec![Probe {
                    signal: Cow::Borrowed("disk"),
                    up: false,
                    reason: Some(Cow::Borrowed("no block tracepoints")),
                }],
                map_full_total: 0,
            },
            node: Node::default(),
            bucket_bounds_seconds: Cow::Owned(bucket_bounds_seconds()),
            containers: vec![container],
        };
        let text = serde_json::to_string(&doc).expect("serializes");
        let mut value: serde_json::Value = serde_json::from_str(&text).expect("is JSON");
        value["containers"][0]["added_later"] = serde_json::json!({"x": 1});
        let back: Snapshot<'static> = serde_json::from_value(value).expect("parses back");
        let c = &back.containers[0];
        assert_eq!(
            c.container_id.as_deref(),
            Some("abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789")
        );
        assert_eq!(c.qos_class.as_deref(), Some("besteffort"));
        assert_eq!(c.runqueue.as_ref().map(|h| h.count), Some(4));
        assert!(c.disk.is_empty() && c.tcp.is_none());
        assert_eq!(
            back.agent.probes[0].reason.as_deref(),
            Some("no block tracepoints")
        );
    }
}
