//! A load measured with the agent switched on and off while it runs.
//!
//! The load (fio, iperf3, wrk) runs without a break; the agent is started
//! and stopped around it, and a counter of the load's work (reads the
//! device completed, bytes loopback carried, responses served) is read at
//! the edges of short windows: one without the agent, one with an arm's
//! agent, one without, one with the next arm's, and so on. Each window with
//! the agent is compared with the mean of the windows just before and just
//! after it, so the machine's drift (this VM's disk doubles its speed over
//! minutes, and its neighbours come and go) cancels, and neither the load's
//! start-up nor the agent's is ever timed. The report is the median ratio
//! per arm, with a distribution-free 95 % confidence interval for it, and
//! whether the whole interval clears the load's goal: on a machine this
//! noisy, a median alone can land on either side of a goal a few percent
//! wide by chance. A control arm ([`CONTROL`]) checks the method itself,
//! and a reference arm ([`Tracer::Bpftrace`]) runs a tool nobody here wrote
//! on the same load, so the agent's cost can be read against it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::bench::{BenchArgs, Started, median, start_agent, start_bpftrace};

/// What an arm runs beside the load.
#[derive(Debug, Clone, Copy)]
pub enum Tracer {
    /// Nothing: the windows every other arm is compared with.
    None,
    /// The agent, with these flags.
    Agent(&'static [&'static str]),
    /// A bpftrace script (its text), as a reference.
    Bpftrace(&'static str),
}

/// An arm: its name, and what it runs.
pub type Arm = (&'static str, Tracer);

/// The control arm: the agent with only the reclaim probes, which fire on
/// direct and cgroup reclaim, never under these loads. It is started,
/// loaded, stopped and unloaded like every other arm, so its ratio is the
/// method's own bias on this machine (an A/A comparison): it should come
/// out at 1, within its interval.
pub const CONTROL: Arm = ("control", Tracer::Agent(&["--probes", "reclaim"]));

/// A load, higher is better (IOPS, bits/s, requests/s).
pub struct Load<'a> {
    pub name: &'static str,
    /// What a rate of `done` is, e.g. `IOPS`.
    pub unit: &'static str,
    /// The lowest acceptable ratio of throughput with the agent to
    /// throughput without it (e.g. 0.97: at most 3 % lost).
    pub goal: f64,
    /// Starts the load, to run until the process is dropped.
    pub start: Box<dyn FnMut() -> anyhow::Result<Started> + 'a>,
    /// The load's work so far, in `unit` × seconds (reads, bits, responses).
    pub done: Box<dyn FnMut() -> anyhow::Result<f64> + 'a>,
}

/// One window: its arm, the load's rate, and its rate per busy CPU-second.
#[derive(Debug, Clone, Copy)]
struct Window {
    arm: usize,
    rate: f64,
    per_busy: f64,
}

