//! The view model of `agent top`: from two API documents to rows of rates,
//! quantiles and gauges, sorted, filtered and fitted to a width. Plain data,
//! no terminal: the live view and `--once` both draw from a [`Frame`].

use std::{cmp::Ordering, fmt::Write as _};

use crate::api::{Container, Hist, Snapshot};

/// A column of the table. `Name` is always shown; the others only when
/// their signal exists (see [`Frame::columns`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Col {
    Name,
    Cpu,
    Limit,
    Throttled,
    RqP50,
    RqP99,
    Mem,
    MemPct,
    MemPsi,
    ReclaimP99,
    DiskP99,
    Iops,
    RttP99,
    Retrans,
    ConnectP99,
}

/// How a column's value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Cores,
    Percent,
    Seconds,
    Bytes,
    PerSecond,
}

/// How bad a value is, for colour; the value itself is always printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Normal,
    Warning,
    Critical,
}

/// How a column is headed, named, sized, written and coloured.
struct Spec {
    col: Col,
    title: &'static str,
    key: &'static str,
    json: &'static str,
    width: u16,
    /// Narrow terminals drop the highest first.
    keep: u8,
    unit: Unit,
    /// (warning, critical), for values where larger is worse.
    thresholds: Option<(f64, f64)>,
}

#[expect(
    clippy::too_many_arguments,
    reason = "one line of the column table; a struct literal per column reads worse"
)]
const fn spec(
    col: Col,
    title: &'static str,
    key: &'static str,
    json: &'static str,
    width: u16,
    keep: u8,
    unit: Unit,
    thresholds: Option<(f64, f64)>,
) -> Spec {
    Spec {
        col,
        title,
        key,
        json,
        width,
        keep,
        unit,
        thresholds,
    }
}

/// Every column but `Name`, in display order: (column, heading, `--sort`
/// key, JSON key, width, drop priority, unit, warning and critical levels).
#[rustfmt::skip]
const SPECS: [Spec; 14] = [
    spec(Col::Cpu, "CPU", "cpu", "cpu_cores", 6, 1, Unit::Cores, None),
    spec(Col::Limit, "LIMIT", "limit", "cpu_limit_cores", 6, 6, Unit::Cores, None),
    spec(Col::Throttled, "THR%", "throttled", "throttled_percent", 6, 2, Unit::Percent, Some((5.0, 25.0))),
    spec(Col::RqP50, "RQ p50", "rq-p50", "runqueue_p50_seconds", 7, 9, Unit::Seconds, Some((0.000_5, 0.005))),
    spec(Col::RqP99, "RQ p99", "rq-p99", "runqueue_p99_seconds", 7, 3, Unit::Seconds, Some((0.001, 0.01))),
    spec(Col::Mem, "MEM", "mem", "memory_working_set_bytes", 7, 5, Unit::Bytes, None),
    spec(Col::MemPct, "MEM%", "mem-pct", "memory_limit_percent", 6, 4, Unit::Percent, Some((80.0, 95.0))),
    spec(Col::MemPsi, "MPSI%", "mem-psi", "memory_pressure_some_percent", 6, 7, Unit::Percent, Some((1.0, 10.0))),
    spec(Col::ReclaimP99, "RCL p99", "reclaim-p99", "reclaim_stall_p99_seconds", 8, 8, Unit::Seconds, Some((0.001, 0.01))),
    spec(Col::DiskP99, "IO p99", "io-p99", "disk_io_p99_seconds", 7, 10, Unit::Seconds, Some((0.01, 0.1))),
    spec(Col::Iops, "IOPS", "iops", "disk_iops", 6, 11, Unit::PerSecond, None),
    spec(Col::RttP99, "RTT p99", "rtt-p99", "tcp_rtt_p99_seconds", 8, 12, Unit::Seconds, Some((0.01, 0.1))),
    spec(Col::Retrans, "RETX/s", "retrans", "tcp_retransmits_per_second", 7, 13, Unit::PerSecond, Some((1.0, 10.0))),
    spec(Col::ConnectP99, "CONN p99", "connect-p99", "tcp_connect_p99_seconds", 9, 14, Unit::Seconds, Some((0.01, 0.1))),
];

