//! `cargo xtask vm-test`: the agent's end-to-end tests in VMs, on Debian's
//! LTS kernels with pure cgroup v2, as most production nodes run.
//!
//! The guest runs the very test binaries the host runs (`tests/tests/*.rs`),
//! so each scenario is defined once. The host fetches and caches Debian's
//! kernels and qemu 7.2 (unpacked, never installed), packs the agent, the
//! test binaries, their shared libraries and a static busybox into an
//! initramfs, boots each kernel under TCG with a timeout, and reads the
//! results off the serial console.

use std::{
    ffi::OsString,
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{TestTotals, cargo, cpio::Cpio, run_checked};

/// A Debian kernel to test on.
#[derive(Debug, Clone, Copy)]
struct GuestKernel {
    name: &'static str,
    package: &'static str,
}

const KERNELS: [GuestKernel; 2] = [
    GuestKernel {
        name: "6.1",
        package: "linux-image-6.1.0-56-amd64",
    },
    GuestKernel {
        name: "6.12",
        package: "linux-image-6.12.117+deb12-amd64",
    },
];

/// Host tests that need tools the guest does not have, and why.
const GUEST_SKIPS: &[(&str, &str)] = &[
    (
        "agrees_with_bpftrace_on_the_same_workload",
        "needs bpftrace",
    ),
    ("exposition_passes_promtool", "needs promtool"),
    ("device_totals_agree_with_bpftrace", "needs bpftrace"),
    (
        "rtt_grows_when_the_link_is_slowed",
        "needs iproute2's ip netns and tc (busybox has neither)",
    ),
    (
        "retransmits_agree_with_the_kernel_s_own_count",
        "needs iproute2's ip netns and tc (busybox has neither)",
    ),
    (
        "the_live_view_sorts_by_throttling_on_keys_and_q_restores_the_terminal",
        "needs tmux",
    ),
    (
        "the_live_view_says_when_the_agent_cannot_be_reached_and_keeps_trying",
        "needs tmux",
    ),
    (
        "a_pods_series_carry_its_kubernetes_names_until_it_is_removed",
        "needs containerd and runc",
    ),
    (
        "a_runtime_that_goes_away_keeps_the_labels_and_is_reconnected",
        "needs containerd and runc",
    ),
    (
        "the_rules_pass_promtool_and_their_unit_tests",
        "needs promtool",
    ),
    (
        "prometheus_records_the_throttled_ratio_of_a_throttled_pod",
        "needs containerd, runc and prometheus",
    ),
    (
        "a_throttled_container_gets_a_higher_limit_and_an_idle_one_a_smaller_request",
        "needs containerd, runc and prometheus",
    ),
    (
        "a_prometheus_without_the_agents_series_is_a_clear_error",
        "needs prometheus",
    ),
    (
        "every_manifest_is_a_kubernetes_kind_it_knows",
        "reads the repository's deploy/",
    ),
    (
        "the_daemonset_matches_what_the_agent_accepts",
        "reads the repository's deploy/",
    ),
    (
        "every_kubernetes_object_is_valid_for_the_kubernetes_1_33_schema",
        "reads the repository's deploy/",
    ),
    (
        "the_hpas_scale_on_metrics_the_adapter_serves_from_recorded_rules",
        "reads the repository's deploy/",
    ),
    (
        "the_image_ships_the_binary_xtask_dist_builds_at_the_daemonsets_version",
        "reads the repository's deploy/",
    ),
];

/// Size of the guest's scratch disk.
const SCRATCH_DISK_BYTES: u64 = 64 << 20;

/// qemu's firmware directories, linked from the unpacked tree to the
/// system's (qemu 7.2 looks for them next to its binary).
const FIRMWARE: [(&str, &str); 3] = [
    ("usr/share/qemu", "/usr/share/qemu"),
    ("usr/share/seabios", "/usr/share/seabios"),
    ("usr/lib/ipxe", "/usr/lib/ipxe"),
];

const BEGIN: &str = "STALLWATCH-VM-BEGIN";
const EXIT: &str = "STALLWATCH-VM-EXIT";
const END: &str = "STALLWATCH-VM-END";

#[derive(Debug, clap::Args)]
pub struct VmArgs {
    /// Which kernels: 6.1, 6.12 or all.
    #[arg(long, default_value = "all")]
    kernel: String,
    /// Seconds one VM may take before it is killed and reported as timed out.
    #[arg(long, default_value_t = 150)]
    timeout: u64,
    /// A test name filter, passed to the test binaries in the guest.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    filter: Vec<OsString>,
}

impl Default for VmArgs {
    fn default() -> Self {
        Self {
            kernel: "all".into(),
            timeout: 150,
            filter: Vec::new(),
        }
    }
}

/// The outcome of one VM.
#[derive(Debug)]
struct VmReport {
    kernel: &'static str,
    release: String,
    /// (test binary, exit code).
    binaries: Vec<(String, i32)>,
    totals: TestTotals,
    finished: bool,
    timed_out: bool,
    /// The guest kernel itself stalled (see [`KERNEL_STALL`]).
    stalled: Option<String>,
    console: PathBuf,
}

/// Console lines that mean the guest kernel stopped making progress. Under
/// TCG this happens to about one guest boot in seven, on both kernels: an
/// `int3` oops where a vCPU runs kernel text just live-patched for a
/// tracepoint, or a CPU spinning on a cross-CPU call the other vCPU never
/// takes (sometimes silently, until the timeout). Such a VM is stopped at
/// once and run again, up to [`ATTEMPTS`] times in all; a hang the agent
/// causes would repeat every time and still fail.
const ATTEMPTS: u32 = 3;

const KERNEL_STALL: [&str; 3] = ["soft lockup", "self-detected stall", "Oops:"];

/// Which sign of a stalled guest kernel a console line shows, if any.
fn stall_sign(line: &str) -> Option<&'static str> {
    KERNEL_STALL.into_iter().find(|sign| line.contains(sign))
}

