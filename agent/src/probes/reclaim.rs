//! Memory reclaim stalls: the userspace half of
//! `agent-ebpf/src/probes/reclaim.rs`. Attaches the vmscan raw tracepoints
//! and reads the per-cgroup, per-kind stall histograms when scraped.

use agent_ebpf::{
    CgroupId,
    histogram::Histogram,
    reclaim::{HIST_MAP, KIND_NAMES, ReclaimKey},
};
use aya::{
    Ebpf,
    maps::{HashMap, MapData, MapError},
};

use super::{LoadError, take_map};

pub const PROBE: &str = "reclaim";

/// (program, raw tracepoint).
const PROGRAMS: [(&str, &str); 4] = [
    ("reclaim_direct_begin", "mm_vmscan_direct_reclaim_begin"),
    ("reclaim_direct_end", "mm_vmscan_direct_reclaim_end"),
    ("reclaim_memcg_begin", "mm_vmscan_memcg_reclaim_begin"),
    ("reclaim_memcg_end", "mm_vmscan_memcg_reclaim_end"),
];

pub fn attach(ebpf: &mut Ebpf) -> Result<(), String> {
    super::attach_raw_all(ebpf, &PROGRAMS)
}

pub struct ReclaimMaps {
    hist: HashMap<MapData, ReclaimKey, Histogram>,
}

impl ReclaimMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, LoadError> {
        Ok(Self {
            hist: take_map(ebpf, HIST_MAP)?,
        })
    }

    /// Appends every histogram to `out`.
    pub fn read_into(&self, out: &mut Vec<(ReclaimKey, Histogram)>) -> Result<(), MapError> {
        super::read_entries(&self.hist, out)
    }

    /// Drops the histograms of a cgroup that no longer exists.
    pub fn forget(&mut self, cgroup: CgroupId) -> Result<(), MapError> {
        for kind in 0..KIND_NAMES.len() as u32 {
            super::remove_entry(
                &mut self.hist,
                &ReclaimKey {
                    cgroup,
                    kind,
                    _pad: 0,
                },
            )?;
        }
        Ok(())
    }
}
