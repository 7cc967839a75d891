//! Command line: `agent run`, `agent top` and their flags. Every flag of
//! `run` can also be set from an environment variable, because a DaemonSet
//! configures through env.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use agent_ebpf::{
    disk::DEFAULT_MAX_INFLIGHT,
    runqueue::{DEFAULT_MAX_CGROUPS, DEFAULT_MAX_TASKS},
    tcp::{DEFAULT_MAX_SOCKETS, DEFAULT_RTT_INTERVAL_MS},
};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::probes::{
    Signal,
    runqueue::{AttachMode, Source},
};

#[derive(Debug, Parser)]
#[command(
    name = "agent",
    version,
    about = "stallwatch: what each container waits for (CPU run queue, throttling, memory, disk, network), from eBPF, for Prometheus"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the probes and serve /metrics, /healthz, /readyz and /api/v1/containers.
    Run(RunArgs),
    /// Show live what each container waits for, from the agent running on this node.
    Top(TopArgs),
    /// Suggest CPU and memory requests and limits per container, from a Prometheus server's history of the agent's series.
    Recommend(RecommendArgs),
}

#[derive(Debug, Args)]
pub struct RecommendArgs {
    /// The Prometheus server that scrapes the agents (its HTTP API).
    #[arg(long, env = "STALLWATCH_PROMETHEUS_URL")]
    pub prometheus: String,

    /// How much history to base the advice on (e.g. 7d, 24h).
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    pub window: Duration,

    /// Only containers of this namespace.
    #[arg(long)]
    pub namespace: Option<String>,

    /// Rate window and step of the usage quantiles: at least two scrape intervals.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub resolution: Duration,

    #[arg(long, value_enum, default_value_t = RecommendOutput::Table)]
    pub output: RecommendOutput,

    /// CPU request = p95 usage × (1 + this).
    #[arg(long, default_value_t = 0.15)]
    pub cpu_headroom: f64,

    /// Memory request = p95 working set × (1 + this); limit = peak × (1 + this).
    #[arg(long, default_value_t = 0.2)]
    pub memory_headroom: f64,

    /// A CPU limit is too low when throttled in more than this share of periods.
    #[arg(long, default_value_t = 0.1)]
    pub throttled_threshold: f64,

    /// ... and the node has CPU to give when its run-queue p99 (other containers) is under this.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    pub runqueue_low: Duration,

    /// Suggest removing a too-low CPU limit rather than raising it.
    #[arg(long)]
    pub remove_throttled_limits: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecommendOutput {
    Table,
    Json,
    /// Strategic-merge patches for each container's owner, for kubectl patch.
    Yaml,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address to serve HTTP on.
    #[arg(long, env = "STALLWATCH_LISTEN", default_value = "0.0.0.0:9740")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub collect: CollectArgs,

    #[command(flatten)]
    pub cri: CriArgs,

    /// Log format.
    #[arg(long, env = "STALLWATCH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Log filter, in `tracing` EnvFilter syntax (e.g. `info`, `agent=debug`).
    #[arg(long, env = "STALLWATCH_LOG", default_value = "info")]
    pub log_level: String,
}

/// What to measure and how: the probes, their map sizes and the cgroup tree.
/// Shared by `agent run` and `agent top --standalone`.
#[derive(Debug, Args)]
pub struct CollectArgs {
    /// The cgroup2 mount [default: found in /proc/self/mountinfo].
    #[arg(long, env = "STALLWATCH_CGROUP_ROOT")]
    pub cgroup_root: Option<PathBuf>,

    /// The tracefs mount [default: /sys/kernel/tracing or /sys/kernel/debug/tracing, mounted if absent].
    #[arg(long, env = "STALLWATCH_TRACEFS")]
    pub tracefs: Option<PathBuf>,

    /// Signals to measure, comma-separated.
    #[arg(long, env = "STALLWATCH_PROBES", value_enum, value_delimiter = ',', default_values_t = [Signal::Runqueue, Signal::Reclaim, Signal::Disk, Signal::Tcp])]
    pub probes: Vec<Signal>,

    /// How the run-queue probes attach: raw tracepoints (cheapest), classic
    /// tracepoints (offsets from tracefs), or auto (raw where possible).
    #[arg(long, env = "STALLWATCH_RUNQUEUE_ATTACH", value_enum, default_value_t = AttachMode::Auto)]
    pub runqueue_attach: AttachMode,

    /// Where run-queue waits come from: the kernel's own per-task accounting
    /// (sched-info: one probe per context switch, needs /sys/kernel/btf/vmlinux),
    /// timestamps at wakeup and switch (three probes), or auto (sched-info where possible).
    #[arg(long, env = "STALLWATCH_RUNQUEUE_SOURCE", value_enum, default_value_t = Source::Auto)]
    pub runqueue_source: Source,

    /// How the disk probes attach: raw tracepoints (BTF-typed, requests by
    /// address, Linux 5.11+), classic tracepoints (offsets from tracefs), or
    /// auto (raw where possible).
    #[arg(long, env = "STALLWATCH_DISK_ATTACH", value_enum, default_value_t = AttachMode::Auto)]
    pub disk_attach: AttachMode,

