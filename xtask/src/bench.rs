//! `cargo xtask bench`: the agent's overhead on its hot paths, and the cost
//! of a scrape. The disk and TCP parts, which switch the agent around a
//! running load (`bench_arms.rs`), are in `bench_disk.rs` and `bench_tcp.rs`.
//!
//! Runs the criterion benchmark `agent/benches/context_switch.rs` (a pipe
//! ping-pong: two wakeups and two context switches per round trip) in
//! rounds, each round under five conditions in rotating order: no tracing,
//! the agent as deployed, the agent measuring with timestamps (raw and
//! classic tracepoints), and a bpftrace script keeping the same per-cgroup
//! run-queue histogram on the same tracepoints. Each round gives a ratio to
//! its own baseline, so the machine's drift cancels; the report is the
//! median ratio. It also reports the agent's peak resident memory, and the
//! probes' own run time per round trip for each source of the waits.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{cargo, run_checked};

const BENCH_ID: &str = "pipe_ping_pong_round_trip";
pub(crate) const RUNQLAT_BT: &str = include_str!("runqlat.bt");

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Context switches: rounds of (none, the agent three ways, bpftrace).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Context switches: measurement time per condition and round; disk and
    /// TCP: the run that counts the probes' own time. In seconds.
    #[arg(long, default_value_t = 5)]
    pub measurement_secs: u32,
    /// Disk and TCP: windows with the agent per arm and load (each between
    /// two without it).
    #[arg(long, default_value_t = 40)]
    pub windows: u32,
    /// Disk and TCP: length of a window, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..))]
    pub window_ms: u64,
    /// Port the agent listens on during the benchmark (loopback only).
    #[arg(long, default_value_t = 19740)]
    pub port: u16,
    /// Run only these parts (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
}

/// The parts of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// One scrape of 1,000 containers.
    Scrape,
    /// Pipe ping-pong: the run-queue probes' cost per context switch.
    ContextSwitch,
    /// fio random reads: the disk probes' cost per request.
    Disk,
    /// iperf3 and wrk on loopback: the TCP probes' cost per packet.
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    Baseline,
    /// The agent as deployed (the kernel's `sched_info`, on raw tracepoints
    /// where the kernel has them).
    Agent,
    /// The agent measuring with timestamps at wakeup and switch, as on
    /// kernels without BTF.
    AgentTimestamps,
    /// The agent with timestamps on classic tracepoints, as on kernels
    /// without BTF before 5.18.
    AgentClassic,
    Bpftrace,
}

impl Condition {
    const ALL: [Self; 5] = [
        Self::Baseline,
        Self::Agent,
        Self::AgentTimestamps,
        Self::AgentClassic,
        Self::Bpftrace,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Baseline => "no-tracing",
            Self::Agent => "stallwatch",
            Self::AgentTimestamps => "stallwatch-ts",
            Self::AgentClassic => "stallwatch-ts-tp",
            Self::Bpftrace => "bpftrace",
        }
    }
}

/// A process this benchmark started, stopped by its PID when dropped.
pub(crate) struct Started {
    pub child: Child,
    signal: i32,
}

impl Started {
    /// A child to stop with `signal`.
    pub fn new(child: Child, signal: i32) -> Self {
        Self { child, signal }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
            unsafe { libc::kill(pid, self.signal) };
        }
        let _ = self.child.wait();
    }
}

pub fn run(root: &Path, agent: &Path, args: &BenchArgs) -> anyhow::Result<()> {
    let runs = |part| args.only.is_empty() || args.only.contains(&part);
    if runs(Part::Scrape) {
        scrape(root)?;
    }
    if !runs(Part::ContextSwitch) && !runs(Part::Disk) && !runs(Part::Tcp) {
        return Ok(());
    }
    if !crate::setup::is_root() {
        bail!("the overhead benchmarks load eBPF programs: run them as root");
    }
    if runs(Part::Disk) {
        crate::bench_disk::run(root, agent, args)?;
    }
    if runs(Part::Tcp) {
        crate::bench_tcp::run(agent, args)?;
    }
    if runs(Part::ContextSwitch) {
        context_switch(root, agent, args)?;
    }
    Ok(())
}

