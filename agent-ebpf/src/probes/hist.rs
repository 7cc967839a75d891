//! Adding a sample to a per-key latency histogram in a hash map: the hot
//! path every latency signal shares.

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

const EEXIST: i32 = 17;

/// A zeroed histogram to insert from: 408 bytes do not fit the BPF stack
/// comfortably next to everything else.
#[map(name = "HIST_ZERO")]
static HIST_ZERO: Array<Histogram> = Array::with_max_entries(1, 0);

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
    let hist = match map.get_ptr_mut(key) {
        Some(hist) => hist,
        None => {
            let Some(zero) = HIST_ZERO.get(0) else { return };
            match map.insert(key, zero, u64::from(BPF_NOEXIST)) {
                Ok(()) => {}
                // Another CPU created it first: fine.
                Err(EEXIST) => {}
                Err(err) => {
                    map_full::record(ctx, map_id, err);
                    return;
                }
            }
            let Some(hist) = map.get_ptr_mut(key) else {
                return;
            };
            hist
        }
    };
    let slot = histogram::slot_for(ns);
    // SAFETY: `hist` points into a live hash map value; the fields are only
    // ever updated atomically, from any CPU.
    unsafe {
        let Some(bucket) = (*hist).buckets.get_mut(slot) else {
            return;
        };
        crate::atomic_add(bucket, 1);
        crate::atomic_add(&mut (*hist).sum_ns, ns);
    }
}