    /// Capacity of the per-task map: threads alive at once on the node.
    /// Preallocated, 88 bytes of kernel memory per entry; overflow is counted in stallwatch_map_full_total.
    #[arg(long, env = "STALLWATCH_MAX_TASKS", default_value_t = DEFAULT_MAX_TASKS,
          value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub max_tasks: u32,

    /// Capacity of each per-cgroup histogram map: cgroups with samples at once (for disk I/O: cgroup, device and op combinations).
    /// Preallocated: 480 bytes of kernel memory per cgroup for run-queue latency, twice that for reclaim stalls, about 900 bytes per entry
    /// for disk I/O and for TCP, and 32 bytes per CPU for traffic; overflow is counted in stallwatch_map_full_total.
    #[arg(long, env = "STALLWATCH_MAX_CGROUPS", default_value_t = DEFAULT_MAX_CGROUPS,
          value_parser = clap::value_parser!(u32).range(16..=1_048_576))]
    pub max_cgroups: u32,

    /// Slots for disk requests in flight: requests queued or on a device at once, node-wide (rounded up to a power of two).
    /// 40 bytes of kernel memory per slot; a request that finds its two slots taken evicts the older one, counted in stallwatch_map_full_total, and that one completes as stallwatch_disk_io_unmatched_total.
    #[arg(long, env = "STALLWATCH_MAX_DISK_INFLIGHT", default_value_t = DEFAULT_MAX_INFLIGHT,
          value_parser = clap::value_parser!(u32).range(256..=16_777_216))]
    pub max_disk_inflight: u32,

    /// TCP sockets followed at once, node-wide: those opened since the agent started and still open.
    /// Allocated as sockets open, about 100 bytes of kernel memory each; a socket beyond the bound gets no latency samples, counted in stallwatch_map_full_total.
    #[arg(long, env = "STALLWATCH_MAX_TCP_SOCKETS", default_value_t = DEFAULT_MAX_SOCKETS,
          value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub max_tcp_sockets: u32,

    /// Least time between two RTT samples of one TCP socket (e.g. 1s, 200ms): a socket's first RTT is always sampled,
    /// then at most one per interval, so a busy connection cannot dominate the histogram.
    #[arg(long, env = "STALLWATCH_TCP_RTT_INTERVAL", default_value = DEFAULT_RTT_INTERVAL, value_parser = parse_duration)]
    pub tcp_rtt_interval: Duration,

    /// Rescan the cgroup tree at least this often, to forget removed cgroups (e.g. 10s, 500ms, 1m).
    #[arg(long, env = "STALLWATCH_CGROUP_RESCAN_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub cgroup_rescan_interval: Duration,
}

/// Kubernetes names from the node's container runtime (CRI).
#[derive(Debug, Args)]
pub struct CriArgs {
    /// The container runtime's CRI socket [default: the first found of containerd's, k3s', microk8s', CRI-O's and cri-dockerd's].
    #[arg(long, env = "STALLWATCH_CRI_SOCKET")]
    pub cri_socket: Option<PathBuf>,

    /// Where the host's filesystem is mounted, to look for runtime sockets in (in a pod: a hostPath mount of /run).
    #[arg(long, env = "STALLWATCH_HOST_ROOT", default_value = "/")]
    pub host_root: PathBuf,

    /// Deadline of each call to the runtime.
    #[arg(long, env = "STALLWATCH_CRI_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub cri_timeout: Duration,

    /// List the runtime's pods and containers at least this often (and on an unknown container, at most every 2s).
    #[arg(long, env = "STALLWATCH_CRI_REFRESH_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub cri_refresh_interval: Duration,

    /// Keep a removed container's names this long, for its last series.
    #[arg(long, env = "STALLWATCH_CRI_GRACE", default_value = "1m", value_parser = parse_duration)]
    pub cri_grace: Duration,

    /// Pod sandbox ("pause") cgroups: labelled container="POD", or dropped.
    #[arg(long, env = "STALLWATCH_CRI_SANDBOXES", value_enum, default_value_t = Sandboxes::Label)]
    pub cri_sandboxes: Sandboxes,

    /// Leave the cgroup label out of series whose namespace, pod and container are known.
    #[arg(long, env = "STALLWATCH_DROP_CGROUP_LABEL")]
    pub drop_cgroup_label: bool,

    /// Export only containers of these namespaces (comma-separated) [default: all].
    #[arg(long, env = "STALLWATCH_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Export no containers of these namespaces (comma-separated).
    #[arg(long, env = "STALLWATCH_EXCLUDE_NAMESPACES", value_delimiter = ',')]
    pub exclude_namespaces: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Sandboxes {
    Label,
    Drop,
}

impl CriArgs {
    pub fn policy(&self) -> crate::labels::NamePolicy {
        crate::labels::NamePolicy {
            drop_cgroup_label: self.drop_cgroup_label,
            drop_sandboxes: self.cri_sandboxes == Sandboxes::Drop,
            namespaces: self.namespaces.clone(),
            exclude_namespaces: self.exclude_namespaces.clone(),
        }
    }