/// The run-queue probes' cost: criterion's pipe ping-pong under each condition.
fn context_switch(root: &Path, agent: &Path, args: &BenchArgs) -> anyhow::Result<()> {
    println!("xtask bench: building the benchmark");
    run_checked(cargo(root).args([
        "bench",
        "--package",
        "agent",
        "--bench",
        "context_switch",
        "--no-run",
    ]))?;

    let mut results: Vec<(u32, Condition, f64)> = Vec::new();
    let mut agent_peak_kib = 0u64;
    for round in 0..args.rounds {
        let order = rotate(round);
        for condition in order {
            let (ns, peak) = measure(root, agent, args, condition, round)?;
            println!(
                "xtask bench: round {} {:>11}: {ns:.0} ns per round trip",
                round + 1,
                condition.name()
            );
            agent_peak_kib = agent_peak_kib.max(peak);
            results.push((round, condition, ns));
        }
    }

    println!();
    println!("context-switch load: pipe ping-pong round trip, 2 threads pinned to one CPU");
    println!("slowdown = time per round trip / the same round's time without tracing");
    print!("{:>6} {:>12}", "round", "none ns");
    for condition in &Condition::ALL[1..] {
        print!(" {:>14}", condition.name());
    }
    println!();
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); Condition::ALL.len()];
    for round in 0..args.rounds {
        let get = |c| {
            results
                .iter()
                .find(|(r, cc, _)| *r == round && *cc == c)
                .map(|(_, _, ns)| *ns)
        };
        let Some(base) = get(Condition::Baseline) else {
            continue;
        };
        print!("{:>6} {base:>12.0}", round + 1);
        for (i, condition) in Condition::ALL.iter().enumerate().skip(1) {
            let Some(ns) = get(*condition) else { continue };
            ratios[i].push(ns / base);
            print!(" {:>14.3}", ns / base);
        }
        println!();
    }
    println!();
    for (i, condition) in Condition::ALL.iter().enumerate().skip(1) {
        let m = median(&mut ratios[i]);
        println!(
            "median slowdown, {:<14} {m:.3}x ({:+.1} %)",
            condition.name(),
            (m - 1.0) * 100.0
        );
    }
    println!(
        "agent peak resident memory (VmHWM): {:.1} MiB",
        agent_peak_kib as f64 / 1024.0
    );
    probe_run_time(agent, args)
}

/// Round trips of the pass that counts the run-queue probes' own run time.
const COUNTED_ROUND_TRIPS: u64 = 200_000;

/// The run-queue probes' own run time per round trip, from the kernel's
/// `bpf_stats`, for each source: steadier than the slowdowns, which this
/// machine's noise blurs by several points. `perf bench sched pipe` does a
/// fixed number of round trips on CPU 0; the rest of the node's context
/// switches in that time are counted too, a small share.
fn probe_run_time(agent: &Path, args: &BenchArgs) -> anyhow::Result<()> {
    println!();
    for (source, flags) in [
        ("sched-info", &["--probes", "runqueue"][..]),
        (
            "timestamps",
            &["--probes", "runqueue", "--runqueue-source", "timestamps"][..],
        ),
    ] {
        let ((), programs, _agent) = crate::bench_arms::with_bpf_stats(agent, args, flags, || {
            run_checked(
                Command::new("taskset")
                    .args(["-c", "0", "perf", "bench", "sched", "pipe", "-l"])
                    .arg(COUNTED_ROUND_TRIPS.to_string())
                    .stdout(Stdio::null()),
            )
        })?;
        let runs: u64 = programs.iter().map(|p| p.runs).sum();
        let run_ns: u64 = programs.iter().map(|p| p.run_ns).sum();
        let trips = COUNTED_ROUND_TRIPS as f64;
        println!(
            "run-queue probes' run time, {source:<10}: {:.0} ns per round trip ({:.1} program runs of {:.0} ns)",
            run_ns as f64 / trips,
            runs as f64 / trips,
            run_ns as f64 / runs.max(1) as f64
        );
    }
    Ok(())
}