/// Measures every load under every arm, `args.windows` windows each, and
/// prints each window and the medians. `arms[0]` must be the arm without
/// tracing. `check` runs while the agent of an arm (but the control's)
/// still runs, to prove its probes saw the load.
pub fn compare(
    part: &str,
    agent: &Path,
    args: &BenchArgs,
    arms: &[Arm],
    loads: &mut [Load<'_>],
    check: impl Fn(u16) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if args.windows == 0 {
        return Ok(());
    }
    let window = Duration::from_millis(args.window_ms);
    for load in loads.iter_mut() {
        let mut running = (load.start)()?;
        // Caches (the host's, under a VM's disk), CPU frequency and the
        // load generator's own start-up settle before anything counts.
        thread::sleep(WARM_UP);
        let mut windows = vec![measure(load, &mut running, 0, window)?];
        for round in 0..args.windows {
            for (arm, (arm_name, tracer)) in arms.iter().enumerate().skip(1) {
                let started = match tracer {
                    Tracer::None => bail!("only the first arm runs without tracing"),
                    Tracer::Agent(flags) => start_agent(agent, args.port, "auto", flags)?,
                    Tracer::Bpftrace(script) => start_bpftrace(arm_name, script)?,
                };
                thread::sleep(SETTLE);
                let with = measure(load, &mut running, arm, window)?;
                // The control's probes see nothing of the load, by design.
                if matches!(tracer, Tracer::Agent(_)) && *arm_name != CONTROL.0 {
                    check(args.port)?;
                }
                drop(started);
                thread::sleep(SETTLE);
                let without = measure(load, &mut running, 0, window)?;
                let before = windows.last().map_or(f64::NAN, |w| w.rate);
                println!(
                    "xtask bench: {part} {:<14} window {:>3} {arm_name:>14}: {:.0} {} ({:.3} of the windows around it)",
                    load.name,
                    round + 1,
                    with.rate,
                    load.unit,
                    with.rate / ((before + without.rate) / 2.0),
                );
                windows.push(with);
                windows.push(without);
            }
        }
        drop(running);
        report(load, arms, &windows);
    }
    Ok(())
}

/// Prints, per arm, the median ratio of its windows to their neighbours.
fn report(load: &Load<'_>, arms: &[Arm], windows: &[Window]) {
    let off = windows.iter().filter(|w| w.arm == 0);
    let (n, sum) = off.fold((0usize, 0.0), |(n, s), w| (n + 1, s + w.rate));
    println!(
        "{}: {:.0} {} without the agent on average over {n} windows",
        load.name,
        sum / n.max(1) as f64,
        load.unit
    );
    for (arm, (arm_name, _)) in arms.iter().enumerate().skip(1) {
        for (k, what) in ["", " per busy CPU-second"].iter().enumerate() {
            let value = |w: &Window| if k == 0 { w.rate } else { w.per_busy };
            let mut ratios = neighbour_ratios(windows, arm, value);
            let m = median(&mut ratios);
            let interval = median_interval(&ratios);
            let shown = match interval {
                Some((lo, hi)) => format!(", 95 % CI {lo:.3}–{hi:.3}"),
                None => String::new(),
            };
            println!(
                "{}{what} {arm_name} / without, {}: median {m:.3} ({:+.1} %){shown} over {} windows",
                load.unit,
                load.name,
                (m - 1.0) * 100.0,
                ratios.len(),
            );
            if k == 0 && *arm_name == CONTROL.0 {
                println!(
                    "  control: {}",
                    match interval {
                        Some((lo, hi)) if lo <= 1.0 && 1.0 <= hi =>
                            "unbiased (the interval holds 1)",
                        Some(_) =>
                            "BIASED: the interval misses 1, so read every ratio above with that in mind",
                        None => "too few windows for an interval",
                    }
                );
            } else if k == 0 {
                println!(
                    "  goal: at least {:.3} ({:.0} % lost at most): {}",
                    load.goal,
                    (1.0 - load.goal) * 100.0,
                    verdict(&ratios, load.goal).describe()
                );
            }
        }
    }
}

/// Each window of `arm` over the mean of the windows on either side of it
/// (windows without the agent, by construction), by `value`.
fn neighbour_ratios(windows: &[Window], arm: usize, value: impl Fn(&Window) -> f64) -> Vec<f64> {
    windows
        .windows(3)
        .filter(|w| w[1].arm == arm)
        .map(|w| value(&w[1]) / ((value(&w[0]) + value(&w[2])) / 2.0))
        .filter(|r| r.is_finite())
        .collect()
}

/// Counts the load's work over one window.
fn measure(
    load: &mut Load<'_>,
    running: &mut Started,
    arm: usize,
    window: Duration,
) -> anyhow::Result<Window> {
    let (done_before, busy_before, start) = ((load.done)()?, busy_cpu_seconds()?, Instant::now());
    thread::sleep(window);
    let (done, busy, secs) = (
        (load.done)()? - done_before,
        busy_cpu_seconds()? - busy_before,
        start.elapsed().as_secs_f64(),
    );
    if let Some(status) = running.child.try_wait().context("checking on the load")? {
        bail!("{} stopped during the benchmark: {status}", load.name);
    }
    if done <= 0.0 {
        bail!("{} did no work for {secs:.1} s", load.name);
    }
    Ok(Window {
        arm,
        rate: done / secs,
        per_busy: done / busy.max(1e-3),
    })
}

/// How long a load runs before its first window.
const WARM_UP: Duration = Duration::from_secs(3);

/// How long the load runs after the agent starts or stops before a window
/// begins: loading, first scan and exit are never timed.
const SETTLE: Duration = Duration::from_millis(300);

/// A distribution-free confidence interval of at least 95 % for the median
/// of `sorted` (ascending): the order statistics `k` and `n + 1 - k` for
/// the largest `k` with `P(Binomial(n, 1/2) < k) <= 2.5 %`. `None` below
/// six values, where no such `k` exists.
pub fn median_interval(sorted: &[f64]) -> Option<(f64, f64)> {
    let n = sorted.len();
    // P(X <= j) for X ~ Binomial(n, 1/2), accumulated term by term.
    let mut term = 0.5f64.powi(i32::try_from(n).ok()?);
    let mut below = 0.0;
    let mut k = 0;
    for j in 0..n {
        below += term;
        if below > 0.025 {
            break;
        }
        k = j + 1;
        term *= (n - j) as f64 / (j + 1) as f64;
    }
    if k == 0 {
        return None;
    }
    Some((sorted[k - 1], sorted[n - k]))
}

/// Where a load's goal stands against the interval of its median ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The whole interval is at or above the goal.
    Met,
    /// The whole interval is below it.
    Missed,
    /// The interval straddles it: more windows, or a quieter machine.
    NotShown,
    /// Too few windows for an interval.
    TooFewWindows,
}

