//! Memory reclaim stalls: the ABI of the `reclaim` probes. See
//! `src/probes/reclaim.rs`.

/// Per-cgroup, per-kind stall histograms, keyed by [`ReclaimKey`].
pub const HIST_MAP: &str = "RECLAIM_HIST";
/// Reclaims in progress, per thread and kind.
pub const START_MAP: &str = "RECLAIM_START";

/// Threads reclaiming at the same moment that can be tracked.
pub const DEFAULT_MAX_RECLAIMERS: u32 = 8_192;

/// Reclaim by the page allocator for a task (`mm_vmscan_direct_reclaim_*`).
pub const KIND_DIRECT: u32 = 0;
/// Reclaim by a cgroup at its memory limit (`mm_vmscan_memcg_reclaim_*`).
pub const KIND_MEMCG: u32 = 1;

/// The `kind` label of each kind.
pub const KIND_NAMES: [&str; 2] = ["direct", "memcg"];

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReclaimKey {
    pub cgroup: crate::CgroupId,
    pub kind: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, a u64 then two u32s: no padding, any bits valid.
unsafe impl aya::Pod for ReclaimKey {}