/// One full scrape of 1,000 containers from a fixture tree
/// (`agent/benches/scrape.rs`): time and peak heap growth.
fn scrape(root: &Path) -> anyhow::Result<()> {
    println!("xtask bench: scrape of 1,000 containers");
    let output = cargo(root)
        .args([
            "bench",
            "--package",
            "agent",
            "--bench",
            "scrape",
            "--",
            "--noplot",
            "scrape_1000",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("running the scrape benchmark")?;
    if !output.status.success() {
        bail!("the scrape benchmark failed: {}", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let heap = stdout
        .lines()
        .find(|l| l.starts_with("scrape of"))
        .unwrap_or("scrape: no heap figure printed");
    let median_ms = median_estimate_of(root, "scrape_1000_containers", "new")? / 1e6;
    println!("{heap}");
    println!(
        "scrape of 1,000 containers: median {median_ms:.1} ms (goal: at most 50 ms and 20 MiB of heap growth)"
    );
    println!();
    Ok(())
}

/// Rotates the order of conditions from round to round.
fn rotate(round: u32) -> [Condition; 5] {
    let mut order = Condition::ALL;
    order.rotate_left((round as usize) % Condition::ALL.len());
    order
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Runs the benchmark once under `condition`; returns the median ns per
/// iteration and, for the agent, its peak RSS in KiB.
fn measure(
    root: &Path,
    agent: &Path,
    args: &BenchArgs,
    condition: Condition,
    round: u32,
) -> anyhow::Result<(f64, u64)> {
    let tracer = match condition {
        Condition::Baseline => None,
        Condition::Agent => Some(start_agent(agent, args.port, "auto", &[])?),
        Condition::AgentTimestamps => Some(start_agent(
            agent,
            args.port,
            "auto",
            &["--runqueue-source", "timestamps"],
        )?),
        Condition::AgentClassic => Some(start_agent(
            agent,
            args.port,
            "tracepoint",
            &["--runqueue-source", "timestamps"],
        )?),
        Condition::Bpftrace => Some(start_bpftrace("runqlat", RUNQLAT_BT)?),
    };
    let baseline = format!("{}-{}", condition.name(), round);
    run_checked(
        cargo(root)
            .args([
                "bench",
                "--package",
                "agent",
                "--bench",
                "context_switch",
                "--",
            ])
            .args(["--noplot", "--warm-up-time", "1", "--sample-size", "30"])
            .args(["--measurement-time", &args.measurement_secs.to_string()])
            .args(["--save-baseline", &baseline])
            .stdout(Stdio::null()),
    )?;
    let mut peak = 0;
    let is_agent = matches!(
        condition,
        Condition::Agent | Condition::AgentTimestamps | Condition::AgentClassic
    );
    if let Some(started) = tracer.as_ref().filter(|_| is_agent) {
        let samples = scraped_sum(args.port, "stallwatch_cpu_runqueue_latency_seconds_count")?;
        if samples == 0 {
            bail!("the agent counted no run-queue samples during the benchmark");
        }
        peak = peak_rss_kib(started.child.id())?;
    }
    drop(tracer);
    Ok((median_estimate(root, &baseline)?, peak))
}

pub(crate) fn start_agent(
    agent: &Path,
    port: u16,
    attach: &str,
    extra: &[&str],
) -> anyhow::Result<Started> {
    let child = Command::new(agent)
        .args([
            "run",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--runqueue-attach",
            attach,
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", agent.display()))?;
    let mut started = Started {
        child,
        signal: libc::SIGTERM,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = format!("http://127.0.0.1:{port}/readyz");
    while Instant::now() < deadline {
        if ureq::get(&url).call().is_ok() {
            // Another agent on the port would answer too.
            return match started.child.try_wait() {
                Ok(None) => Ok(started),
                _ => bail!("the agent exited at start: is another one listening on {url}?"),
            };
        }
        thread::sleep(Duration::from_millis(100));
    }
    bail!("the agent did not become ready on {url} within 30 s")
}

/// Scrapes the agent on `port` and sums every sample of `series` (a name,
/// e.g. `stallwatch_disk_io_requests_total`).
pub(crate) fn scraped_sum(port: u16, series: &str) -> anyhow::Result<u64> {
    let body = ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .context("scraping the agent")?
        .body_mut()
        .read_to_string()
        .context("reading the scrape")?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

/// Starts bpftrace on `text`, a script (`name` names its file), and returns
/// once its probes are attached.
pub(crate) fn start_bpftrace(name: &str, text: &str) -> anyhow::Result<Started> {
    let file_name: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let script =
        std::env::temp_dir().join(format!("stallwatch-{file_name}-{}.bt", std::process::id()));
    fs::write(&script, text).with_context(|| format!("writing {}", script.display()))?;
    let mut child = Command::new("bpftrace")
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting bpftrace (cargo xtask setup installs it)")?;
    let stdout = child.stdout.take().context("bpftrace has no stdout")?;
    let started = Started {
        child,
        signal: libc::SIGINT,
    };
    // bpftrace prints "Attaching N probes..." once its probes are in place.
    let mut lines = BufReader::new(stdout).lines();
    match lines.next() {
        Some(Ok(line)) if line.starts_with("Attaching") => {}
        other => bail!("bpftrace did not attach: {other:?}"),
    }
    // Keep draining its output so it never blocks on a full pipe.
    thread::spawn(move || for _ in lines {});
    let _ = fs::remove_file(&script);
    Ok(started)
}

fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let status =
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{} has no VmHWM", path.display()))
}

/// Criterion's median estimate, in ns per iteration, for a saved baseline.
fn median_estimate(root: &Path, baseline: &str) -> anyhow::Result<f64> {
    median_estimate_of(root, BENCH_ID, baseline)
}

fn median_estimate_of(root: &Path, bench: &str, baseline: &str) -> anyhow::Result<f64> {
    let path = root
        .join("target/criterion")
        .join(bench)
        .join(baseline)
        .join("estimates.json");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    json["median"]["point_estimate"]
        .as_f64()
        .with_context(|| format!("{} has no median.point_estimate", path.display()))
}
