//! The disk part of `cargo xtask bench`: what the agent costs a disk-bound
//! workload, in IOPS.
//!
//! `fio` reads 4 KiB blocks at random, with `O_DIRECT`, from a 1 GiB file in
//! `target/bench-disk/`: once synchronously (`psync`, one request at a time:
//! every request pays the probes' cost in full) and once with 16 requests in
//! flight (`libaio`). Each runs without a break while the agent, with its
//! disk probes alone or whole, is switched on and off around it
//! ([`crate::bench_arms`]), as is bpftrace with two scripts for reference;
//! IOPS are the reads the file's block device completed in each window,
//! from its `stat` file in sysfs.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{
    bench::{BenchArgs, scraped_sum, start_bpftrace},
    bench_arms::{self, Arm, Load, Tracer},
};

/// Issue #5's bar: the agent costs at most 3 % of IOPS.
const GOAL: f64 = 0.97;

/// (name, fio ioengine, iodepth).
const WORKLOADS: [(&str, &str, u32); 2] =
    [("psync qd1", "psync", 1), ("libaio qd16", "libaio", 16)];

/// What biolatency measures, for the node: the least a tracer can do.
const BIOLATENCY_BT: &str = include_str!("biolatency.bt");

/// bpftrace keeping the disk probes' series.
const DISKLAT_BT: &str = include_str!("disklat.bt");

/// The disk probes alone are what this signal costs; the whole agent adds
/// the run-queue probes, which fire on the context switches every
/// synchronous request makes. The control loads and unloads the agent like
/// the others, with only probes that this load never fires
/// ([`bench_arms::CONTROL`]). Two bpftrace references put the goal in
/// proportion: what biolatency does, one histogram for the node, and the
/// same series as the disk probes.
const ARMS: [Arm; 6] = [
    ("no-tracing", Tracer::None),
    ("disk probes", Tracer::Agent(&["--probes", "disk"])),
    ("whole agent", Tracer::Agent(&[])),
    bench_arms::CONTROL,
    ("bt biolatency", Tracer::Bpftrace(BIOLATENCY_BT)),
    ("bt same series", Tracer::Bpftrace(DISKLAT_BT)),
];

pub fn run(root: &Path, agent: &Path, args: &BenchArgs) -> anyhow::Result<()> {
    let dir = root.join("target/bench-disk");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join("randread.dat");
    println!("xtask bench: disk: laying out {}", file.display());
    fio(&file, "psync", 1, 1)?;
    let stat = device_stat(&file)?;

    let mut loads: Vec<Load<'_>> = WORKLOADS
        .iter()
        .map(|&(name, engine, depth)| {
            let (file, stat) = (&file, &stat);
            Load {
                name,
                unit: "IOPS",
                goal: GOAL,
                start: Box::new(move || {
                    bench_arms::start_load(fio_command(file, engine, depth, 24 * 3600), "fio")
                }),
                // Reads completed: the first field of the device's `stat`.
                done: Box::new(move || bench_arms::first_number(stat)),
            }
        })
        .collect();
    println!(
        "disk load: fio 4 KiB O_DIRECT random reads; IOPS from {}, {} ms windows",
        stat.display(),
        args.window_ms
    );
    bench_arms::compare("disk", agent, args, &ARMS, &mut loads, |port| {
        if disk_requests(port)? == 0 {
            bail!("the agent counted no disk requests during the benchmark");
        }
        Ok(())
    })?;
    probe_time(agent, args, &file, &stat)?;
    println!();
    Ok(())
}

/// The sysfs `stat` file of the block device (or partition) holding `file`.
fn device_stat(file: &Path) -> anyhow::Result<PathBuf> {
    let dev = fs::metadata(file)
        .with_context(|| format!("reading the metadata of {}", file.display()))?
        .dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let stat = PathBuf::from(format!("/sys/dev/block/{major}:{minor}/stat"));
    if !stat.exists() {
        bail!(
            "{} is on device {major}:{minor}, which is not a block device \
             (no {}): the disk benchmark needs target/ on a disk",
            file.display(),
            stat.display()
        );
    }
    Ok(stat)
}

