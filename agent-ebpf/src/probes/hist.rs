//! Adding a sample to a per-key latency histogram in a hash map, and
//! creating per-key values on first use: the hot path every signal shares.

use agent_ebpf::{
    histogram::{self, Histogram},
    map_full::MapId,
};
use aya_ebpf::{
    EbpfContext,
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{Array, HashMap},
};

use crate::map_full;

/// What `bpf_map_update_elem` returns for a `BPF_NOEXIST` insert of a key
/// that exists: a negative errno.
pub const EEXIST: i32 = -17;

/// A zeroed histogram to insert from: 408 bytes do not fit the BPF stack
/// comfortably next to everything else.
#[map(name = "HIST_ZERO")]
static HIST_ZERO: Array<Histogram> = Array::with_max_entries(1, 0);

/// The value of `key` in `map`, inserted from `zero` if absent; `None` if
/// it could not be (the map is full: counted against `map_id`).
#[inline(always)]
pub fn get_or_insert<C: EbpfContext, K, V>(
    ctx: &C,
    map: &HashMap<K, V>,
    key: &K,
    zero: &V,
    map_id: MapId,
) -> Option<*mut V> {
    if let Some(value) = map.get_ptr_mut(key) {
        return Some(value);
    }
    match map.insert(key, zero, u64::from(BPF_NOEXIST)) {
        Ok(()) => {}
        // Another CPU created it first: fine.
        Err(EEXIST) => {}
        Err(err) => {
            map_full::record(ctx, map_id, err);
            return None;
        }
    }
    map.get_ptr_mut(key)
}

/// Adds `ns` to the histogram of `key` in `map`, creating it if needed; an
/// insert refused because the map is full is counted against `map_id`.
#[inline(always)]
pub fn record<C: EbpfContext, K>(
    ctx: &C,
    map: &HashMap<K, Histogram>,
    key: &K,
    ns: u64,
    map_id: MapId,
) {
    let Some(zero) = HIST_ZERO.get(0) else { return };
    if let Some(hist) = get_or_insert(ctx, map, key, zero, map_id) {
        // SAFETY: `hist` points into a live hash map value.
        unsafe { add(hist, ns) };
    }
}

/// Adds `ns` to `*hist`.
///
/// # Safety
/// `hist` must point into a live map value whose fields are only ever
/// updated atomically, from any CPU.
#[inline(always)]
pub unsafe fn add(hist: *mut Histogram, ns: u64) {
    let slot = histogram::slot_for(ns);
    // SAFETY: per the function's contract.
    unsafe {
        let Some(bucket) = (*hist).buckets.get_mut(slot) else {
            return;
        };
        crate::atomic_add(bucket, 1);
        crate::atomic_add(&mut (*hist).sum_ns, ns);
    }
}
