//! stallwatch's kernel probes, built for `bpfel-unknown-none` by
//! `agent/build.rs` and embedded in the `agent` binary.
//!
//! One module per signal; the types and names shared with userspace live in
//! this crate's library. On the host this binary is an empty stub, so that
//! `cargo check`/`clippy` of the workspace need no BPF toolchain.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(
    target_arch = "bpf",
    expect(
        internal_features,
        reason = "BPF has no 64-bit AtomicU64; the intrinsic lowers to BPF_ATOMIC_ADD"
    )
)]

#[cfg(target_arch = "bpf")]
mod disk;
#[cfg(target_arch = "bpf")]
mod hist;
#[cfg(target_arch = "bpf")]
mod map_full;
#[cfg(target_arch = "bpf")]
mod reclaim;
#[cfg(target_arch = "bpf")]
mod runqueue;
#[cfg(target_arch = "bpf")]
mod tcp;

/// The kernel only lets GPL-compatible programs call `bpf_probe_read_kernel`.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// Adds `value` to `*dst` atomically (a BPF `lock xadd`), from any CPU.
///
/// # Safety
/// `dst` must point to a live, aligned `u64` in a map value.
#[cfg(target_arch = "bpf")]
#[inline(always)]
unsafe fn atomic_add(dst: *mut u64, value: u64) {
    // SAFETY: the caller guarantees `dst` is valid and aligned.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            dst, value,
        );
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this; it exists only
    // because `no_std` binaries must name a panic handler.
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
