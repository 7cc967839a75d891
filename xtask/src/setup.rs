//! `cargo xtask setup`: installs every prerequisite, skipping what is there.

use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::run_checked;

/// Debian packages, and why each is needed.
const APT_PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "LLVM 22, which bpf-linker links against"),
    (
        "prometheus",
        "promtool, which checks the exposition in the tests",
    ),
    (
        "bpftrace",
        "the reference run-queue histogram in the benchmark",
    ),
    (
        "linux-perf",
        "perf bench sched pipe, the benchmark's counted context switches",
    ),
    ("fio", "the disk I/O load in the benchmark"),
    ("iperf3", "the TCP stream load in the benchmark"),
    ("wrk", "the TCP request load in the benchmark"),
    ("iproute2", "ip netns and tc, for the shaped-link TCP test"),
    ("tmux", "the terminal that the `agent top` test types into"),
    (
        "protobuf-compiler",
        "protoc, which generates the CRI client (k8s-cri's build script)",
    ),
    (
        "containerd",
        "the container runtime the CRI test runs pods on",
    ),
    ("runc", "the OCI runtime under containerd"),
    ("busybox-static", "the VM tests' guest userland"),
    (
        "qemu-system-data",
        "firmware for the VM tests' qemu (qemu itself is unpacked, not installed)",
    ),
    ("seabios", "BIOS for the VM tests' qemu"),
    ("ipxe-qemu", "option ROMs for the VM tests' qemu"),
];
/// Shared libraries of Debian's qemu-system-x86 7.2, which the VM tests
/// unpack rather than install (installing it would remove the newer qemu-utils).
const QEMU_LIBRARIES: &[&str] = &[
    "libaio1",
    "libbpf1",
    "libcapstone4",
    "libfdt1",
    "libfuse3-3",
    "libglib2.0-0",
    "libibverbs1",
    "libjpeg62-turbo",
    "libnuma1",
    "libpixman-1-0",
    "libpmem1",
    "libpng16-16",
    "librdmacm1",
    "libsasl2-2",
    "libseccomp2",
    "libslirp0",
    "liburing2",
    "libvdeplug2",
];
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

pub fn run() -> anyhow::Result<()> {
    apt_packages()?;
    nightly_rust_src()?;
    bpf_linker()?;
    println!("xtask setup: everything is installed");
    Ok(())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .map(|(name, _)| *name)
        .chain(QEMU_LIBRARIES.iter().copied())
        .filter(|name| !dpkg_installed(name))
        .collect();
    if missing.is_empty() {
        println!("xtask setup: apt packages present");
        return Ok(());
    }
    for name in &missing {
        let why = APT_PACKAGES
            .iter()
            .find(|(n, _)| n == name)
            .map_or("a library of the VM tests' qemu", |(_, why)| *why);
        println!("xtask setup: installing {name} ({why})");
    }
    if !is_root() {
        bail!(
            "installing {} needs root: run `sudo cargo xtask setup`",
            missing.join(" ")
        );
    }
    run_checked(Command::new("apt-get").args(["update", "-q"]))?;
    run_checked(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn dpkg_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", name])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn nightly_rust_src() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("running rustup (is rustup installed?)")?;
    if installed.status.success() && String::from_utf8_lossy(&installed.stdout).contains("rust-src")
    {
        println!("xtask setup: nightly rust-src present");
        return Ok(());
    }
    if !installed.status.success() {
        println!("xtask setup: installing the nightly toolchain (builds the eBPF probes)");
        run_checked(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    println!("xtask setup: adding rust-src to nightly (the eBPF build needs -Z build-std=core)");
    run_checked(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

fn bpf_linker() -> anyhow::Result<()> {
    let present = Command::new("bpf-linker")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        println!("xtask setup: bpf-linker present");
        return Ok(());
    }
    println!("xtask setup: building bpf-linker against LLVM 22 (takes a few minutes)");
    run_checked(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", LLVM_PREFIX),
    )
}
