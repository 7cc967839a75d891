//! Memory: usage, working set, composition, limits, events, faults.
//!
//! v2: `memory.current`, `memory.max`, `memory.high`, `memory.stat`,
//! `memory.events`, `memory.swap.current`. v1: `memory.usage_in_bytes`,
//! `memory.limit_in_bytes`, `memory.stat` (hierarchical `total_*` fields),
//! `memory.failcnt`, `memory.oom_control`.

use super::{Errors, parse};

/// Events of `memory.events` (v2); v1 has `max` (failcnt) and `oom_kill`.
pub const EVENTS: [&str; 5] = ["low", "high", "max", "oom", "oom_kill"];

/// v1 reports "no limit" as the page counter's maximum (LONG_MAX rounded
/// down to a page); anything this large is no limit.
const V1_UNLIMITED: u64 = 1 << 62;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MemoryStats {
    pub usage_bytes: Option<u64>,
    /// Usage minus inactive file pages: what the kubelet evicts on.
    pub working_set_bytes: Option<u64>,
    pub rss_bytes: Option<u64>,
    pub cache_bytes: Option<u64>,
    pub kernel_bytes: Option<u64>,
    pub swap_bytes: Option<u64>,
    /// `None` when unlimited.
    pub limit_bytes: Option<u64>,
    pub high_bytes: Option<u64>,
    /// Counts of [`EVENTS`], in that order.
    pub events: [Option<u64>; 5],
    pub major_faults: Option<u64>,
    pub workingset_refaults: Option<u64>,
    /// `inactive_file`, kept to compute the working set.
    inactive_file: Option<u64>,
}

impl MemoryStats {
    /// Derives the working set once usage and `inactive_file` are known.
    pub fn finish(&mut self) {
        if let (Some(usage), Some(inactive)) = (self.usage_bytes, self.inactive_file) {
            self.working_set_bytes = Some(usage.saturating_sub(inactive));
        }
    }

    fn add_refaults(&mut self, v: u64) {
        self.workingset_refaults = Some(self.workingset_refaults.unwrap_or(0) + v);
    }
}

/// v2 `memory.stat`.
pub fn stat_v2(text: &str, stats: &mut MemoryStats, errors: &mut Errors) {
    let mut kernel_parts: Option<u64> = None;
    for entry in parse::keyed(text) {
        let Ok((key, v)) = entry else {
            errors.malformed("memory.stat");
            continue;
        };
        match key {
            "anon" => stats.rss_bytes = Some(v),
            "file" => stats.cache_bytes = Some(v),
            "kernel" => stats.kernel_bytes = Some(v),
            // Before 5.18 there is no `kernel` line: add up its parts.
            "kernel_stack" | "pagetables" | "percpu" | "sock" | "slab" => {
                kernel_parts = Some(kernel_parts.unwrap_or(0) + v)
            }
            "inactive_file" => stats.inactive_file = Some(v),
            "pgmajfault" => stats.major_faults = Some(v),
            "workingset_refault" | "workingset_refault_anon" | "workingset_refault_file" => {
                stats.add_refaults(v)
            }
            _ => {}
        }
    }
    if stats.kernel_bytes.is_none() {
        stats.kernel_bytes = kernel_parts;
    }
}

/// v2 `memory.events`.
pub fn events_v2(text: &str, stats: &mut MemoryStats, errors: &mut Errors) {
    for entry in parse::keyed(text) {
        let Ok((key, v)) = entry else {
            errors.malformed("memory.events");
            continue;
        };
        if let Some(i) = EVENTS.iter().position(|e| *e == key) {
            stats.events[i] = Some(v);
        }
    }
}

/// A v2 limit file (`memory.max`, `memory.high`): `max` means none.
pub fn limit_v2(text: &str, file: &'static str, errors: &mut Errors) -> Option<u64> {
    match parse::number_or_max(text) {
        Some(limit) => limit,
        None => {
            errors.malformed(file);
            None
        }
    }
}

/// v1 `memory.stat`: the `total_*` fields include descendants, as v2's do.
pub fn stat_v1(text: &str, stats: &mut MemoryStats, errors: &mut Errors) {
    for entry in parse::keyed(text) {
        let Ok((key, v)) = entry else {
            errors.malformed("memory.stat");
            continue;
        };
        match key {
            "total_rss" => stats.rss_bytes = Some(v),
            "total_cache" => stats.cache_bytes = Some(v),
            "total_swap" => stats.swap_bytes = Some(v),
            "total_inactive_file" => stats.inactive_file = Some(v),
            "total_pgmajfault" => stats.major_faults = Some(v),
            "total_workingset_refault"
            | "total_workingset_refault_anon"
            | "total_workingset_refault_file" => stats.add_refaults(v),
            _ => {}
        }
    }
}

