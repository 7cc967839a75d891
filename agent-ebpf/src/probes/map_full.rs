//! Counting failed inserts into bounded maps (see `agent_ebpf::map_full`).

use agent_ebpf::map_full::{MAP_FULL_ENTRIES, MapId};
use aya_ebpf::{EbpfContext, macros::map, maps::Array};
use aya_log_ebpf::warn;

#[map(name = "MAP_FULL")]
static MAP_FULL: Array<u64> = Array::with_max_entries(MAP_FULL_ENTRIES, 0);

/// Counts one insert into `map` that failed with `err`. The first failure of
/// each map is also logged, so the agent's log says which flag to raise.
#[inline(always)]
pub fn record<C: EbpfContext>(ctx: &C, map: MapId, err: i32) {
    let Some(counter) = MAP_FULL.get_ptr_mut(map as u32) else {
        return;
    };
    // SAFETY: `counter` points into an array map value, valid for the life of
    // the program; it is only ever updated atomically.
    if unsafe { core::ptr::read_volatile(counter) } == 0 {
        warn!(
            ctx,
            "stallwatch: bpf map {} is full (insert returned {}); samples are being dropped",
            map as u32,
            err
        );
    }
    // SAFETY: as above.
    unsafe { crate::atomic_add(counter, 1) };
}
