//! The collector: what a scrape reads, in one place.
//!
//! Nothing is polled between scrapes. A scrape reads the kernel maps once,
//! resolves each cgroup id through the cached [`CgroupTree`] (rescanning when
//! it meets an unknown id, at most once per second), and deletes the kernel
//! state of cgroups that no longer exist, so maps and memory stay flat under
//! container churn. Buffers are reused from scrape to scrape.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use agent_ebpf::{
    CgroupId,
    disk::{DiskKey, DiskSeries, OP_NAMES, UNMATCHED},
    histogram::Histogram,
    map_full::MapId,
    reclaim::{KIND_NAMES, ReclaimKey},
    tcp::{TcpSeries, Traffic},
};

use crate::{
    block_devices::{DeviceNames, kernel_dev},
    cgroup_tree::CgroupTree,
    cgroupfs::{
        CgroupStats, Errors, StatsReader,
        io::DeviceIo,
        pressure::{self, Stall},
    },
    cri::{Cri, CriHealth, KubeNames},
    labels::{CgroupLabels, NamePolicy},
    probes::{ProbeState, ProbeStatus, Probes, disk::DiskRead, error_chain, tcp::TcpRead},
};

/// Below this many cgroups, files are read on the scraping thread alone.
const PARALLEL_FROM: usize = 64;

/// A thread's share of reading cgroup files.
#[derive(Debug)]
struct Worker {
    reader: StatsReader,
    stats: Vec<(CgroupId, CgroupStats)>,
    devices: Vec<DeviceIo>,
}

/// Reads the files of `targets`, leaving out cgroups that vanish meanwhile.
fn read_some(
    reader: &mut StatsReader,
    targets: &[(CgroupId, &str)],
    out: &mut Vec<(CgroupId, CgroupStats)>,
    devices: &mut Vec<DeviceIo>,
) {
    for (id, path) in targets {
        let start = devices.len();
        match reader.read(path, devices) {
            Ok(stats) => out.push((*id, stats)),
            Err(_vanished) => devices.truncate(start),
        }
    }
}

/// The node's pressure files.
const NODE_PRESSURE: [&str; 3] = [
    "/proc/pressure/cpu",
    "/proc/pressure/memory",
    "/proc/pressure/io",
];

pub struct Collector {
    probes: Probes,
    tree: CgroupTree,
    /// Ids seen in a kernel map but not in the tree, and since when.
    unresolved: HashMap<CgroupId, Instant>,
    /// This scrape's run-queue and reclaim histograms; allocations reused.
    runqueue: Vec<(CgroupId, Histogram)>,
    reclaim: Vec<(ReclaimKey, Histogram)>,
    disk: DiskRead,
    tcp: TcpRead,
    /// Cgroup ids found gone in this scrape.
    stale: Vec<CgroupId>,
    /// Cgroup files, and this scrape's results (allocations reused).
    reader: StatsReader,
    /// One reader per core for large nodes, with buffers kept between scrapes.
    workers: Vec<Worker>,
    file_stats: Vec<(CgroupId, CgroupStats)>,
    devices: Vec<DeviceIo>,
    device_names: DeviceNames,
    node_pressure: [Stall; 3],
    /// Buffer for the node's pressure files, reused between scrapes.
    node_text: String,
    psi_absence_logged: bool,
    last_collect: Duration,
    /// Kubernetes names from the container runtime, and how they apply.
    names: Option<(Arc<Cri>, NamePolicy)>,
    /// (names generation, tree scan) the labels were last named at.
    named_at: Option<(u64, Option<Instant>)>,
    /// Container ids the runtime did not know at the last naming.
    unnamed: HashSet<String>,
}

/// A per-container disk series: (labels, device name, op, value).
pub type DiskRow<'a, V> = (&'a CgroupLabels, &'a str, &'static str, &'a V);