impl Verdict {
    fn describe(self) -> &'static str {
        match self {
            Self::Met => "met (the whole interval is at or above it)",
            Self::Missed => "missed (the whole interval is below it)",
            Self::NotShown => "not shown (the interval straddles it)",
            Self::TooFewWindows => "not shown (six windows at least give an interval)",
        }
    }
}

/// The verdict on `goal` for the ratios `sorted` (ascending).
pub fn verdict(sorted: &[f64], goal: f64) -> Verdict {
    match median_interval(sorted) {
        None => Verdict::TooFewWindows,
        Some((lo, _)) if lo >= goal => Verdict::Met,
        Some((_, hi)) if hi < goal => Verdict::Missed,
        Some(_) => Verdict::NotShown,
    }
}

/// Starts `command`, a load that runs until it is stopped (`what` names it
/// in errors).
pub fn start_load(mut command: Command, what: &str) -> anyhow::Result<Started> {
    let child = command
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {what} (cargo xtask setup installs it)"))?;
    Ok(Started::new(child, libc::SIGTERM))
}

/// The first number in a counter file such as a block device's `stat`
/// (reads completed) or an interface's `rx_bytes`.
pub fn first_number(path: &Path) -> anyhow::Result<f64> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.split_whitespace()
        .next()
        .and_then(|f| f.parse::<u64>().ok())
        .map(|n| n as f64)
        .with_context(|| format!("{} does not start with a count", path.display()))
}

/// CPU time the machine has spent busy (user, nice, system, irq, softirq),
/// in seconds, from `/proc/stat`: not idle, not waiting for I/O, and not
/// stolen by the hypervisor for its other guests, so work per busy
/// CPU-second measures a load's own cost even while neighbours slow it.
fn busy_cpu_seconds() -> anyhow::Result<f64> {
    let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    busy_seconds_of(&stat).context("/proc/stat has no `cpu` line")
}

fn busy_seconds_of(stat: &str) -> Option<f64> {
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks_per_second = if ticks_per_second > 0 {
        ticks_per_second as f64
    } else {
        100.0
    };
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest is in user).
    let busy: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| fields.get(i)).sum();
    Some(busy as f64 / ticks_per_second)
}

/// Runs a load generator that reports in JSON on stdout (fio, iperf3) and
/// returns the number at `pointer` (e.g. `/jobs/0/read/iops`).
pub fn json_number(command: &mut Command, what: &str, pointer: &str) -> anyhow::Result<f64> {
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {what} (cargo xtask setup installs it)"))?;
    if !output.status.success() {
        anyhow::bail!("{what} failed: {}", output.status);
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("parsing {what}'s JSON output"))?;
    json.pointer(pointer)
        .and_then(serde_json::Value::as_f64)
        .with_context(|| format!("{what}'s output has no number at {pointer}"))
}

/// What the kernel counted for one BPF program with `kernel.bpf_stats_enabled`.
#[derive(Debug, Clone, Copy)]
pub struct ProgramStats {
    /// `prog_type` from fdinfo (e.g. 5 tracepoint, 8 cgroup_skb, 13 sock_ops).
    pub prog_type: u32,
    pub runs: u64,
    pub run_ns: u64,
}