pub fn run(root: &Path, agent: &Path, args: &VmArgs) -> anyhow::Result<TestTotals> {
    let kernels: Vec<GuestKernel> = match args.kernel.as_str() {
        "all" => KERNELS.to_vec(),
        name => vec![
            *KERNELS
                .iter()
                .find(|k| k.name == name)
                .with_context(|| format!("--kernel {name}: choose 6.1, 6.12 or all"))?,
        ],
    };
    let cache = root.join("target/vm-cache");
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let qemu = ensure_qemu(&cache)?;
    let tests = build_guest_tests(root)?;
    let mut images = Vec::new();
    let mut modules = Vec::new();
    for kernel in &kernels {
        let image = ensure_kernel(&cache, *kernel)?;
        modules.push(virtio_blk_modules(&cache, *kernel)?);
        images.push(image);
    }
    let initramfs = cache.join("initramfs.cpio");
    build_initramfs(&initramfs, agent, &tests, &modules, &args.filter)?;

    let mut reports = Vec::new();
    for (kernel, image) in kernels.into_iter().zip(images) {
        println!(
            "xtask vm-test: booting Debian {} ({}) under TCG",
            kernel.name,
            image.display()
        );
        let timeout = Duration::from_secs(args.timeout);
        let mut report = run_vm(&qemu, &image, &initramfs, kernel, &cache, timeout)?;
        for attempt in 2..=ATTEMPTS {
            let why = match (&report.stalled, report.timed_out) {
                (Some(stall), _) => format!("its kernel stalled ({stall})"),
                (None, true) => format!("it timed out after {timeout:?}"),
                (None, false) => break,
            };
            let kept = report
                .console
                .with_extension(format!("attempt-{}.log", attempt - 1));
            let _ = fs::rename(&report.console, &kept);
            println!(
                "xtask vm-test: the Debian {} guest failed to finish: {why}; console kept in {}; attempt {attempt} of {ATTEMPTS}",
                kernel.name,
                kept.display()
            );
            report = run_vm(&qemu, &image, &initramfs, kernel, &cache, timeout)?;
        }
        reports.push(report);
    }

    let mut totals = TestTotals::default();
    let mut failed = Vec::new();
    println!();
    for report in &reports {
        let ok = report.finished
            && report.binaries.iter().all(|(_, rc)| *rc == 0)
            && !report.binaries.is_empty();
        println!(
            "vm {:<5} {:<24} cgroup v2 only: {} ({} passed, {} failed){}",
            report.kernel,
            report.release,
            if ok { "ok" } else { "FAILED" },
            report.totals.passed,
            report.totals.failed,
            match (&report.stalled, report.timed_out) {
                (Some(_), _) => ", guest kernel stalled on every attempt",
                (None, true) => ", timed out on every attempt",
                (None, false) => "",
            }
        );
        for (binary, rc) in &report.binaries {
            println!("    {binary:<12} exit {rc}");
        }
        if !ok {
            println!("    console log: {}", report.console.display());
            failed.push(report.kernel);
        }
        totals.passed += report.totals.passed;
        totals.failed += report.totals.failed;
        totals.ignored += report.totals.ignored;
    }
    if !failed.is_empty() {
        bail!("the VM tests failed on {}", failed.join(", "));
    }
    Ok(totals)
}