/// One scrape's data, borrowed from the collector.
pub struct View<'a> {
    pub probes: &'a [ProbeStatus],
    pub map_full: [(MapId, u64); agent_ebpf::map_full::MAP_FULL_ENTRIES as usize],
    pub tracked_cgroups: usize,
    pub collect_duration: Duration,
    tree: &'a CgroupTree,
    runqueue: &'a [(CgroupId, Histogram)],
    reclaim: &'a [(ReclaimKey, Histogram)],
    disk: &'a DiskRead,
    tcp: &'a TcpRead,
    file_stats: &'a [(CgroupId, CgroupStats)],
    devices: &'a [DeviceIo],
    device_names: &'a DeviceNames,
    pub node_pressure: [Stall; 3],
    pub read_errors: &'a Errors,
    cri: Option<CriHealth>,
}

impl View<'_> {
    /// The labels of a cgroup whose path is known and that is not hidden
    /// by the container runtime's name policy.
    fn labels(&self, id: CgroupId) -> Option<&CgroupLabels> {
        self.tree.get(id).filter(|l| !l.hidden)
    }

    /// Cgroups named by the container runtime as containers (or sandboxes).
    pub fn named_containers(&self) -> impl Iterator<Item = (&CgroupLabels, &KubeNames)> {
        self.tree.iter().filter_map(|(_, labels)| {
            let names = labels.kube.as_deref()?;
            (!labels.hidden && names.container.is_some()).then_some((labels, names))
        })
    }

    /// The container runtime's health, if names come from one.
    pub fn cri(&self) -> Option<CriHealth> {
        self.cri
    }

    /// Reclaim stall histograms, with their `kind`, of cgroups whose path is known.
    pub fn reclaim(&self) -> impl Iterator<Item = (&CgroupLabels, &'static str, &Histogram)> {
        self.reclaim.iter().filter_map(|(key, hist)| {
            let kind = KIND_NAMES.get(key.kind as usize)?;
            Some((self.labels(key.cgroup)?, *kind, hist))
        })
    }

    /// File-based stats of cgroups whose path is known.
    pub fn file_stats(&self) -> impl Iterator<Item = (&CgroupLabels, &CgroupStats)> {
        self.file_stats
            .iter()
            .filter_map(|(id, stats)| Some((self.labels(*id)?, stats)))
    }

    /// The block devices of one cgroup's stats: (counts, disk name, `MAJ:MIN`).
    pub fn devices_of(&self, stats: &CgroupStats) -> impl Iterator<Item = (&DeviceIo, &str, &str)> {
        let (start, end) = stats.io;
        self.devices
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .filter_map(|d| {
                let (name, number) = self.device_names.get(d.major, d.minor)?;
                Some((d, name, number))
            })
    }

    /// Disk I/O latency and counters: (labels, device name, op, series).
    pub fn disk_series(&self) -> impl Iterator<Item = DiskRow<'_, DiskSeries>> {
        self.disk_rows(&self.disk.series)
    }

    /// Disk queue-time histograms, as [`Self::disk_series`], of the series
    /// that have any: where every request is issued directly, none.
    pub fn disk_queue(&self) -> impl Iterator<Item = DiskRow<'_, Histogram>> {
        self.disk_series()
            .filter(|(_, _, _, series)| series.queue.count() > 0)
            .map(|(labels, device, op, series)| (labels, device, op, &series.queue))
    }

    /// Completions whose start was not seen: (device name, op, requests).
    pub fn disk_unmatched(&self) -> impl Iterator<Item = (&str, &'static str, u64)> {
        self.disk.series.iter().filter_map(|(key, series)| {
            if key.cgroup != UNMATCHED {
                return None;
            }
            let (major, minor) = kernel_dev(key.dev);
            let (device, _) = self.device_names.get(major, minor)?;
            Some((device, *OP_NAMES.get(key.op as usize)?, series.requests))
        })
    }

    fn disk_rows<'v, V>(
        &'v self,
        rows: &'v [(DiskKey, V)],
    ) -> impl Iterator<Item = DiskRow<'v, V>> {
        rows.iter().filter_map(|(key, value)| {
            let labels = self.labels(key.cgroup)?;
            let (major, minor) = kernel_dev(key.dev);
            let (device, _) = self.device_names.get(major, minor)?;
            Some((labels, device, *OP_NAMES.get(key.op as usize)?, value))
        })
    }

    /// TCP latency histograms and counters of cgroups whose path is known.
    pub fn tcp(&self) -> impl Iterator<Item = (&CgroupLabels, &TcpSeries)> {
        self.tcp
            .series
            .iter()
            .filter_map(|(id, series)| Some((self.labels(*id)?, series)))
    }

    /// Traffic counters of cgroups whose path is known.
    pub fn traffic(&self) -> impl Iterator<Item = (&CgroupLabels, &Traffic)> {
        self.tcp
            .traffic
            .iter()
            .filter_map(|(id, traffic)| Some((self.labels(*id)?, traffic)))
    }

    /// Run-queue histograms of cgroups whose path is known.
    pub fn runqueue(&self) -> impl Iterator<Item = (&CgroupLabels, &Histogram)> {
        self.runqueue
            .iter()
            .filter_map(|(id, hist)| Some((self.labels(*id)?, hist)))
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
        reader: StatsReader,
    ) -> Result<Self, crate::cgroup_tree::CgroupTreeError> {
        tree.scan(Instant::now())?;
        Ok(Self {
            probes,
            tree,
            unresolved: HashMap::new(),
            runqueue: Vec::new(),
            reclaim: Vec::new(),
            disk: DiskRead::default(),
            tcp: TcpRead::default(),
            stale: Vec::new(),
            workers: (0..std::thread::available_parallelism().map_or(1, |n| n.get().min(4)))
                .map(|_| Worker {
                    reader: reader.worker(),
                    stats: Vec::new(),
                    devices: Vec::new(),
                })
                .collect(),
            reader,
            file_stats: Vec::new(),
            devices: Vec::new(),
            device_names: DeviceNames::new("/sys"),
            node_pressure: [Stall::default(); 3],
            node_text: String::with_capacity(256),
            psi_absence_logged: false,
            last_collect: Duration::ZERO,
            names: None,
            named_at: None,
            unnamed: HashSet::new(),
        })
    }

    /// Names containers from the container runtime's cache, under `policy`.
    pub fn with_names(mut self, cri: Arc<Cri>, policy: NamePolicy) -> Self {
        self.names = Some((cri, policy));
        self
    }

    /// Gives every container, sandbox and pod cgroup its Kubernetes names,
    /// when the names or the tree changed. A container the runtime does not
    /// know yet asks for a refresh, once.
    fn name_cgroups(&mut self) {
        let Some((cri, policy)) = &self.names else {
            return;
        };
        let state = (cri.generation(), self.tree.last_scan());
        if self.named_at == Some(state) {
            return;
        }
        self.named_at = Some(state);
        let mut unnamed = HashSet::new();
        for labels in self.tree.labels_mut() {
            if labels.container_id.is_none() && labels.pod_uid.is_none() {
                continue;
            }
            let names = cri.names(labels.container_id.as_deref(), labels.pod_uid.as_deref());
            if let (None, Some(id)) = (&names, &labels.container_id) {
                unnamed.insert(id.clone());
            }
            policy.apply(labels, names);
        }
        if unnamed.iter().any(|id| !self.unnamed.contains(id)) {
            cri.missed();
        }
        self.unnamed = unnamed;
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

        self.reclaim.clear();
        if let Some(maps) = &self.probes.reclaim
            && let Err(e) = maps.read_into(&mut self.reclaim)
        {
            tracing::warn!(
                "reading the reclaim stall histograms failed: {}",
                error_chain(&e)
            );
        }

        self.disk.clear();
        if let Some(maps) = &self.probes.disk
            && let Err(e) = maps.read_into(&mut self.disk)
        {
            tracing::warn!("reading the disk I/O series failed: {}", error_chain(&e));
        }

        self.tcp.clear();
        if let Some(maps) = &self.probes.tcp
            && let Err(e) = maps.read_into(&mut self.tcp)
        {
            tracing::warn!("reading the TCP series failed: {}", error_chain(&e));
        }

        let missed = self.kernel_ids().any(|id| self.tree.get(id).is_none());
        if self.tree.scan_due(Instant::now(), missed)
            && let Err(e) = self.tree.scan(Instant::now())
        {
            tracing::warn!(
                "rescanning cgroups failed, keeping the last scan: {}",
                error_chain(&e)
            );
        }
        self.name_cgroups();
        self.forget_vanished(started);
        self.read_files();
        self.last_collect = started.elapsed();

        View {
            probes: &self.probes.status,
            map_full: self.probes.map_full_counts(),
            tracked_cgroups: {
                let mut ids: Vec<CgroupId> = self.kernel_ids().collect();
                ids.sort_unstable();
                ids.dedup();
                ids.len()
            },
            reclaim: &self.reclaim,
            disk: &self.disk,
            tcp: &self.tcp,
            collect_duration: self.last_collect,
            tree: &self.tree,
            runqueue: &self.runqueue,
            file_stats: &self.file_stats,
            devices: &self.devices,
            device_names: &self.device_names,
            node_pressure: self.node_pressure,
            read_errors: &self.reader.errors,
            cri: self.names.as_ref().map(|(cri, _)| cri.health()),
        }
    }

    /// Reads the cgroup files of every cgroup that has them, and the node's
    /// pressure. A cgroup that vanishes mid-read is left out of this scrape.
    fn read_files(&mut self) {
        let Self {
            tree,
            reader,
            workers,
            file_stats,
            devices,
            device_names,
            disk,
            node_pressure,
            node_text,
            psi_absence_logged,
            ..
        } = self;
        file_stats.clear();
        devices.clear();
        let targets: Vec<(CgroupId, &str)> = tree
            .iter()
            .filter(|(_, l)| l.has_file_stats() && !l.hidden)
            .map(|(id, l)| (id, l.cgroup.as_str()))
            .collect();
        if targets.len() < PARALLEL_FROM || workers.is_empty() {
            read_some(reader, &targets, file_stats, devices);
        } else {
            // Reading is syscall-bound: spread it over the cores.
            let chunk = targets.len().div_ceil(workers.len());
            std::thread::scope(|scope| {
                for (worker, part) in workers.iter_mut().zip(targets.chunks(chunk)) {
                    scope.spawn(move || {
                        worker.stats.clear();
                        worker.devices.clear();
                        read_some(
                            &mut worker.reader,
                            part,
                            &mut worker.stats,
                            &mut worker.devices,
                        );
                    });
                }
            });
            for worker in workers.iter_mut() {
                let offset = devices.len();
                devices.extend_from_slice(&worker.devices);
                file_stats.extend(worker.stats.iter().map(|(id, stats)| {
                    let mut stats = *stats;
                    stats.io = (stats.io.0 + offset, stats.io.1 + offset);
                    (*id, stats)
                }));
                reader.errors.absorb(&mut worker.reader.errors);
            }
        }
        let now = Instant::now();
        for device in devices.iter() {
            device_names.resolve(device.major, device.minor, now);
        }
        for key in disk.keys() {
            let (major, minor) = kernel_dev(key.dev);
            device_names.resolve(major, minor, now);
        }
        for (slot, path) in node_pressure.iter_mut().zip(NODE_PRESSURE) {
            let text = &mut *node_text;
            text.clear();
            *slot = match std::fs::File::open(path)
                .and_then(|mut f| std::io::Read::read_to_string(&mut f, text))
            {
                Ok(_) => pressure::parse_stall(text, path, &mut reader.errors),
                Err(_) => Stall::default(),
            };
        }
        if !*psi_absence_logged {
            let cgroup_psi = file_stats
                .iter()
                .any(|(_, s)| s.pressure[0].some_seconds.is_some());
            if node_pressure[0].some_seconds.is_none() || !cgroup_psi {
                tracing::info!(
                    node = node_pressure[0].some_seconds.is_some(),
                    cgroups = cgroup_psi,
                    "pressure stall information (PSI) is off or absent here; its series are omitted \
                     (enable it with the psi=1 kernel argument)"
                );
            }
            *psi_absence_logged = true;
        }
    }

    /// Cgroup ids that have state in a kernel map (may repeat).
    fn kernel_ids(&self) -> impl Iterator<Item = CgroupId> + '_ {
        kernel_ids(&self.runqueue, &self.reclaim, &self.disk, &self.tcp)
    }

    /// Deletes the kernel state of ids that a scan which started after they
    /// were read did not find: their cgroup is gone, and ids are never reused.
    fn forget_vanished(&mut self, read_at: Instant) {
        let last_scan = self.tree.last_scan();
        let mut stale = std::mem::take(&mut self.stale);
        stale.clear();
        let ids: Vec<CgroupId> = self
            .kernel_ids()
            .filter(|id| self.tree.get(*id).is_none())
            .collect();
        for id in ids {
            let first_seen = *self.unresolved.entry(id).or_insert(read_at);
            if last_scan.is_some_and(|scan| scan > first_seen) && !stale.contains(&id) {
                stale.push(id);
            }
        }
        for id in &stale {
            if let Some(maps) = self.probes.runqueue.as_mut()
                && let Err(e) = maps.forget(*id)
            {
                tracing::warn!(
                    "deleting run-queue state of cgroup {id}: {}",
                    error_chain(&e)
                );
            }
            if let Some(maps) = self.probes.reclaim.as_mut()
                && let Err(e) = maps.forget(*id)
            {
                tracing::warn!("deleting reclaim state of cgroup {id}: {}", error_chain(&e));
            }
            if let Some(maps) = self.probes.disk.as_mut() {
                for key in self.disk.keys().filter(|k| k.cgroup == *id) {
                    if let Err(e) = maps.forget(&key) {
                        tracing::warn!(
                            "deleting disk I/O state of cgroup {id}: {}",
                            error_chain(&e)
                        );
                    }
                }
            }
            if let Some(maps) = self.probes.tcp.as_mut()
                && let Err(e) = maps.forget(*id)
            {
                tracing::warn!("deleting TCP state of cgroup {id}: {}", error_chain(&e));
            }
            self.unresolved.remove(id);
        }
        self.runqueue.retain(|(id, _)| !stale.contains(id));
        self.reclaim.retain(|(key, _)| !stale.contains(&key.cgroup));
        self.disk.retain_cgroups(|id| !stale.contains(&id));
        self.tcp.retain_cgroups(|id| !stale.contains(&id));
        let Self {
            tree,
            unresolved,
            runqueue,
            reclaim,
            disk,
            tcp,
            ..
        } = self;
        unresolved.retain(|id, _| {
            tree.get(*id).is_none() && kernel_ids(runqueue, reclaim, disk, tcp).any(|k| k == *id)
        });
        self.stale = stale;
    }
}

/// Cgroup ids that have state in a kernel map (may repeat); the disk
/// probes' "unmatched" pseudo-cgroup is not one.
fn kernel_ids<'a>(
    runqueue: &'a [(CgroupId, Histogram)],
    reclaim: &'a [(ReclaimKey, Histogram)],
    disk: &'a DiskRead,
    tcp: &'a TcpRead,
) -> impl Iterator<Item = CgroupId> + 'a {
    runqueue
        .iter()
        .map(|(id, _)| *id)
        .chain(reclaim.iter().map(|(key, _)| key.cgroup))
        .chain(disk.keys().map(|key| key.cgroup))
        .chain(tcp.cgroups())
        .filter(|id| *id != UNMATCHED)
}
