//! `cargo xtask`: orchestration of stallwatch's development tasks.
//!
//! - `setup`: install every prerequisite, idempotently.
//! - `run`:   set up, build, and run `agent run` with defaults.
//! - `test`:  set up, build once, run unit and privileged tests.
//! - `bench`: set up, build, and measure the agent's overhead.
//! - `dist`:  set up, build, and copy the binary `deploy/Containerfile` ships.
//!
//! The eBPF build itself is not here: `agent/build.rs` does it, so a plain
//! `cargo build` gives a self-contained `agent` binary.

mod bench;
mod bench_arms;
mod bench_disk;
mod bench_tcp;
mod cpio;
mod setup;
mod vm;

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "stallwatch development tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install the prerequisites (apt packages, nightly rust-src, bpf-linker); skips what is present.
    Setup,
    /// Set up, build, and run the agent (`agent run`); extra arguments go to `agent run`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Set up, build once, and run every test (privileged ones one at a time).
    Test {
        /// Extra arguments for the test binaries (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Run the end-to-end tests in VMs on Debian's 6.1 and 6.12 kernels (pure cgroup v2).
    VmTest(vm::VmArgs),
    /// Measure a scrape, and the agent's overhead on context switches, disk I/O (fio) and loopback TCP (iperf3, wrk), each against no tracing and against bpftrace references.
    Bench(bench::BenchArgs),
    /// Set up, build, and copy the release binary to target/dist/agent, the file deploy/Containerfile copies.
    Dist,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let root = workspace_root()?;
    match cli.command {
        Task::Setup => setup::run(),
        Task::Run { args } => {
            setup::run()?;
            let agent = build_agent(&root)?;
            let listen = listen_of(&args).unwrap_or_else(|| "0.0.0.0:9740".into());
            println!(
                "xtask: starting {} run; metrics at http://{listen}/metrics (Ctrl-C stops it)",
                agent.display()
            );
            let status = Command::new(&agent)
                .arg("run")
                .args(&args)
                .status()
                .with_context(|| format!("starting {}", agent.display()))?;
            if !status.success() {
                bail!("agent exited with {status}");
            }
            Ok(())
        }
        Task::Test { args } => {
            setup::run()?;
            let agent = build_agent(&root)?;
            let mut cargo = cargo(&root);
            cargo
                .args(["test", "--workspace", "--release", "--", "--test-threads=1"])
                .args(&args)
                .env("STALLWATCH_AGENT_BIN", &agent);
            if setup::is_root() {
                // As root, a privileged test that cannot run is a failure, not a skip.
                cargo.env("STALLWATCH_REQUIRE_PRIVILEGED", "1");
            }
            let mut totals = run_tests(&mut cargo);
            if totals.as_ref().is_ok_and(|t| t.failed == 0) {
                println!("xtask test: host tests passed; now the VM matrix (pure cgroup v2)");
                match vm::run(&root, &agent, &vm::VmArgs::default()) {
                    Ok(vm) => {
                        if let Ok(t) = totals.as_mut() {
                            t.passed += vm.passed;
                            t.failed += vm.failed;
                            t.ignored += vm.ignored;
                        }
                    }
                    Err(e) => totals = Err(e),
                }
            }
            finish_tests(totals)
        }
        Task::VmTest(args) => {
            setup::run()?;
            let agent = build_agent(&root)?;
            finish_tests(vm::run(&root, &agent, &args))
        }
        Task::Bench(args) => {
            setup::run()?;
            let agent = build_agent(&root)?;
            bench::run(&root, &agent, &args)
        }
        Task::Dist => {
            setup::run()?;
            let agent = build_agent(&root)?;
            let dist = root.join("target/dist");
            std::fs::create_dir_all(&dist)
                .with_context(|| format!("creating {}", dist.display()))?;
            let shipped = dist.join("agent");
            std::fs::copy(&agent, &shipped)
                .with_context(|| format!("copying {} to {}", agent.display(), shipped.display()))?;
            println!(
                "xtask dist: {} (build the image from the repository root: \
                 podman build -f deploy/Containerfile -t stallwatch/agent:{} .)",
                shipped.display(),
                env!("CARGO_PKG_VERSION")
            );
            Ok(())
        }
    }
}

/// `--listen ADDR` or `--listen=ADDR` among the agent's arguments.
fn listen_of(args: &[OsString]) -> Option<String> {
    let args: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
    args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--listen=").map(str::to_owned).or_else(|| {
            (a == "--listen")
                .then(|| args.get(i + 1).map(|v| v.to_string()))
                .flatten()
        })
    })
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_owned)
        .context("xtask has no parent directory")
}

pub(crate) fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root);
    cmd
}

/// Builds the release `agent` binary (with its embedded probes) once.
pub(crate) fn build_agent(root: &Path) -> anyhow::Result<PathBuf> {
    run_checked(cargo(root).args(["build", "--release", "--package", "agent"]))?;
    let agent = root.join("target/release/agent");
    if !agent.is_file() {
        bail!("the build did not produce {}", agent.display());
    }
    Ok(agent)
}

/// Prints the one closing line that totals every test binary's result.
fn finish_tests(totals: anyhow::Result<TestTotals>) -> anyhow::Result<()> {
    match totals {
        Ok(t) => {
            println!(
                "tests: {} passed, {} failed, {} skipped",
                t.passed, t.failed, t.ignored
            );
            if t.passed == 0 {
                bail!("no test ran");
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Runs `cargo test`, passing its output through, and totals the results.
fn run_tests(cargo: &mut Command) -> anyhow::Result<TestTotals> {
    use std::io::BufRead as _;
    let mut child = cargo
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cargo:?}"))?;
    let stdout = child.stdout.take().context("cargo test has no stdout")?;
    let mut totals = TestTotals::default();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test's output")?;
        println!("{line}");
        totals.add(&line);
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() {
        println!(
            "tests: {} passed, {} failed, {} skipped",
            totals.passed, totals.failed, totals.ignored
        );
        bail!("cargo test failed: {status}");
    }
    Ok(totals)
}

#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct TestTotals {
    pub(crate) passed: u64,
    pub(crate) failed: u64,
    pub(crate) ignored: u64,
}

impl TestTotals {
    /// Adds `test result: ok. 3 passed; 0 failed; 1 ignored; …`.
    pub(crate) fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match kind {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

pub(crate) fn run_checked(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_every_test_binary() {
        let mut totals = TestTotals::default();
        totals.add("test result: ok. 30 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        totals
            .add("test result: FAILED. 2 passed; 1 failed; 3 ignored; 0 measured; 0 filtered out");
        totals.add("test something ... ok");
        assert_eq!(
            totals,
            TestTotals {
                passed: 32,
                failed: 1,
                ignored: 3
            }
        );
    }

    #[test]
    fn finds_the_listen_address_among_agent_arguments() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            listen_of(&args(&["--listen", "127.0.0.1:1"])).as_deref(),
            Some("127.0.0.1:1")
        );
        assert_eq!(
            listen_of(&args(&["--listen=[::1]:2"])).as_deref(),
            Some("[::1]:2")
        );
        assert_eq!(listen_of(&args(&["--log-format", "json"])), None);
    }
}
