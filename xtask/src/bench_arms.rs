//! One load measured under several arms (no agent, one signal's probes, the
//! whole agent) in the same run: each round runs every arm once, in rotating
//! order, and gives each arm's ratio to the same round's run without the
//! agent, so the machine's drift between rounds cancels. The report is the
//! median ratio per arm.

use std::{
    fs,
    path::{Path, PathBuf},
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
    // [load][arm] → the arm's throughput / the same round's first arm's.
    let mut ratios: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); arms.len()]; loads.len()];
    for round in 0..args.rounds as usize {
        for (l, load) in loads.iter_mut().enumerate() {
            let mut measured = vec![0.0; arms.len()];
            let mut order: Vec<usize> = (0..arms.len()).collect();
            order.rotate_left((round + l) % arms.len());
            for arm in order {
                let (arm_name, flags) = arms[arm];
                let started = match flags {
                    Some(flags) => Some(start_agent(agent, args.port, "auto", flags)?),
                    None => None,
                };
                let value = (load.measure)()?;
                if started.is_some() {
                    check(args.port)?;
                }
                drop(started);
                println!(
                    "xtask bench: {part} round {} {:<14} {arm_name:>14}: {value:.0} {}",
                    round + 1,
                    load.name,
                    load.unit,
                );
                measured[arm] = value;
            }
            for arm in 1..arms.len() {
                ratios[l][arm].push(measured[arm] / measured[0]);
            }
        }
    }
    if args.rounds == 0 {
        return Ok(());
    }
    println!();
    for (l, load) in loads.iter().enumerate() {
        for (arm, (arm_name, _)) in arms.iter().enumerate().skip(1) {
            let rounds: Vec<String> = ratios[l][arm].iter().map(|r| format!("{r:.3}")).collect();
            let m = median(&mut ratios[l][arm]);
            println!(
                "{} {arm_name} / without, {}: median {m:.3} ({:+.1} %); rounds: {}",
                load.unit,
                load.name,
                (m - 1.0) * 100.0,
                rounds.join(" ")
            );
        }
    }
    Ok(())
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