/// The narrowest the name column gets before other columns are dropped.
pub const NAME_MIN_WIDTH: u16 = 20;

impl Col {
    /// Every column, in display order.
    pub const ALL: [Col; 15] = [
        Col::Name,
        Col::Cpu,
        Col::Limit,
        Col::Throttled,
        Col::RqP50,
        Col::RqP99,
        Col::Mem,
        Col::MemPct,
        Col::MemPsi,
        Col::ReclaimP99,
        Col::DiskP99,
        Col::Iops,
        Col::RttP99,
        Col::Retrans,
        Col::ConnectP99,
    ];

    fn spec(self) -> Option<&'static Spec> {
        SPECS.iter().find(|s| s.col == self)
    }

    pub fn title(self) -> &'static str {
        self.spec().map_or("NAME", |s| s.title)
    }

    /// The name `--sort` takes.
    pub fn key(self) -> &'static str {
        self.spec().map_or("name", |s| s.key)
    }

    /// The key of the value in `--output json`.
    pub fn json_key(self) -> &'static str {
        self.spec().map_or("name", |s| s.json)
    }

    /// Cells of this column are this wide (the name column takes the rest).
    pub fn width(self) -> u16 {
        self.spec().map_or(NAME_MIN_WIDTH, |s| s.width)
    }

    /// For `--sort`.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.key().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| {
                let keys: Vec<&str> = Self::ALL.iter().map(|c| c.key()).collect();
                format!("no column `{text}`; columns: {}", keys.join(", "))
            })
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }

    /// How bad `value` is in this column.
    pub fn severity(self, value: Option<f64>) -> Severity {
        match (self.spec().and_then(|s| s.thresholds), value) {
            (Some((_, critical)), Some(v)) if v >= critical => Severity::Critical,
            (Some((warning, _)), Some(v)) if v >= warning => Severity::Warning,
            _ => Severity::Normal,
        }
    }

    /// `value` as the table shows it; `-` when unknown.
    pub fn format(self, value: Option<f64>, out: &mut String) {
        out.clear();
        let (Some(spec), Some(v)) = (self.spec(), value) else {
            out.push('-');
            return;
        };
        let _ = match spec.unit {
            Unit::Cores => write!(out, "{v:.2}"),
            Unit::Percent if v >= 99.95 => write!(out, "{v:.0}"),
            Unit::Percent => write!(out, "{v:.1}"),
            Unit::PerSecond if v >= 100.0 => write!(out, "{v:.0}"),
            Unit::PerSecond => write!(out, "{v:.1}"),
            Unit::Seconds => write_seconds(v, out),
            Unit::Bytes => write_bytes(v, out),
        };
    }
}

fn write_seconds(v: f64, out: &mut String) -> std::fmt::Result {
    if v == 0.0 {
        write!(out, "0")
    } else if v < 1e-3 {
        write!(out, "{:.0}µs", v * 1e6)
    } else if v < 1.0 {
        let ms = v * 1e3;
        if ms < 10.0 {
            write!(out, "{ms:.1}ms")
        } else {
            write!(out, "{ms:.0}ms")
        }
    } else {
        write!(out, "{v:.2}s")
    }
}

fn write_bytes(v: f64, out: &mut String) -> std::fmt::Result {
    const UNITS: [&str; 5] = ["B", "Ki", "Mi", "Gi", "Ti"];
    let mut v = v;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    let suffix = UNITS[unit];
    if unit == 0 || v >= 100.0 {
        write!(out, "{v:.0}{suffix}")
    } else {
        write!(out, "{v:.1}{suffix}")
    }
}

/// One container's row: its name, cgroup, and a value per column.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub cgroup: String,
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
    pub systemd_unit: Option<String>,
    /// Kubernetes names, when the agent has them from the container runtime.
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
    /// Indexed like [`Col::ALL`]; `values[0]` (the name) is unused.
    pub values: [Option<f64>; Col::ALL.len()],
}

impl Row {
    pub fn value(&self, col: Col) -> Option<f64> {
        self.values.get(col.index()).copied().flatten()
    }

