//! Builds the eBPF probes (`agent-ebpf`, for `bpfel-unknown-none`, with the
//! nightly toolchain and bpf-linker) into OUT_DIR, where `probes/mod.rs`
//! embeds them. `cargo xtask setup` installs what this needs.

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir)
        .parent()
        .context("the agent crate has no parent directory")?
        .join("agent-ebpf");
    let root_dir = ebpf_dir
        .to_str()
        .context("the agent-ebpf path is not UTF-8")?;
    if which_bpf_linker().is_none() {
        anyhow::bail!(
            "bpf-linker is not installed: run `cargo xtask setup` (it builds bpf-linker against LLVM 22)"
        );
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "agent-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}

fn which_bpf_linker() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("bpf-linker"))
        .find(|candidate| candidate.is_file())
}
