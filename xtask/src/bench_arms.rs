//! One load measured under several arms (no agent, one signal's probes, the
//! whole agent) in the same run: each round runs every arm once, in rotating
//! order, and gives each arm's ratio to the same round's run without the
//! agent, so the machine's drift between rounds cancels. The report is the
//! median ratio per arm.

use std::path::Path;

use crate::bench::{BenchArgs, median, start_agent};

/// An arm: its name, and the agent's flags (`None`: no agent).
pub type Arm = (&'static str, Option<&'static [&'static str]>);

/// A load, higher is better (IOPS, bits/s, requests/s).
pub struct Load<'a> {
    pub name: &'static str,
    /// Runs the load once and returns its throughput.
    pub measure: Box<dyn FnMut() -> anyhow::Result<f64> + 'a>,
}

/// Measures every load under every arm, `args.rounds` times, and prints each
/// run and the medians. `check` runs while the agent of an arm still runs,
/// to prove its probes saw the load.
pub fn compare(
    part: &str,
    unit: &str,
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
                    "xtask bench: {part} round {} {:<14} {arm_name:>14}: {value:.0} {unit}",
                    round + 1,
                    load.name,
                );
                measured[arm] = value;
            }
            for arm in 1..arms.len() {
                ratios[l][arm].push(measured[arm] / measured[0]);
            }
        }
    }
    println!();
    for (l, load) in loads.iter().enumerate() {
        for (arm, (arm_name, _)) in arms.iter().enumerate().skip(1) {
            let rounds: Vec<String> = ratios[l][arm].iter().map(|r| format!("{r:.3}")).collect();
            let m = median(&mut ratios[l][arm]);
            println!(
                "{unit} {arm_name} / without, {}: median {m:.3} ({:+.1} %); rounds: {}",
                load.name,
                (m - 1.0) * 100.0,
                rounds.join(" ")
            );
        }
    }
    Ok(())
}