/// The disk probes' own run time per request, as the kernel counts it with
/// `kernel.bpf_stats_enabled`: a steadier figure than an IOPS ratio on a
/// noisy machine. Measured in a separate run, since counting costs a little;
/// then the same for the bpftrace references.
fn probe_time(agent: &Path, args: &BenchArgs, file: &Path, stat: &Path) -> anyhow::Result<()> {
    let (iops, programs, started) =
        bench_arms::with_bpf_stats(agent, args, &["--probes", "disk"], || {
            fio_counted(file, stat, args.measurement_secs)
        })?;
    let counted = disk_requests(args.port)?;
    drop(started);
    if counted == 0 {
        bail!("the agent's disk probes counted no requests during the measurement");
    }
    print_run_time("disk probes", &programs, iops)?;
    for (name, tracer) in &ARMS {
        if let Tracer::Bpftrace(script) = tracer {
            let (iops, programs, _bpftrace) = bench_arms::with_bpf_stats_of(
                || start_bpftrace(name, script),
                || fio_counted(file, stat, args.measurement_secs),
            )?;
            print_run_time(name, &programs, iops)?;
        }
    }
    Ok(())
}

/// fio psync qd1 on `file` for `secs` seconds: its IOPS, and the reads its
/// device completed meanwhile (from `stat`, [`device_stat`]).
fn fio_counted(file: &Path, stat: &Path, secs: u32) -> anyhow::Result<(f64, f64)> {
    let before = bench_arms::first_number(stat)?;
    let iops = fio(file, "psync", 1, secs)?;
    Ok((iops, bench_arms::first_number(stat)? - before))
}

/// Prints the run time per request of `programs` (a tracer's, over a fio
/// run of `iops` that completed `requests`).
fn print_run_time(
    tracer: &str,
    programs: &[bench_arms::ProgramStats],
    (iops, requests): (f64, f64),
) -> anyhow::Result<()> {
    let run_ns: u64 = programs.iter().map(|p| p.run_ns).sum();
    if requests <= 0.0 || programs.is_empty() {
        bail!("{tracer}: no programs ran, or no requests completed, during the measurement");
    }
    let per_request = run_ns as f64 / requests;
    println!(
        "run time of the {tracer} (kernel.bpf_stats_enabled): {per_request:.0} ns per request over {requests:.0} requests \
         ({} programs), {:.1} % of a psync qd1 request's {:.1} µs at {iops:.0} IOPS",
        programs.len(),
        per_request / (1e9 / iops) * 100.0,
        1e6 / iops
    );
    Ok(())
}

/// Runs fio for `secs` seconds and returns its read IOPS.
fn fio(file: &Path, engine: &str, depth: u32, secs: u32) -> anyhow::Result<f64> {
    let mut fio = fio_command(file, engine, depth, secs);
    bench_arms::json_number(&mut fio, "fio", "/jobs/0/read/iops")
}

/// fio's 4 KiB `O_DIRECT` random reads of `file` for `secs` seconds.
fn fio_command(file: &Path, engine: &str, depth: u32, secs: u32) -> Command {
    let mut fio = Command::new("fio");
    fio.args([
        "--name=randread",
        "--rw=randread",
        "--bs=4k",
        "--direct=1",
        "--size=1G",
        "--time_based",
        "--output-format=json",
    ])
    .arg(format!("--filename={}", file.display()))
    .arg(format!("--ioengine={engine}"))
    .arg(format!("--iodepth={depth}"))
    .arg(format!("--runtime={secs}"));
    fio
}

/// Disk requests the agent has counted, over all series.
fn disk_requests(port: u16) -> anyhow::Result<u64> {
    scraped_sum(port, "stallwatch_disk_io_requests_total")
}
