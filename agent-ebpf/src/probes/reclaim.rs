//! Memory reclaim stalls per cgroup.
//!
//! Raw tracepoints `mm_vmscan_direct_reclaim_begin/end` (the page allocator
//! reclaiming for a task) and `mm_vmscan_memcg_reclaim_begin/end` (a cgroup
//! at its limit reclaiming before it may charge more). Both pairs fire in the
//! stalled task's own context, so `current` is the task and its cgroup is the
//! right one; nothing is read from the arguments. A begin is remembered per
//! thread and kind; the end adds the stall to the cgroup's histogram.

use agent_ebpf::{
    histogram::Histogram,
    map_full::MapId,
    reclaim::{DEFAULT_MAX_RECLAIMERS, KIND_DIRECT, KIND_MEMCG, ReclaimKey},
};
use aya_ebpf::{
    EbpfContext,
    bindings::BPF_ANY,
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, raw_tracepoint},
    maps::HashMap,
    programs::RawTracePointContext,
};

use crate::{hist, map_full};

/// When a thread began reclaiming, keyed by `thread id | kind << 32`.
#[map(name = "RECLAIM_START")]
static RECLAIM_START: HashMap<u64, u64> = HashMap::with_max_entries(DEFAULT_MAX_RECLAIMERS, 0);

#[map(name = "RECLAIM_HIST")]
static RECLAIM_HIST: HashMap<ReclaimKey, Histogram> =
    HashMap::with_max_entries(agent_ebpf::runqueue::DEFAULT_MAX_CGROUPS, 0);

#[raw_tracepoint(tracepoint = "mm_vmscan_direct_reclaim_begin")]
pub fn reclaim_direct_begin(ctx: RawTracePointContext) -> i32 {
    begin(&ctx, KIND_DIRECT);
    0
}

#[raw_tracepoint(tracepoint = "mm_vmscan_direct_reclaim_end")]
pub fn reclaim_direct_end(ctx: RawTracePointContext) -> i32 {
    end(&ctx, KIND_DIRECT);
    0
}

#[raw_tracepoint(tracepoint = "mm_vmscan_memcg_reclaim_begin")]
pub fn reclaim_memcg_begin(ctx: RawTracePointContext) -> i32 {
    begin(&ctx, KIND_MEMCG);
    0
}

#[raw_tracepoint(tracepoint = "mm_vmscan_memcg_reclaim_end")]
pub fn reclaim_memcg_end(ctx: RawTracePointContext) -> i32 {
    end(&ctx, KIND_MEMCG);
    0
}

#[inline(always)]
fn thread_key(kind: u32) -> u64 {
    (bpf_get_current_pid_tgid() & 0xffff_ffff) | (u64::from(kind) << 32)
}

#[inline(always)]
fn begin<C: EbpfContext>(ctx: &C, kind: u32) {
    // SAFETY: a kernel helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Err(err) = RECLAIM_START.insert(thread_key(kind), now, u64::from(BPF_ANY)) {
        map_full::record(ctx, MapId::ReclaimStart, err);
    }
}

#[inline(always)]
fn end<C: EbpfContext>(ctx: &C, kind: u32) {
    let key = thread_key(kind);
    // SAFETY: a plain read of a u64 in a live hash map value.
    let Some(start) = (unsafe { RECLAIM_START.get(key) }).copied() else {
        // Began before the agent started: no honest sample.
        return;
    };
    let _ = RECLAIM_START.remove(key);
    // SAFETY: kernel helpers without preconditions.
    let (now, cgroup) = unsafe { (bpf_ktime_get_ns(), bpf_get_current_cgroup_id()) };
    let key = ReclaimKey {
        cgroup,
        kind,
        _pad: 0,
    };
    hist::record(
        ctx,
        &RECLAIM_HIST,
        &key,
        now.saturating_sub(start),
        MapId::ReclaimHist,
    );
}