    pub fn config(&self) -> crate::cri::CriConfig {
        crate::cri::CriConfig {
            socket: self.cri_socket.clone(),
            host_root: self.host_root.clone(),
            timeout: self.cri_timeout,
            refresh: self.cri_refresh_interval,
            min_refresh: MIN_CRI_REFRESH,
            grace: self.cri_grace,
        }
    }
}

/// A refresh for an unknown container waits at least this long after the last.
const MIN_CRI_REFRESH: Duration = Duration::from_secs(2);

#[derive(Debug, Args)]
pub struct TopArgs {
    /// The running agent to read from.
    #[arg(
        long,
        env = "STALLWATCH_URL",
        default_value = "http://127.0.0.1:9740",
        conflicts_with = "standalone"
    )]
    pub url: String,

    /// Load the probes in this process instead, for a node without the agent (needs root).
    #[arg(long)]
    pub standalone: bool,

    /// Time between two readings: rates and quantiles are over this interval (e.g. 2s, 500ms).
    #[arg(long, default_value = "2s", value_parser = parse_interval)]
    pub interval: Duration,

    /// Print one table after one interval and exit, instead of the live view.
    #[arg(long)]
    pub once: bool,

    /// Output of --once.
    #[arg(long, value_enum, default_value_t = TopOutput::Text, requires = "once")]
    pub output: TopOutput,

    /// Column to sort by, largest first (e.g. cpu, throttled, rq-p99, mem-pct, name).
    #[arg(long, default_value = "cpu", value_parser = crate::top::model::Col::parse)]
    pub sort: crate::top::model::Col,

    /// Show only containers whose name or cgroup contains this text.
    #[arg(long, default_value = "")]
    pub filter: String,

    /// With --standalone: what to measure.
    #[command(flatten)]
    pub collect: CollectArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopOutput {
    Text,
    Json,
}

/// An interval for `agent top`: between 100ms and 1h.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = parse_duration(text)?;
    if interval < Duration::from_millis(100) || interval > Duration::from_secs(3600) {
        return Err(format!("`{text}` is outside 100ms to 60m"));
    }
    Ok(interval)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// [`DEFAULT_RTT_INTERVAL_MS`] as the flag writes it.
const DEFAULT_RTT_INTERVAL: &str = "1s";
const _: () = assert!(DEFAULT_RTT_INTERVAL_MS == 1_000);

/// `250ms`, `10s`, `2m`, `6h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit: write e.g. 10s, 500ms or 1m"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number"))?;
    let millis = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use ms, s, m, h or d)"
            ));
        }
    };
    number
        .checked_mul(millis)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("6h"), Ok(Duration::from_secs(6 * 3_600)));
        assert!(parse_duration("10w").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
    }

    #[test]
    fn defaults_work_on_a_plain_node() {
        let cli = Cli::try_parse_from(["agent", "run"]).expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("not run: {:?}", cli.command);
        };
        assert_eq!(args.listen.to_string(), "0.0.0.0:9740");
        let args = args.collect;
        assert_eq!(
            args.probes,
            vec![Signal::Runqueue, Signal::Reclaim, Signal::Disk, Signal::Tcp]
        );
        assert_eq!(args.max_tasks, DEFAULT_MAX_TASKS);
        assert_eq!(args.max_tcp_sockets, DEFAULT_MAX_SOCKETS);
        assert_eq!(
            args.tcp_rtt_interval,
            Duration::from_millis(DEFAULT_RTT_INTERVAL_MS)
        );
    }

    #[test]
    fn bad_flags_are_refused_with_the_flag_named() {
        let err =
            Cli::try_parse_from(["agent", "run", "--listen", "nowhere"]).expect_err("bad address");
        assert!(err.to_string().contains("--listen"), "{err}");
        let err = Cli::try_parse_from(["agent", "run", "--probes", "runqueue,teleport"])
            .expect_err("bad probe");
        assert!(err.to_string().contains("teleport"), "{err}");
        let err = Cli::try_parse_from(["agent", "run", "--max-tasks", "5"]).expect_err("too small");
        assert!(err.to_string().contains("--max-tasks"), "{err}");
        let err =
            Cli::try_parse_from(["agent", "top", "--interval", "1ms"]).expect_err("too short");
        assert!(err.to_string().contains("--interval"), "{err}");
        let err = Cli::try_parse_from(["agent", "top", "--sort", "vibes"]).expect_err("no column");
        assert!(err.to_string().contains("vibes"), "{err}");
        let err = Cli::try_parse_from(["agent", "top", "--output", "json"]).expect_err("not once");
        assert!(err.to_string().contains("--once"), "{err}");
    }

    #[test]
    fn top_reads_the_local_agent_by_default() {
        let cli = Cli::try_parse_from(["agent", "top"]).expect("parses");
        let Command::Top(args) = cli.command else {
            panic!("not top: {:?}", cli.command);
        };
        assert_eq!(args.url, "http://127.0.0.1:9740");
        assert_eq!(args.interval, Duration::from_secs(2));
        assert!(!args.once && !args.standalone);
    }
}