/// Runs `load` once with the agent (`flags`) and `kernel.bpf_stats_enabled`
/// on, and returns its result, the run counts and times of the agent's
/// programs that ran, and the agent, still running (to be scraped).
/// Counting costs a little, so this is separate from the ratios.
pub fn with_bpf_stats<T>(
    agent: &Path,
    args: &BenchArgs,
    flags: &[&str],
    load: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, Vec<ProgramStats>, Started)> {
    with_bpf_stats_of(|| start_agent(agent, args.port, "auto", flags), load)
}

/// As [`with_bpf_stats`], for the tracer `start` starts (the agent, or
/// bpftrace).
pub fn with_bpf_stats_of<T>(
    start: impl FnOnce() -> anyhow::Result<Started>,
    load: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, Vec<ProgramStats>, Started)> {
    const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let before = fs::read_to_string(STATS).with_context(|| format!("reading {STATS}"))?;
    let started = start()?;
    fs::write(STATS, "1").with_context(|| format!("writing {STATS}"))?;
    let result = load();
    let programs = program_stats(started.child.id());
    let _ = fs::write(STATS, before.trim());
    Ok((result?, programs?, started))
}

/// The stats of every BPF program `pid` holds that ran.
fn program_stats(pid: u32) -> anyhow::Result<Vec<ProgramStats>> {
    let dir = PathBuf::from(format!("/proc/{pid}/fdinfo"));
    let mut programs = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let Ok(text) = fs::read_to_string(entry?.path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        };
        if let (Some(prog_type), Some(runs), Some(run_ns)) = (
            field("prog_type:"),
            field("run_cnt:"),
            field("run_time_ns:"),
        ) && runs > 0
        {
            programs.push(ProgramStats {
                prog_type: u32::try_from(prog_type).unwrap_or(u32::MAX),
                runs,
                run_ns,
            });
        }
    }
    Ok(programs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(arm: usize, rate: f64) -> Window {
        Window {
            arm,
            rate,
            per_busy: rate / 2.0,
        }
    }

    #[test]
    fn a_window_with_the_agent_is_compared_with_its_two_neighbours() {
        // Without the agent the load speeds up 100 → 200 → 300; each arm's
        // window is 10 % below the mean of the windows around it.
        let windows = [
            window(0, 100.0),
            window(1, 135.0),
            window(0, 200.0),
            window(2, 225.0),
            window(0, 300.0),
        ];
        let ratios = |arm| neighbour_ratios(&windows, arm, |w| w.rate);
        assert_eq!(ratios(1), vec![0.9]);
        assert_eq!(ratios(2), vec![0.9]);
        assert_eq!(neighbour_ratios(&windows, 1, |w| w.per_busy), vec![0.9]);
        assert!(ratios(3).is_empty());
    }

    #[test]
    fn median_interval_uses_the_binomial_order_statistics() {
        let values: Vec<f64> = (1..=16).map(f64::from).collect();
        // n = 16: P(X <= 3) = 1.06 %, P(X <= 4) = 3.84 %, so k = 4.
        assert_eq!(median_interval(&values), Some((4.0, 13.0)));
        let values: Vec<f64> = (1..=6).map(f64::from).collect();
        // n = 6: P(X = 0) = 1.56 %, P(X <= 1) = 10.9 %, so k = 1.
        assert_eq!(median_interval(&values), Some((1.0, 6.0)));
        assert_eq!(median_interval(&[1.0, 2.0, 3.0, 4.0, 5.0]), None);
        assert_eq!(median_interval(&[]), None);
    }

    #[test]
    fn a_goal_is_met_only_when_the_whole_interval_clears_it() {
        let steady: Vec<f64> = (0..16).map(|i| 0.98 + f64::from(i) * 0.001).collect();
        assert_eq!(verdict(&steady, 0.97), Verdict::Met);
        assert_eq!(verdict(&steady, 0.99), Verdict::NotShown);
        assert_eq!(verdict(&steady, 1.0), Verdict::Missed);
        assert_eq!(verdict(&steady[..5], 0.5), Verdict::TooFewWindows);
    }

    #[test]
    fn busy_time_leaves_out_idle_iowait_and_steal() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let stat = "cpu  100 10 50 9000 300 5 35 7000 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert_eq!(busy_seconds_of(stat), Some(200.0 / hz));
        assert_eq!(busy_seconds_of("intr 1 2 3\n"), None);
    }
}
