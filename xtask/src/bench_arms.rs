//! One load measured under several arms (no agent, one signal's probes, the
//! whole agent) in the same run: each round runs every arm once, in rotating
//! order, and gives each arm's ratio to the same round's run without the
//! agent, so the machine's drift between rounds cancels. The report is the
//! median ratio per arm.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::Context as _;

use crate::bench::{BenchArgs, Started, median, start_agent};

/// An arm: its name, and the agent's flags (`None`: no agent).
pub type Arm = (&'static str, Option<&'static [&'static str]>);

/// A load, higher is better (IOPS, bits/s, requests/s).
pub struct Load<'a> {
    pub name: &'static str,
    /// What `measure` returns, e.g. `IOPS`.
    pub unit: &'static str,
    /// Runs the load once and returns its throughput.
    pub measure: Box<dyn FnMut() -> anyhow::Result<f64> + 'a>,
}

/// Measures every load under every arm, `args.rounds` times, and prints each
/// run and the medians. `check` runs while the agent of an arm still runs,
/// to prove its probes saw the load.
pub fn compare(
    part: &str,
    agent: &Path,
    args: &BenchArgs,
    arms: &[Arm],
    loads: &mut [Load<'_>],
    check: impl Fn(u16) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    // [load][arm] → (throughput, throughput per busy CPU-second) of the arm
    // over the same round's first arm's.
    let mut ratios: Vec<Vec<[Vec<f64>; 2]>> =
        vec![vec![[Vec::new(), Vec::new()]; arms.len()]; loads.len()];
    for round in 0..args.rounds as usize {
        for (l, load) in loads.iter_mut().enumerate() {
            let mut measured = vec![[0.0; 2]; arms.len()];
            let mut order: Vec<usize> = (0..arms.len()).collect();
            order.rotate_left((round + l) % arms.len());
            for arm in order {
                let (arm_name, flags) = arms[arm];
                let started = match flags {
                    Some(flags) => Some(start_agent(agent, args.port, "auto", flags)?),
                    None => None,
                };
                let busy_before = busy_cpu_seconds()?;
                let value = (load.measure)()?;
                let busy = busy_cpu_seconds()? - busy_before;
                if started.is_some() {
                    check(args.port)?;
                }
                drop(started);
                println!(
                    "xtask bench: {part} round {} {:<14} {arm_name:>14}: {value:.0} {}, {busy:.2} CPU-s busy",
                    round + 1,
                    load.name,
                    load.unit,
                );
                measured[arm] = [value, value / busy.max(1e-3)];
            }
            for arm in 1..arms.len() {
                for k in 0..2 {
                    ratios[l][arm][k].push(measured[arm][k] / measured[0][k]);
                }
            }
        }
    }
    if args.rounds == 0 {
        return Ok(());
    }
    println!();
    for (l, load) in loads.iter().enumerate() {
        for (arm, (arm_name, _)) in arms.iter().enumerate().skip(1) {
            for (k, what) in ["", " per busy CPU-second"].iter().enumerate() {
                let series = &mut ratios[l][arm][k];
                let rounds: Vec<String> = series.iter().map(|r| format!("{r:.3}")).collect();
                let m = median(series);
                println!(
                    "{}{what} {arm_name} / without, {}: median {m:.3} ({:+.1} %); rounds: {}",
                    load.unit,
                    load.name,
                    (m - 1.0) * 100.0,
                    rounds.join(" ")
                );
            }
        }
    }
    Ok(())
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
    const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let before = fs::read_to_string(STATS).with_context(|| format!("reading {STATS}"))?;
    let started = start_agent(agent, args.port, "auto", flags)?;
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