    /// A row of cgroup `/name` with `values` in their columns.
    #[cfg(test)]
    pub fn with(name: &str, values: &[(Col, f64)]) -> Self {
        let mut all = [None; Col::ALL.len()];
        for (col, v) in values {
            all[col.index()] = Some(*v);
        }
        Self {
            name: name.to_owned(),
            cgroup: format!("/{name}"),
            container_id: None,
            pod_uid: None,
            systemd_unit: None,
            namespace: None,
            pod: None,
            container: None,
            values: all,
        }
    }
}

/// The node and the agent, above the table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Header {
    pub agent_version: String,
    pub cpus: Option<u32>,
    /// Cores busy over the interval.
    pub cpu_used: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    /// Share of the interval some task was stalled, per resource, in %.
    pub pressure_some_percent: [Option<f64>; 3],
    /// (signal, up, why not).
    pub probes: Vec<(String, bool, Option<String>)>,
    pub collect_seconds: f64,
    /// Seconds between the two documents; `None` on the first.
    pub interval_seconds: Option<f64>,
}

/// Everything one screen shows, before sorting and fitting.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frame {
    pub header: Header,
    /// The columns whose signals exist, in display order, `Name` first.
    pub columns: Vec<Col>,
    pub rows: Vec<Row>,
}

/// The name a person knows a cgroup by: `namespace/pod/container` from the
/// container runtime, else the systemd unit, or the pod and container ids
/// (shortened), or its path.
pub fn display_name(c: &Container<'_>) -> String {
    let short = |id: &str, n: usize| id.chars().take(n).collect::<String>();
    if let (Some(namespace), Some(pod)) = (&c.namespace, &c.pod) {
        return match &c.container {
            Some(container) => format!("{namespace}/{pod}/{container}"),
            None => format!("{namespace}/{pod}"),
        };
    }
    match (&c.container_id, &c.pod_uid, &c.systemd_unit) {
        (Some(id), Some(pod), _) => format!("pod {}/{}", short(pod, 8), short(id, 12)),
        (Some(id), None, _) => short(id, 12),
        (None, Some(pod), _) => format!("pod {}", short(pod, 8)),
        (None, None, Some(unit)) if c.cgroup.ends_with(unit.as_ref()) => unit.to_string(),
        _ => c.cgroup.to_string(),
    }
}

/// `cur - prev` of a histogram, per bucket; `cur` alone if a bucket went
/// down (the cgroup was recreated, or the agent restarted).
fn delta(cur: &Hist<'_>, prev: Option<&Hist<'_>>) -> Vec<u64> {
    let Some(prev) = prev else {
        return cur.buckets.to_vec();
    };
    let mut out = Vec::with_capacity(cur.buckets.len());
    for (i, &now) in cur.buckets.iter().enumerate() {
        let before = prev.buckets.get(i).copied().unwrap_or(0);
        match now.checked_sub(before) {
            Some(d) => out.push(d),
            None => return cur.buckets.to_vec(),
        }
    }
    if prev.buckets.len() > cur.buckets.len() {
        return cur.buckets.to_vec();
    }
    out
}

