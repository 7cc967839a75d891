//! The collector: what a scrape reads, in one place.
//!
//! Nothing is polled between scrapes. A scrape reads the kernel maps once,
//! resolves each cgroup id through the cached [`CgroupTree`] (rescanning when
//! it meets an unknown id, at most once per second), and deletes the kernel
//! state of cgroups that no longer exist, so maps and memory stay flat under
//! container churn. Buffers are reused from scrape to scrape.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use agent_ebpf::{CgroupId, histogram::Histogram, map_full::MapId};

use crate::{
    cgroup_tree::CgroupTree,
    labels::CgroupLabels,
    probes::{ProbeState, ProbeStatus, Probes, error_chain},
};

pub struct Collector {
    probes: Probes,
    tree: CgroupTree,
    /// Ids seen in a kernel map but not in the tree, and since when.
    unresolved: HashMap<CgroupId, Instant>,
    /// This scrape's run-queue histograms; the allocation is reused.
    runqueue: Vec<(CgroupId, Histogram)>,
    last_collect: Duration,
}

/// One scrape's data, borrowed from the collector.
pub struct View<'a> {
    pub probes: &'a [ProbeStatus],
    pub map_full: [(MapId, u64); agent_ebpf::map_full::MAP_FULL_ENTRIES as usize],
    pub tracked_cgroups: usize,
    pub collect_duration: Duration,
    tree: &'a CgroupTree,
    runqueue: &'a [(CgroupId, Histogram)],
}

impl View<'_> {
    /// Run-queue histograms of cgroups whose path is known.
    pub fn runqueue(&self) -> impl Iterator<Item = (&CgroupLabels, &Histogram)> {
        self.runqueue
            .iter()
            .filter_map(|(id, hist)| Some((self.tree.get(*id)?, hist)))
    }
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("probes", &self.probes)
            .field("cgroups", &self.tree.len())
            .finish_non_exhaustive()
    }
}

impl Collector {
    /// A collector over loaded probes; scans the cgroup tree once, so that
    /// readiness can report the first scan done.
    pub fn new(
        probes: Probes,
        mut tree: CgroupTree,
    ) -> Result<Self, crate::cgroup_tree::CgroupTreeError> {
        tree.scan(Instant::now())?;
        Ok(Self {
            probes,
            tree,
            unresolved: HashMap::new(),
            runqueue: Vec::new(),
            last_collect: Duration::ZERO,
        })
    }

    /// `Ok` once every enabled probe is attached and the cgroup tree has been
    /// scanned; otherwise what is missing.
    pub fn readiness(&self) -> Result<(), String> {
        let mut missing: Vec<String> = self
            .probes
            .status
            .iter()
            .filter(|s| s.state != ProbeState::Up)
            .map(ToString::to_string)
            .collect();
        if self.tree.last_scan().is_none() {
            missing.push(format!(
                "cgroup tree {} not scanned yet",
                self.tree.root().display()
            ));
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing.join("\n"))
        }
    }

    /// Reads the kernel maps and the cgroup tree for one scrape.
    pub fn collect(&mut self) -> View<'_> {
        let started = Instant::now();
        self.runqueue.clear();
        if let Some(maps) = &self.probes.runqueue
            && let Err(e) = maps.read_into(&mut self.runqueue)
        {
            tracing::warn!(
                "reading the run-queue histograms failed: {}",
                error_chain(&e)
            );
        }

        let missed = self
            .runqueue
            .iter()
            .any(|(id, _)| self.tree.get(*id).is_none());
        if self.tree.scan_due(Instant::now(), missed)
            && let Err(e) = self.tree.scan(Instant::now())
        {
            tracing::warn!(
                "rescanning cgroups failed, keeping the last scan: {}",
                error_chain(&e)
            );
        }
        self.forget_vanished(started);
        self.last_collect = started.elapsed();

        View {
            probes: &self.probes.status,
            map_full: self.probes.map_full_counts(),
            tracked_cgroups: self.runqueue.len(),
            collect_duration: self.last_collect,
            tree: &self.tree,
            runqueue: &self.runqueue,
        }
    }

    /// Deletes the kernel state of ids that a scan which started after they
    /// were read did not find: their cgroup is gone, and ids are never reused.
    fn forget_vanished(&mut self, read_at: Instant) {
        let Self {
            probes,
            tree,
            unresolved,
            runqueue,
            ..
        } = self;
        let last_scan = tree.last_scan();
        runqueue.retain(|(id, _)| {
            if tree.get(*id).is_some() {
                return true;
            }
            let first_seen = *unresolved.entry(*id).or_insert(read_at);
            if last_scan.is_some_and(|scan| scan > first_seen) {
                if let Some(maps) = probes.runqueue.as_mut()
                    && let Err(e) = maps.forget(*id)
                {
                    tracing::warn!(
                        "deleting run-queue state of cgroup {id}: {}",
                        error_chain(&e)
                    );
                }
                unresolved.remove(id);
                return false;
            }
            true
        });
        unresolved.retain(|id, _| tree.get(*id).is_none() && runqueue.iter().any(|(r, _)| r == id));
    }
}
