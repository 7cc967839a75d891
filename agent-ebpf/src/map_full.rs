//! Counters of insertions that failed because a bounded map was full.
//!
//! One `u64` per map in the [`MAP_FULL`] array, indexed by [`MapId`]. The
//! exporter publishes them as `stallwatch_map_full_total{map}`, so a map that
//! is too small shows up as a number rather than as silently missing data.

/// Name of the per-map "insert failed: full" counter array.
pub const MAP_FULL: &str = "MAP_FULL";

/// The bounded maps whose overflow is counted.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapId {
    /// Per-task run-queue state (`RUNQ_TASKS`).
    RunqTasks = 0,
    /// Per-cgroup run-queue latency histograms (`RUNQ_HIST`).
    RunqHist = 1,
    /// Reclaims in progress (`RECLAIM_START`).
    ReclaimStart = 2,
    /// Per-cgroup reclaim stall histograms (`RECLAIM_HIST`).
    ReclaimHist = 3,
    /// Per-cgroup disk histograms and counters (`DISK_SERIES`).
    DiskSeries = 4,
    /// Disk requests in flight (`DISK_INFLIGHT`).
    DiskInflight = 5,
    /// Per-cgroup TCP histograms and counters (`TCP_SERIES`).
    TcpSeries = 6,
    /// TCP sockets followed (`TCP_SOCKETS`).
    TcpSockets = 7,
    /// Per-cgroup traffic counters (`NET_TRAFFIC`).
    NetTraffic = 8,
}

impl MapId {
    pub const ALL: [Self; 9] = [
        Self::RunqTasks,
        Self::RunqHist,
        Self::ReclaimStart,
        Self::ReclaimHist,
        Self::DiskSeries,
        Self::DiskInflight,
        Self::TcpSeries,
        Self::TcpSockets,
        Self::NetTraffic,
    ];

    /// The map's name, as in the `map` label.
    pub const fn map_name(self) -> &'static str {
        match self {
            Self::RunqTasks => crate::runqueue::TASKS_MAP,
            Self::RunqHist => crate::runqueue::HIST_MAP,
            Self::ReclaimStart => crate::reclaim::START_MAP,
            Self::ReclaimHist => crate::reclaim::HIST_MAP,
            Self::DiskSeries => crate::disk::SERIES_MAP,
            Self::DiskInflight => crate::disk::INFLIGHT_MAP,
            Self::TcpSeries => crate::tcp::SERIES_MAP,
            Self::TcpSockets => crate::tcp::SOCKETS_MAP,
            Self::NetTraffic => crate::tcp::TRAFFIC_MAP,
        }
    }
}

/// Number of entries in [`MAP_FULL`].
pub const MAP_FULL_ENTRIES: u32 = MapId::ALL.len() as u32;