/// Adds `other` into `into`, bucket by bucket.
fn merge(into: &mut Vec<u64>, other: &[u64]) {
    if into.len() < other.len() {
        into.resize(other.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(other) {
        *a += b;
    }
}

/// The `q` quantile of per-bucket counts on `bounds` (the last bucket is
/// `+Inf`), interpolated linearly within its bucket as Prometheus'
/// `histogram_quantile` does; the highest finite bound for `+Inf`. `None`
/// without samples.
pub fn quantile(q: f64, buckets: &[u64], bounds: &[f64]) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut seen = 0u64;
    for (i, &n) in buckets.iter().enumerate() {
        if n == 0 {
            continue;
        }
        if (seen + n) as f64 >= rank {
            let Some(&upper) = bounds.get(i) else {
                return bounds.last().copied();
            };
            let lower = if i == 0 {
                0.0
            } else {
                bounds.get(i - 1).copied().unwrap_or(0.0)
            };
            let within = (rank - seen as f64) / n as f64;
            return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
        }
        seen += n;
    }
    bounds.last().copied()
}

fn rate(cur: Option<f64>, prev: Option<f64>, seconds: Option<f64>) -> Option<f64> {
    let (cur, prev, seconds) = (cur?, prev?, seconds?);
    (cur >= prev).then(|| (cur - prev) / seconds)
}

fn count_rate(cur: Option<u64>, prev: Option<u64>, seconds: Option<f64>) -> Option<f64> {
    rate(cur.map(|v| v as f64), prev.map(|v| v as f64), seconds)
}

/// The signals in `snapshot` that are up.
fn probe_up(snapshot: &Snapshot<'_>, signal: &str) -> bool {
    snapshot
        .agent
        .probes
        .iter()
        .any(|p| p.signal == signal && p.up)
}

/// The frame between two documents; rates and quantiles are over the time
/// between them, and unknown on the first or after the agent restarted.
pub fn frame(prev: Option<&Snapshot<'_>>, cur: &Snapshot<'_>) -> Frame {
    let prev = prev.filter(|p| p.agent.uptime_seconds < cur.agent.uptime_seconds);
    let seconds = prev.map(|p| cur.agent.uptime_seconds - p.agent.uptime_seconds);
    let bounds = cur.bucket_bounds_seconds.as_ref();

    let node = &cur.node.totals;
    let pressure = |pick: fn(&crate::api::Pressure) -> crate::api::Stalled| {
        rate(
            pick(&cur.node.pressure).some_seconds,
            prev.and_then(|p| pick(&p.node.pressure).some_seconds),
            seconds,
        )
        .map(|r| r * 100.0)
    };
    let header = Header {
        agent_version: cur.agent.version.to_string(),
        cpus: node.cpus,
        cpu_used: rate(
            node.cpu_busy_seconds,
            prev.and_then(|p| p.node.totals.cpu_busy_seconds),
            seconds,
        ),
        memory_used_bytes: node
            .memory_total_bytes
            .zip(node.memory_available_bytes)
            .map(|(total, available)| total.saturating_sub(available)),
        memory_total_bytes: node.memory_total_bytes,
        pressure_some_percent: [
            pressure(|p| p.cpu),
            pressure(|p| p.memory),
            pressure(|p| p.io),
        ],
        probes: cur
            .agent
            .probes
            .iter()
            .map(|p| {
                (
                    p.signal.to_string(),
                    p.up,
                    p.reason.as_deref().map(str::to_owned),
                )
            })
            .collect(),
        collect_seconds: cur.agent.collect_seconds,
        interval_seconds: seconds,
    };

    let any = |f: fn(&Container<'_>) -> bool| cur.containers.iter().any(f);
    let columns = Col::ALL
        .into_iter()
        .filter(|col| match col {
            Col::Name => true,
            Col::Cpu | Col::Limit | Col::Throttled => any(|c| c.cpu.is_some()),
            Col::Mem | Col::MemPct => any(|c| c.memory.is_some()),
            Col::MemPsi => any(|c| c.pressure.is_some_and(|p| p.memory.some_seconds.is_some())),
            Col::RqP50 | Col::RqP99 => probe_up(cur, "runqueue"),
            Col::ReclaimP99 => probe_up(cur, "reclaim"),
            Col::DiskP99 | Col::Iops => probe_up(cur, "disk"),
            Col::RttP99 | Col::Retrans | Col::ConnectP99 => probe_up(cur, "tcp"),
        })
        .collect();

    let before = |c: &Container<'_>| -> Option<&Container<'_>> {
        let p = prev?;
        let at = p
            .containers
            .binary_search_by(|x| x.cgroup.as_ref().cmp(c.cgroup.as_ref()))
            .ok()?;
        p.containers.get(at)
    };
    let rows = cur
        .containers
        .iter()
        .map(|c| row(c, before(c), seconds, bounds))
        .collect();
    Frame {
        header,
        columns,
        rows,
    }
}

fn row(c: &Container<'_>, p: Option<&Container<'_>>, seconds: Option<f64>, bounds: &[f64]) -> Row {
    let mut values = [None; Col::ALL.len()];
    let mut set = |col: Col, v: Option<f64>| {
        if let Some(slot) = values.get_mut(col.index()) {
            *slot = v.filter(|v| v.is_finite());
        }
    };
    // Only once there is an earlier document: quantiles of all time would
    // look like the last interval's and mislead.
    let seconds = seconds.filter(|_| p.is_some());
    let hist_q = |q: f64, buckets: &[u64]| seconds.and(quantile(q, buckets, bounds));

    if let Some(cpu) = &c.cpu {
        let pc = p.and_then(|p| p.cpu);
        set(
            Col::Cpu,
            rate(cpu.usage_seconds, pc.and_then(|p| p.usage_seconds), seconds),
        );
        set(Col::Limit, cpu.limit_cores);
        let periods = count_rate(cpu.periods, pc.and_then(|p| p.periods), seconds);
        let throttled = count_rate(
            cpu.throttled_periods,
            pc.and_then(|p| p.throttled_periods),
            seconds,
        );
        set(
            Col::Throttled,
            periods
                .zip(throttled)
                .filter(|(periods, _)| *periods > 0.0)
                .map(|(periods, throttled)| throttled / periods * 100.0),
        );
    }
    if let Some(memory) = &c.memory {
        let used = memory.working_set_bytes.or(memory.usage_bytes);
        set(Col::Mem, used.map(|b| b as f64));
        set(
            Col::MemPct,
            used.zip(memory.limit_bytes)
                .filter(|(_, limit)| *limit > 0)
                .map(|(used, limit)| used as f64 / limit as f64 * 100.0),
        );
    }
    if let Some(pressure) = &c.pressure {
        let before = p
            .and_then(|p| p.pressure)
            .and_then(|p| p.memory.some_seconds);
        set(
            Col::MemPsi,
            rate(pressure.memory.some_seconds, before, seconds).map(|r| r * 100.0),
        );
    }
    if let Some(rq) = &c.runqueue {
        let d = delta(rq, p.and_then(|p| p.runqueue.as_ref()));
        set(Col::RqP50, hist_q(0.5, &d));
        set(Col::RqP99, hist_q(0.99, &d));
    }
    if !c.reclaim.is_empty() {
        let mut all = Vec::new();
        for r in &c.reclaim {
            let before = p.and_then(|p| p.reclaim.iter().find(|x| x.kind == r.kind));
            merge(&mut all, &delta(&r.stall, before.map(|x| &x.stall)));
        }
        set(Col::ReclaimP99, hist_q(0.99, &all));
    }
    if !c.disk.is_empty() {
        let mut all = Vec::new();
        let mut requests = 0.0;
        for d in &c.disk {
            let before =
                p.and_then(|p| p.disk.iter().find(|x| x.device == d.device && x.op == d.op));
            merge(&mut all, &delta(&d.latency, before.map(|x| &x.latency)));
            requests += count_rate(
                Some(d.requests),
                Some(before.map_or(0, |x| x.requests)),
                seconds,
            )
            .unwrap_or(0.0);
        }
        set(Col::DiskP99, hist_q(0.99, &all));
        set(Col::Iops, seconds.map(|_| requests));
    }
    if let Some(tcp) = &c.tcp {
        let pt = p.and_then(|p| p.tcp.as_ref());
        set(
            Col::RttP99,
            hist_q(0.99, &delta(&tcp.rtt, pt.map(|t| &t.rtt))),
        );
        set(
            Col::ConnectP99,
            hist_q(0.99, &delta(&tcp.connect, pt.map(|t| &t.connect))),
        );
        set(
            Col::Retrans,
            count_rate(Some(tcp.retransmits), pt.map(|t| t.retransmits), seconds),
        );
    }
    Row {
        name: display_name(c),
        cgroup: c.cgroup.to_string(),
        container_id: c.container_id.as_deref().map(str::to_owned),
        pod_uid: c.pod_uid.as_deref().map(str::to_owned),
        systemd_unit: c.systemd_unit.as_deref().map(str::to_owned),
        namespace: c.namespace.as_deref().map(str::to_owned),
        pod: c.pod.as_deref().map(str::to_owned),
        container: c.container.as_deref().map(str::to_owned),
        values,
    }
}

/// Sorts `rows` by `col`: names A→Z, values largest first, unknown last;
/// `reverse` flips the order of the known ones.
pub fn sort(rows: &mut [Row], col: Col, reverse: bool) {
    rows.sort_by(|a, b| {
        let order = if col == Col::Name {
            a.name.cmp(&b.name)
        } else {
            match (a.value(col), b.value(col)) {
                (Some(x), Some(y)) => y.partial_cmp(&x).unwrap_or(Ordering::Equal),
                (Some(_), None) => return Ordering::Less,
                (None, Some(_)) => return Ordering::Greater,
                (None, None) => Ordering::Equal,
            }
        };
        let order = if reverse { order.reverse() } else { order };
        order.then_with(|| a.name.cmp(&b.name))
    });
}

/// Whether `row` matches a filter: a case-insensitive substring of its name
/// or cgroup path; an empty filter matches all.
pub fn matches(row: &Row, filter: &str) -> bool {
    if filter.is_empty() {
        return true;
    }
    let filter = filter.to_lowercase();
    row.name.to_lowercase().contains(&filter) || row.cgroup.to_lowercase().contains(&filter)
}

/// The columns of `available` that fit in `width` cells (one space between
/// columns), dropping the least important first; `Name` always stays, at
/// least [`NAME_MIN_WIDTH`] wide.
pub fn fit(available: &[Col], width: u16) -> Vec<Col> {
    let mut by_keep: Vec<Col> = available
        .iter()
        .copied()
        .filter(|c| *c != Col::Name)
        .collect();
    by_keep.sort_by_key(|c| c.spec().map_or(0, |s| s.keep));
    let mut used = NAME_MIN_WIDTH;
    let mut kept = Vec::new();
    for col in by_keep {
        let need = col.width() + 1;
        if used + need > width {
            break;
        }
        used += need;
        kept.push(col);
    }
    Col::ALL
        .into_iter()
        .filter(|c| *c == Col::Name || kept.contains(c))
        .filter(|c| available.contains(c))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::{
        api::{self, AgentStatus, Cpu, Memory, Node, Probe, Tcp},
        node::NodeTotals,
    };

    fn hist(buckets: &[u64]) -> Hist<'static> {
        Hist {
            count: buckets.iter().sum(),
            sum_seconds: 0.0,
            buckets: Cow::Owned(buckets.to_vec()),
        }
    }

    fn container(cgroup: &str, usage: f64, periods: u64, throttled: u64) -> Container<'static> {
        Container {
            cgroup: Cow::Owned(cgroup.to_owned()),
            cpu: Some(Cpu {
                usage_seconds: Some(usage),
                periods: Some(periods),
                throttled_periods: Some(throttled),
                limit_cores: Some(0.5),
                ..Cpu::default()
            }),
            memory: Some(Memory {
                working_set_bytes: Some(300 << 20),
                limit_bytes: Some(400 << 20),
                ..Memory::default()
            }),
            ..Container::default()
        }
    }

    fn snapshot(uptime: f64, containers: Vec<Container<'static>>) -> Snapshot<'static> {
        Snapshot {
            api_version: api::API_VERSION,
            agent: AgentStatus {
                version: Cow::Borrowed("test"),
                uptime_seconds: uptime,
                collect_seconds: 0.001,
                probes: ["runqueue", "tcp"]
                    .into_iter()
                    .map(|s| Probe {
                        signal: Cow::Borrowed(s),
                        up: true,
                        reason: None,
                    })
                    .chain([Probe {
                        signal: Cow::Borrowed("disk"),
                        up: false,
                        reason: Some(Cow::Borrowed("no block tracepoints")),
                    }])
                    .collect(),
                map_full_total: 0,
            },
            node: Node {
                totals: NodeTotals {
                    cpus: Some(4),
                    cpu_busy_seconds: Some(uptime * 2.0),
                    ..NodeTotals::default()
                },
                ..Node::default()
            },
            bucket_bounds_seconds: Cow::Owned(api::bucket_bounds_seconds()),
            containers,
        }
    }

    #[test]
    fn rates_are_over_the_time_between_two_documents() {
        let prev = snapshot(10.0, vec![container("/a", 5.0, 100, 10)]);
        let cur = snapshot(12.0, vec![container("/a", 6.0, 120, 20)]);
        let frame = frame(Some(&prev), &cur);
        let row = &frame.rows[0];
        assert_eq!(row.value(Col::Cpu), Some(0.5));
        assert_eq!(row.value(Col::Throttled), Some(50.0));
        assert_eq!(row.value(Col::Limit), Some(0.5));
        assert_eq!(row.value(Col::MemPct), Some(75.0));
        assert_eq!(frame.header.cpu_used, Some(2.0));
        assert_eq!(frame.header.interval_seconds, Some(2.0));
    }

    #[test]
    fn the_first_document_has_gauges_but_no_rates_or_quantiles() {
        let mut c = container("/a", 5.0, 100, 10);
        c.runqueue = Some(hist(&[0, 5, 5]));
        let frame = frame(None, &snapshot(10.0, vec![c]));
        let row = &frame.rows[0];
        assert_eq!(row.value(Col::Cpu), None);
        assert_eq!(row.value(Col::RqP99), None);
        assert_eq!(row.value(Col::Limit), Some(0.5));
    }

    #[test]
    fn a_restarted_agent_is_not_a_negative_rate() {
        let prev = snapshot(100.0, vec![container("/a", 50.0, 100, 10)]);
        let cur = snapshot(3.0, vec![container("/a", 1.0, 10, 1)]);
        let frame = frame(Some(&prev), &cur);
        assert_eq!(frame.header.interval_seconds, None);
        assert_eq!(frame.rows[0].value(Col::Cpu), None);
    }

    #[test]
    fn quantiles_come_from_the_interval_not_all_time() {
        let bounds = api::bucket_bounds_seconds();
        let mut old = container("/a", 1.0, 0, 0);
        // Long ago: 1000 fast samples. In the interval: 10 slow ones.
        old.runqueue = Some(hist(&[1000]));
        let mut new = container("/a", 1.0, 0, 0);
        let mut buckets = vec![1000, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        buckets[10] = 10;
        new.runqueue = Some(hist(&buckets));
        let frame = frame(Some(&snapshot(1.0, vec![old])), &snapshot(2.0, vec![new]));
        let p50 = frame.rows[0].value(Col::RqP50).expect("a p50");
        assert!(p50 > bounds[9] && p50 <= bounds[10], "{p50}");
    }

    #[test]
    fn quantile_interpolates_within_a_bucket_and_caps_at_the_last_bound() {
        let bounds = [1.0, 2.0, 4.0];
        assert_eq!(quantile(0.5, &[0, 10], &bounds), Some(1.5));
        assert_eq!(quantile(1.0, &[0, 10], &bounds), Some(2.0));
        assert_eq!(quantile(0.5, &[10], &bounds), Some(0.5));
        assert_eq!(quantile(0.99, &[0, 0, 0, 5], &bounds), Some(4.0));
        assert_eq!(quantile(0.99, &[], &bounds), None);
        assert_eq!(quantile(0.99, &[0, 0], &bounds), None);
    }

    #[test]
    fn containers_that_come_and_go_between_documents() {
        let prev = snapshot(
            1.0,
            vec![
                container("/gone", 1.0, 0, 0),
                container("/stays", 1.0, 0, 0),
            ],
        );
        let cur = snapshot(
            2.0,
            vec![container("/new", 9.0, 0, 0), container("/stays", 1.5, 0, 0)],
        );
        let frame = frame(Some(&prev), &cur);
        let names: Vec<&str> = frame.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["/new", "/stays"]);
        assert_eq!(
            frame.rows[0].value(Col::Cpu),
            None,
            "no rate for a newcomer"
        );
        assert_eq!(frame.rows[1].value(Col::Cpu), Some(0.5));
    }

    #[test]
    fn only_columns_whose_signals_exist() {
        let frame = frame(None, &snapshot(1.0, vec![container("/a", 1.0, 0, 0)]));
        assert!(frame.columns.contains(&Col::RqP99));
        assert!(frame.columns.contains(&Col::RttP99));
        assert!(!frame.columns.contains(&Col::DiskP99), "disk is down");
        assert!(
            !frame.columns.contains(&Col::ReclaimP99),
            "reclaim is not loaded"
        );
        assert!(!frame.columns.contains(&Col::MemPsi), "no pressure files");
        assert_eq!(frame.columns[0], Col::Name);
    }

    #[test]
    fn sorting_puts_the_largest_first_and_unknown_last() {
        let mut rows: Vec<Row> = [
            ("b", Some(1.0)),
            ("a", None),
            ("c", Some(30.0)),
            ("d", Some(1.0)),
        ]
        .into_iter()
        .map(|(name, thr)| match thr {
            Some(t) => Row::with(name, &[(Col::Throttled, t)]),
            None => Row::with(name, &[]),
        })
        .collect();
        sort(&mut rows, Col::Throttled, false);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["c", "b", "d", "a"]);
        sort(&mut rows, Col::Throttled, true);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["b", "d", "c", "a"]);
        sort(&mut rows, Col::Name, false);
        assert_eq!(rows[0].name, "a");
        assert!(matches(&rows[2], "C") && !matches(&rows[2], "zz") && matches(&rows[2], ""));
    }

    #[test]
    fn a_narrow_terminal_drops_the_least_important_columns() {
        let all: Vec<Col> = Col::ALL.to_vec();
        let wide = fit(&all, 300);
        assert_eq!(wide, all);
        let narrow = fit(&all, 50);
        assert_eq!(narrow[0], Col::Name);
        assert!(narrow.contains(&Col::Cpu) && narrow.contains(&Col::Throttled));
        assert!(!narrow.contains(&Col::ConnectP99));
        let used: u16 = narrow.iter().map(|c| c.width() + 1).sum::<u16>() - 1;
        assert!(used <= 50, "{used}");
        assert_eq!(fit(&all, 10), [Col::Name]);
    }

    #[test]
    fn values_are_written_for_people() {
        let mut out = String::new();
        let mut f = |col: Col, v: Option<f64>| {
            col.format(v, &mut out);
            out.clone()
        };
        assert_eq!(f(Col::RqP99, Some(0.000_042)), "42µs");
        assert_eq!(f(Col::RqP99, Some(0.0123)), "12ms");
        assert_eq!(f(Col::RqP99, Some(0.0042)), "4.2ms");
        assert_eq!(f(Col::RqP99, Some(1.5)), "1.50s");
        assert_eq!(f(Col::Mem, Some(300.0 * 1024.0 * 1024.0)), "300Mi");
        assert_eq!(f(Col::Throttled, Some(12.34)), "12.3");
        assert_eq!(f(Col::Throttled, None), "-");
        assert_eq!(Col::Throttled.severity(Some(30.0)), Severity::Critical);
        assert_eq!(Col::Throttled.severity(Some(6.0)), Severity::Warning);
        assert_eq!(Col::Cpu.severity(Some(60.0)), Severity::Normal);
        assert_eq!(Col::parse("RQ-P99"), Ok(Col::RqP99));
        assert!(Col::parse("nope").is_err());
    }

    #[test]
    fn tcp_rates_and_quantiles() {
        let mut old = container("/a", 1.0, 0, 0);
        old.tcp = Some(Tcp {
            connect: hist(&[]),
            rtt: hist(&[]),
            connect_failures: 0,
            retransmits: 10,
            resets_sent: 0,
            resets_received: 0,
        });
        let mut new = old.clone();
        if let Some(tcp) = &mut new.tcp {
            tcp.retransmits = 30;
            tcp.rtt = hist(&[0, 0, 4]);
        }
        let frame = frame(Some(&snapshot(1.0, vec![old])), &snapshot(3.0, vec![new]));
        assert_eq!(frame.rows[0].value(Col::Retrans), Some(10.0));
        assert!(frame.rows[0].value(Col::RttP99).is_some());
        assert_eq!(frame.rows[0].value(Col::ConnectP99), None);
    }
}