/// qemu 7.2 from Debian, unpacked under the cache (installing it would
/// remove the machine's newer qemu-utils).
fn ensure_qemu(cache: &Path) -> anyhow::Result<PathBuf> {
    let tree = cache.join("qemu");
    let binary = tree.join("usr/bin/qemu-system-x86_64");
    if !binary.is_file() {
        for package in ["qemu-system-x86", "qemu-system-common"] {
            let deb = download(cache, package)?;
            unpack(&deb, &tree)?;
        }
    }
    for (inside, system) in FIRMWARE {
        let link = tree.join(inside);
        if fs::read_link(&link).is_ok_and(|t| t == Path::new(system)) {
            continue;
        }
        if link.is_dir() && !link.is_symlink() {
            fs::remove_dir_all(&link).with_context(|| format!("removing {}", link.display()))?;
        } else {
            let _ = fs::remove_file(&link);
        }
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::os::unix::fs::symlink(system, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    // Without it qemu falls back to network boot and hangs for minutes.
    let linuxboot = Path::new("/usr/share/qemu/linuxboot_dma.bin");
    if !linuxboot.is_file() {
        bail!(
            "{} is missing: run `cargo xtask setup` (it installs qemu-system-data)",
            linuxboot.display()
        );
    }
    Ok(binary)
}

fn ensure_kernel(cache: &Path, kernel: GuestKernel) -> anyhow::Result<PathBuf> {
    let tree = cache.join("kernels").join(kernel.package);
    if let Some(image) = find_vmlinuz(&tree) {
        return Ok(image);
    }
    let deb = download(cache, kernel.package)?;
    unpack(&deb, &tree)?;
    find_vmlinuz(&tree).with_context(|| format!("{} has no boot/vmlinuz-*", deb.display()))
}

/// The modules a guest needs for its virtio scratch disk, in load order:
/// Debian builds them as modules on 6.1, and builds all but `virtio_blk` in
/// on 6.12. A module that is built in has no file and is skipped.
const VIRTIO_BLK_MODULES: [&str; 6] = [
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci",
    "drivers/block/virtio_blk",
];

/// A kernel's release and the module files of [`VIRTIO_BLK_MODULES`] it
/// has, in load order (`virtio_blk` at least).
fn virtio_blk_modules(cache: &Path, kernel: GuestKernel) -> anyhow::Result<(String, Vec<PathBuf>)> {
    let modules = cache
        .join("kernels")
        .join(kernel.package)
        .join("lib/modules");
    let release = fs::read_dir(&modules)
        .with_context(|| format!("listing {}", modules.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .with_context(|| format!("{} is empty", modules.display()))?;
    let kernel_dir = modules.join(&release).join("kernel");
    let files: Vec<PathBuf> = VIRTIO_BLK_MODULES
        .iter()
        .filter_map(|module| {
            [".ko", ".ko.xz"]
                .iter()
                .map(|ext| kernel_dir.join(format!("{module}{ext}")))
                .find(|path| path.is_file())
        })
        .collect();
    if !files
        .iter()
        .any(|f| f.to_string_lossy().contains("virtio_blk"))
    {
        bail!("no virtio_blk module in {}", kernel_dir.display());
    }
    Ok((release, files))
}

fn find_vmlinuz(tree: &Path) -> Option<PathBuf> {
    fs::read_dir(tree.join("boot"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
}

/// `apt-get download` into the cache, once.
fn download(cache: &Path, package: &str) -> anyhow::Result<PathBuf> {
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let find = || {
        fs::read_dir(&debs)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
            })
    };
    if let Some(deb) = find() {
        return Ok(deb);
    }
    println!("xtask vm-test: downloading {package}");
    run_checked(
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(&debs),
    )?;
    find().with_context(|| {
        format!(
            "apt-get download {package} left no .deb in {}",
            debs.display()
        )
    })
}

fn unpack(deb: &Path, into: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(into).with_context(|| format!("creating {}", into.display()))?;
    run_checked(Command::new("dpkg").arg("-x").arg(deb).arg(into))
}

/// The test binaries of `tests/`, built for the host (the guest runs the
/// same x86_64 userspace).
struct GuestTests {
    /// (name, path) of each integration test binary.
    tests: Vec<(String, PathBuf)>,
    /// (name, path) of each helper program the tests run (`tests/src/bin`).
    helpers: Vec<(String, PathBuf)>,
}

fn build_guest_tests(root: &Path) -> anyhow::Result<GuestTests> {
    let output = cargo(root)
        // The same flags as `cargo xtask test`, so the host's build is reused.
        .args(["test", "--workspace", "--release", "--no-run"])
        .args(["--message-format", "json"])
        .stderr(Stdio::inherit())
        .output()
        .context("building the test binaries")?;
    if !output.status.success() {
        bail!("building the test binaries failed: {}", output.status);
    }
    let mut built = GuestTests {
        tests: Vec::new(),
        helpers: Vec::new(),
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_kind = |kind: &str| {
            message["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|v| v == kind))
        };
        let of_tests = message["manifest_path"]
            .as_str()
            .is_some_and(|p| p.ends_with("/tests/Cargo.toml"));
        let (Some(name), Some(exe)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) else {
            continue;
        };
        let entry = (name.to_owned(), PathBuf::from(exe));
        // A bin target is also built as a unit-test harness: not a helper.
        let harness = message["profile"]["test"].as_bool() == Some(true);
        match (of_tests, is_kind("test"), is_kind("bin") && !harness) {
            (true, true, _) => built.tests.push(entry),
            (true, _, true) => built.helpers.push(entry),
            _ => {}
        }
    }
    if built.tests.is_empty() {
        bail!("cargo built no test binaries for the guest");
    }
    Ok(built)
}

fn build_initramfs(
    path: &Path,
    agent: &Path,
    built: &GuestTests,
    modules: &[(String, Vec<PathBuf>)],
    filter: &[OsString],
) -> anyhow::Result<()> {
    let file = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut cpio = Cpio::new(std::io::BufWriter::new(file));
    for dir in [
        "/bin",
        "/sbin",
        "/proc",
        "/sys",
        "/dev",
        "/tmp",
        "/root",
        "/stallwatch",
        "/stallwatch/tests",
        "/stallwatch/bin",
    ] {
        cpio.dir(dir)?;
    }
    let busybox = Path::new("/bin/busybox");
    cpio.file("/bin/busybox", 0o755, &read(busybox)?)?;
    cpio.symlink("/bin/sh", "busybox")?;
    cpio.file("/init", 0o755, init_script(filter).as_bytes())?;
    cpio.file("/stallwatch/agent", 0o755, &read(agent)?)?;
    let mut executables = vec![agent.to_owned()];
    for (name, exe) in &built.tests {
        cpio.file(&format!("/stallwatch/tests/{name}"), 0o755, &read(exe)?)?;
        executables.push(exe.clone());
    }
    for (name, exe) in &built.helpers {
        cpio.file(&format!("/stallwatch/bin/{name}"), 0o755, &read(exe)?)?;
        executables.push(exe.clone());
    }
    // Their shared libraries, at the paths the dynamic loader expects.
    let mut dirs: Vec<String> = Vec::new();
    for library in shared_libraries(&executables)? {
        let mut dir = PathBuf::new();
        for component in library
            .parent()
            .into_iter()
            .flat_map(Path::components)
            .skip(1)
        {
            dir.push(component);
            let dir = format!("/{}", dir.display());
            if !dirs.contains(&dir)
                && !["/bin", "/sbin", "/proc", "/sys", "/dev", "/tmp"].contains(&dir.as_str())
            {
                cpio.dir(&dir)?;
                dirs.push(dir);
            }
        }
        cpio.file(&library.to_string_lossy(), 0o755, &read(&library)?)?;
    }
    // Each kernel's virtio disk modules, as /lib/modules/<release>/<N>-<file>
    // so that the guest loads them in order.
    for dir in ["/lib", "/lib/modules"] {
        if !dirs.iter().any(|d| d == dir) {
            cpio.dir(dir)?;
            dirs.push(dir.to_owned());
        }
    }
    for (release, files) in modules {
        let dir = format!("/lib/modules/{release}");
        cpio.dir(&dir)?;
        for (index, module) in files.iter().enumerate() {
            let name = module
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            cpio.file(&format!("{dir}/{index}-{name}"), 0o644, &read(module)?)?;
        }
    }
    cpio.finish()?;
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Every library `ldd` names for `executables`, and the loader.
fn shared_libraries(executables: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut libraries: Vec<PathBuf> = Vec::new();
    for exe in executables {
        let output = Command::new("ldd")
            .arg(exe)
            .output()
            .context("running ldd")?;
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next(),
                None => line
                    .split_whitespace()
                    .next()
                    .filter(|p| p.starts_with('/')),
            };
            if let Some(path) = path.filter(|p| p.starts_with('/')).map(PathBuf::from)
                && !libraries.contains(&path)
            {
                libraries.push(path);
            }
        }
    }
    Ok(libraries)
}

/// The guest's /init: mount what a node has, pure cgroup v2 with the cpu,
/// memory and io controllers enabled, then run every test binary.
fn init_script(filter: &[OsString]) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut args: Vec<String> = vec!["--test-threads=1".into()];
    for (test, _) in GUEST_SKIPS {
        args.push("--skip".into());
        args.push(quote(test));
    }
    args.extend(filter.iter().map(|f| quote(&f.to_string_lossy())));
    format!(
        r#"#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin HOME=/root TMPDIR=/tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
echo "+cpu +memory +io" > /sys/fs/cgroup/cgroup.subtree_control
ip link set lo up
# The scratch disk for the disk I/O tests: qemu's virtio disk, raw.
for m in /lib/modules/$(uname -r)/*; do
    case $m in *.xz) unxz $m; m=${{m%.xz}};; esac
    insmod $m
done
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 0.5; done
[ -b /dev/vda ] && export STALLWATCH_TEST_SCRATCH_DISK=/dev/vda
echo "{BEGIN} $(uname -r) controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control) scratch disk: ${{STALLWATCH_TEST_SCRATCH_DISK:-none}}"
for t in /stallwatch/tests/*; do
    name=${{t##*/}}
    echo "STALLWATCH-VM-RUN $name"
    STALLWATCH_AGENT_BIN=/stallwatch/agent STALLWATCH_TEST_HELPERS=/stallwatch/bin \
        STALLWATCH_REQUIRE_PRIVILEGED=1 "$t" {args} 2>&1
    echo "{EXIT} $name $?"
done
echo "{END}"
poweroff -f
"#,
        args = args.join(" ")
    )
}

fn run_vm(
    qemu: &Path,
    image: &Path,
    initramfs: &Path,
    kernel: GuestKernel,
    cache: &Path,
    timeout: Duration,
) -> anyhow::Result<VmReport> {
    let console = cache.join(format!("console-{}.log", kernel.name));
    // A fresh, sparse scratch disk for the guest's direct I/O.
    let scratch = cache.join(format!("scratch-{}.img", kernel.name));
    fs::File::create(&scratch)
        .and_then(|f| f.set_len(SCRATCH_DISK_BYTES))
        .with_context(|| format!("creating {}", scratch.display()))?;
    let mut child = Command::new(qemu)
        .args([
            "-accel",
            "tcg",
            "-m",
            "1536",
            "-smp",
            "2",
            "-nodefaults",
            "-no-reboot",
        ])
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
        .arg("-kernel")
        .arg(image)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=4"])
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,cache=writeback",
            scratch.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", qemu.display()))?;
    let stdout = child.stdout.take().context("qemu has no stdout")?;
    let stderr = child.stderr.take().context("qemu has no stderr")?;
    let (tx, rx) = mpsc::channel::<String>();
    let tx_err = tx.clone();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx_err.send(format!("qemu: {line}")).is_err() {
                break;
            }
        }
    });

    let mut report = VmReport {
        kernel: kernel.name,
        release: String::new(),
        binaries: Vec::new(),
        totals: TestTotals::default(),
        finished: false,
        timed_out: false,
        stalled: None,
        console: console.clone(),
    };
    let mut log = String::new();
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            report.timed_out = true;
            break;
        }
        match rx.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(line) => {
                let line = line.trim_end_matches('\r').to_owned();
                if let Some(rest) = line.strip_prefix(BEGIN) {
                    report.release = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                } else if let Some(rest) = line.strip_prefix(EXIT) {
                    let mut words = rest.split_whitespace();
                    if let (Some(name), Some(rc)) =
                        (words.next(), words.next().and_then(|r| r.parse().ok()))
                    {
                        report.binaries.push((name.to_owned(), rc));
                    }
                } else if line == END {
                    report.finished = true;
                }
                report.totals.add(&line);
                if let Some(sign) = stall_sign(&line) {
                    report.stalled = Some(sign.to_owned());
                    println!("  [{}] {line}", kernel.name);
                    log.push_str(&line);
                    log.push('\n');
                    break;
                }
                if line.starts_with("test ")
                    || line.starts_with("STALLWATCH-VM")
                    || line.contains("panicked")
                {
                    println!("  [{}] {line}", kernel.name);
                }
                log.push_str(&line);
                log.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    // Drain what is left, then stop.
                    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                        report.totals.add(&line);
                        log.push_str(&line);
                        log.push('\n');
                    }
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if report.timed_out {
        println!(
            "xtask vm-test: Debian {} timed out after {timeout:?}; last console lines:",
            kernel.name
        );
        for line in log
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            println!("  | {line}");
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    fs::write(&console, &log).with_context(|| format!("writing {}", console.display()))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_a_stalled_guest_kernel_on_the_console() {
        // Lines from a 6.1 guest that hung under TCG.
        assert_eq!(
            stall_sign(
                "[   52.563615] watchdog: BUG: soft lockup - CPU#0 stuck for 44s! [agent:105]"
            ),
            Some("soft lockup")
        );
        assert_eq!(
            stall_sign("[   27.323365] rcu: INFO: rcu_preempt self-detected stall on CPU"),
            Some("self-detected stall")
        );
        assert_eq!(
            stall_sign("[   17.258039] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI"),
            Some("Oops:")
        );
        assert_eq!(
            stall_sign("[    5.505340] Memory cgroup out of memory: Killed process 109 (tail)"),
            None,
            "an OOM kill the test causes is not a stall"
        );
        assert_eq!(
            stall_sign("test a_removed_cgroup_disappears_from_the_scrape ... ok"),
            None
        );
    }

    #[test]
    fn the_guest_runs_every_test_binary_and_skips_what_needs_host_tools() {
        let init = init_script(&[OsString::from("oom")]);
        assert!(init.contains("echo \"+cpu +memory +io\" > /sys/fs/cgroup/cgroup.subtree_control"));
        assert!(init.contains("--skip 'agrees_with_bpftrace_on_the_same_workload'"));
        assert!(init.contains("--skip 'device_totals_agree_with_bpftrace'"));
        assert!(init.contains("export STALLWATCH_TEST_SCRATCH_DISK=/dev/vda"));
        assert!(init.contains("--test-threads=1"));
        assert!(init.trim_end().ends_with("poweroff -f"));
        assert!(init.contains(" 'oom' 2>&1"));
    }
}