/// v1 `memory.limit_in_bytes`.
pub fn limit_v1(text: &str, errors: &mut Errors) -> Option<u64> {
    match parse::single(text) {
        Some(v) if v >= V1_UNLIMITED => None,
        Some(v) => Some(v),
        None => {
            errors.malformed("memory.limit_in_bytes");
            None
        }
    }
}

/// v1 `memory.oom_control`: its `oom_kill` count.
pub fn oom_control_v1(text: &str, stats: &mut MemoryStats, errors: &mut Errors) {
    for entry in parse::keyed(text) {
        match entry {
            Ok(("oom_kill", v)) => stats.events[4] = Some(v),
            Ok(_) => {}
            Err(_) => errors.malformed("memory.oom_control"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT_V2: &str = "anon 104857600\nfile 52428800\nkernel 4194304\nkernel_stack 98304\npagetables 409600\nsock 0\nshmem 0\nfile_mapped 1000\ninactive_anon 0\nactive_anon 104857600\ninactive_file 20971520\nactive_file 31457280\nunevictable 0\nslab 3000000\npgfault 5000\npgmajfault 7\nworkingset_refault_anon 3\nworkingset_refault_file 4\n";

    #[test]
    fn v2_working_set_is_usage_minus_inactive_file() {
        let mut stats = MemoryStats::default();
        let mut errors = Errors::default();
        stats.usage_bytes = parse::single("167772160\n");
        stat_v2(STAT_V2, &mut stats, &mut errors);
        events_v2(
            "low 0\nhigh 5\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n",
            &mut stats,
            &mut errors,
        );
        stats.finish();
        assert_eq!(stats.working_set_bytes, Some(167772160 - 20971520));
        assert_eq!(stats.rss_bytes, Some(104857600));
        assert_eq!(stats.cache_bytes, Some(52428800));
        assert_eq!(stats.kernel_bytes, Some(4194304));
        assert_eq!(stats.major_faults, Some(7));
        assert_eq!(stats.workingset_refaults, Some(7));
        assert_eq!(stats.events, [Some(0), Some(5), Some(12), Some(2), Some(1)]);
        assert_eq!(errors.total(), 0);
    }

    #[test]
    fn v2_kernel_memory_before_5_18_is_the_sum_of_its_parts() {
        let mut stats = MemoryStats::default();
        stat_v2(
            "anon 1\nkernel_stack 100\npagetables 200\npercpu 30\nsock 4\nslab 1000\nworkingset_refault 9\n",
            &mut stats,
            &mut Errors::default(),
        );
        assert_eq!(stats.kernel_bytes, Some(1334));
        assert_eq!(stats.workingset_refaults, Some(9));
    }

    #[test]
    fn max_is_no_limit_not_a_huge_number() {
        let mut errors = Errors::default();
        assert_eq!(limit_v2("max\n", "memory.max", &mut errors), None);
        assert_eq!(
            limit_v2("67108864\n", "memory.max", &mut errors),
            Some(67108864)
        );
        assert_eq!(limit_v1("9223372036854771712\n", &mut errors), None);
        assert_eq!(limit_v1("67108864\n", &mut errors), Some(67108864));
        assert_eq!(errors.total(), 0);
        assert_eq!(limit_v2("", "memory.max", &mut errors), None);
        assert_eq!(limit_v1("a lot", &mut errors), None);
        assert_eq!(errors.total(), 2);
    }

    #[test]
    fn v1_uses_hierarchical_totals_and_oom_control() {
        let mut stats = MemoryStats::default();
        let mut errors = Errors::default();
        stats.usage_bytes = Some(3_000_000);
        stat_v1(
            "cache 5\nrss 6\ninactive_file 7\ntotal_cache 2000000\ntotal_rss 900000\ntotal_inactive_file 500000\ntotal_pgmajfault 3\ntotal_workingset_refault_file 2\n",
            &mut stats,
            &mut errors,
        );
        oom_control_v1(
            "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n",
            &mut stats,
            &mut errors,
        );
        stats.finish();
        assert_eq!(stats.cache_bytes, Some(2_000_000));
        assert_eq!(stats.rss_bytes, Some(900_000));
        assert_eq!(stats.working_set_bytes, Some(2_500_000));
        assert_eq!(stats.events[4], Some(4));
        assert_eq!(stats.workingset_refaults, Some(2));
        assert_eq!(errors.total(), 0);
    }
}
