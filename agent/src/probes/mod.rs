//! Loading the embedded eBPF object and attaching each signal's probes.
//!
//! Maps and globals are set up for all signals at once; programs are loaded
//! and attached per signal, so one signal that cannot attach (a missing
//! tracepoint, a verifier rejection) is reported as down while the others
//! keep working.

pub mod disk;
pub mod reclaim;
pub mod runqueue;
pub mod tcp;

use std::{fmt, path::Path, time::Duration};

use agent_ebpf::map_full::{MAP_FULL, MAP_FULL_ENTRIES, MapId};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData},
    programs::{
        BtfTracePoint, CgroupSkb, Program, ProgramError, RawTracePoint, SockOps, TracePoint,
    },
};

use crate::tracefs::Tracefs;

/// The compiled probes, built by `agent/build.rs` from the `agent-ebpf` crate.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));

/// The signals that can be enabled, as named on the command line and in the
/// `probe` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Signal {
    /// CPU run-queue latency (sched tracepoints).
    Runqueue,
    /// Memory reclaim stalls (vmscan tracepoints).
    Reclaim,
    /// Disk I/O latency (block tracepoints).
    Disk,
    /// TCP connect latency, RTT, retransmits and resets, and traffic
    /// (cgroup_skb and sock_ops programs on the cgroup2 root).
    Tcp,
}

impl Signal {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Runqueue => runqueue::PROBE,
            Self::Reclaim => reclaim::PROBE,
            Self::Disk => disk::PROBE,
            Self::Tcp => tcp::PROBE,
        }
    }
}

/// Whether a signal's probes are attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeState {
    Up,
    /// Enabled but not attached; the reason says what failed.
    Down(String),
}

#[derive(Debug, Clone)]
pub struct ProbeStatus {
    pub signal: Signal,
    pub state: ProbeState,
}

impl fmt::Display for ProbeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            ProbeState::Up => write!(f, "{}: up", self.signal.name()),
            ProbeState::Down(why) => write!(f, "{}: down: {why}", self.signal.name()),
        }
    }
}

/// How a signal's tracepoint programs attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Raw tracepoints where the kernel has what they need, else classic.
    Auto,
    /// Raw tracepoints: the kernel passes its arguments without building a
    /// trace record. The run-queue probes need Linux 5.18+ with timestamps
    /// and 5.5+ (BTF-typed) with `sched_info`; the disk probes 5.11+ with
    /// the kernel's BTF.
    Raw,
    /// Classic tracepoints with field offsets from tracefs; any kernel since 4.14.
    Tracepoint,
}

impl AttachMode {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Raw => "raw",
            Self::Tracepoint => "tracepoint",
        }
    }
}

/// How the probes are set up, from flags.
#[derive(Debug, Clone, Copy)]
pub struct ProbeOptions {
    pub max_tasks: u32,
    pub max_cgroups: u32,
    pub max_disk_inflight: u32,
    pub max_tcp_sockets: u32,
    pub tcp_rtt_interval: Duration,
    pub runqueue_attach: AttachMode,
    pub runqueue_source: runqueue::Source,
    pub disk_attach: AttachMode,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "loading the eBPF object failed: {source}{hint}",
        hint = if is_permission_error(source) {
            " (the agent needs root, or CAP_BPF and CAP_PERFMON; in Kubernetes add them to the container's securityContext)"
        } else { "" }
    )]
    Object {
        #[source]
        source: aya::EbpfError,
    },
    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

fn is_permission_error(err: &aya::EbpfError) -> bool {
    let text = format!("{err:?}");
    text.contains("PermissionDenied")
        || text.contains("EPERM")
        || text.contains("Operation not permitted")
}

/// The loaded probes: the eBPF object (which owns the attachments: dropping
/// it detaches everything), the maps userspace reads, and each signal's state.
pub struct Probes {
    // Kept alive for the attachments it owns.
    _ebpf: Option<Ebpf>,
    pub status: Vec<ProbeStatus>,
    pub runqueue: Option<runqueue::RunqueueMaps>,
    pub reclaim: Option<reclaim::ReclaimMaps>,
    pub disk: Option<disk::DiskMaps>,
    pub tcp: Option<tcp::TcpMaps>,
    map_full: Option<Array<MapData, u64>>,
    pub logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

impl fmt::Debug for Probes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probes")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Probes {
    /// Loads the object and attaches the probes of every `enabled` signal.
    /// Only an object that cannot be loaded at all is an error.
    pub fn load(
        tracefs: Option<&Tracefs>,
        cgroup2_root: &Path,
        enabled: &[Signal],
        options: ProbeOptions,
    ) -> Result<Self, LoadError> {
        let mut status = Vec::new();
        let runqueue_fields = enabled.contains(&Signal::Runqueue).then(|| match tracefs {
            Some(tracefs) => runqueue::field_offsets(tracefs).map_err(|e| e.to_string()),
            None => Err("tracefs is not available".to_owned()),
        });
        let disk_fields = enabled.contains(&Signal::Disk).then(|| match tracefs {
            Some(tracefs) => disk::field_offsets(tracefs).map_err(|e| e.to_string()),
            None => Err("tracefs is not available".to_owned()),
        });
        let wants_sched_info = enabled.contains(&Signal::Runqueue)
            && options.runqueue_source != runqueue::Source::Timestamps;
        let wants_raw_disk =
            enabled.contains(&Signal::Disk) && options.disk_attach != AttachMode::Tracepoint;
        // Offsets in kernel structs, from the kernel's BTF, read once.
        let btf = (wants_sched_info || wants_raw_disk).then(|| {
            crate::btf::Btf::read(Path::new(crate::btf::VMLINUX)).map_err(|e| e.to_string())
        });
        let request_layout = match &btf {
            Some(btf) if wants_raw_disk => btf
                .as_ref()
                .map_err(Clone::clone)
                .and_then(disk::request_layout),
            _ if !enabled.contains(&Signal::Disk) => Err("the disk probes are off".to_owned()),
            _ => Err("classic tracepoints were asked for".to_owned()),
        };
        let sched_info = match &btf {
            Some(btf) if wants_sched_info => {
                runqueue::sched_info_offset(btf.as_ref(), Path::new("/proc/self/schedstat"))
            }
            _ if !enabled.contains(&Signal::Runqueue) => {
                Err("the run-queue probes are off".to_owned())
            }
            _ => Err("timestamps were asked for".to_owned()),
        };
        drop(btf);

        // The loader reads the kernel's BTF for itself (all copies are freed
        // once loaded: see `startup::release_freed_memory`).
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(agent_ebpf::runqueue::TASKS_MAP, options.max_tasks)
            .map_max_entries(agent_ebpf::runqueue::HIST_MAP, options.max_cgroups)
            // One histogram per cgroup and kind of reclaim.
            .map_max_entries(
                agent_ebpf::reclaim::HIST_MAP,
                options.max_cgroups.saturating_mul(2),
            )
            // One entry per cgroup, device and op doing disk I/O.
            .map_max_entries(agent_ebpf::disk::SERIES_MAP, options.max_cgroups)
            .map_max_entries(
                agent_ebpf::disk::INFLIGHT_MAP,
                agent_ebpf::disk::inflight_slots(options.max_disk_inflight),
            )
            .map_max_entries(agent_ebpf::tcp::SERIES_MAP, options.max_cgroups)
            .map_max_entries(agent_ebpf::tcp::TRAFFIC_MAP, options.max_cgroups)
            .map_max_entries(agent_ebpf::tcp::SOCKETS_MAP, options.max_tcp_sockets);
        let fields = match &runqueue_fields {
            Some(Ok(fields)) => *fields,
            _ => agent_ebpf::runqueue::SchedFields::UNSET,
        };
        loader.override_global(agent_ebpf::runqueue::FIELDS_GLOBAL, &fields, true);
        let sched_info_offset = sched_info
            .as_ref()
            .map_or(agent_ebpf::runqueue::SchedInfoOffset::UNSET, |offset| {
                *offset
            });
        loader.override_global(
            agent_ebpf::runqueue::SCHED_INFO_GLOBAL,
            &sched_info_offset,
            true,
        );
        let block_fields = match &disk_fields {
            Some(Ok(fields)) => *fields,
            _ => agent_ebpf::disk::BlockFields::UNSET,
        };
        loader.override_global(agent_ebpf::disk::FIELDS_GLOBAL, &block_fields, true);
        let layout = *request_layout
            .as_ref()
            .unwrap_or(&agent_ebpf::disk::RequestLayout::UNSET);
        loader.override_global(agent_ebpf::disk::REQUEST_LAYOUT_GLOBAL, &layout, true);
        let inflight_mask = agent_ebpf::disk::inflight_slots(options.max_disk_inflight) - 1;
        loader.override_global(agent_ebpf::disk::INFLIGHT_MASK_GLOBAL, &inflight_mask, true);
        let rtt_interval_ns =
            u64::try_from(options.tcp_rtt_interval.as_nanos()).unwrap_or(u64::MAX);
        loader.override_global(agent_ebpf::tcp::RTT_INTERVAL_GLOBAL, &rtt_interval_ns, true);
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .map_err(|source| LoadError::Object { source })?;
        // Its copy of the kernel's BTF goes before the next one is read.
        drop(loader);
        // Types for the BTF tracepoints, which the kernel checks their loads
        // against; read once, freed when every signal is attached. Classic
        // tracepoints need none.
        let btf_tracepoints = (sched_info.is_ok()
            && options.runqueue_attach != AttachMode::Tracepoint)
            || request_layout.is_ok();
        let kernel_btf = match btf_tracepoints {
            true => aya::Btf::from_sys_fs()
                .map_err(|e| format!("the kernel's BTF ({}): {e}", crate::btf::VMLINUX)),
            false => Err("no probe needs the kernel's BTF".to_owned()),
        };

        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(logger),
            Err(e) => {
                tracing::warn!("probe log messages are not available: {e}");
                None
            }
        };

        let runqueue = match runqueue_fields {
            Some(fields) => attach_signal(
                &mut ebpf,
                &mut status,
                Signal::Runqueue,
                |ebpf| {
                    let attached = runqueue::attach(
                        ebpf,
                        options.runqueue_attach,
                        options.runqueue_source,
                        &fields,
                        &sched_info,
                        kernel_btf.as_ref(),
                    )?;
                    tracing::info!(
                        probe = runqueue::PROBE,
                        attach = attached.mode.name(),
                        source = attached.source.name(),
                        "attached"
                    );
                    Ok(())
                },
                runqueue::RunqueueMaps::take,
            )?,
            None => None,
        };
        let reclaim = match enabled.contains(&Signal::Reclaim) {
            true => attach_signal(
                &mut ebpf,
                &mut status,
                Signal::Reclaim,
                reclaim::attach,
                reclaim::ReclaimMaps::take,
            )?,
            false => None,
        };
        let disk = match disk_fields {
            Some(fields) => attach_signal(
                &mut ebpf,
                &mut status,
                Signal::Disk,
                |ebpf| {
                    let mode = disk::attach(
                        ebpf,
                        options.disk_attach,
                        &fields,
                        &request_layout,
                        kernel_btf.as_ref(),
                    )?;
                    tracing::info!(probe = disk::PROBE, attach = mode.name(), "attached");
                    Ok(())
                },
                disk::DiskMaps::take,
            )?,
            None => None,
        };
        let tcp = match enabled.contains(&Signal::Tcp) {
            true => attach_signal(
                &mut ebpf,
                &mut status,
                Signal::Tcp,
                |ebpf| tcp::attach(ebpf, cgroup2_root),
                tcp::TcpMaps::take,
            )?,
            false => None,
        };

        let map_full = Some(take_map(&mut ebpf, MAP_FULL)?);
        Ok(Self {
            _ebpf: Some(ebpf),
            status,
            runqueue,
            reclaim,
            disk,
            tcp,
            map_full,
            logger,
        })
    }

    /// No signal enabled and nothing loaded: the collector then reads
    /// cgroup files only (as the scrape benchmark measures it).
    pub fn none() -> Self {
        Self {
            _ebpf: None,
            status: Vec::new(),
            runqueue: None,
            reclaim: None,
            disk: None,
            tcp: None,
            map_full: None,
            logger: None,
        }
    }

    /// How many inserts into each bounded map failed because it was full.
    pub fn map_full_counts(&self) -> [(MapId, u64); MAP_FULL_ENTRIES as usize] {
        MapId::ALL.map(|id| {
            let count = self
                .map_full
                .as_ref()
                .and_then(|m| m.get(&(id as u32), 0).ok());
            (id, count.unwrap_or(0))
        })
    }
}

/// Attaches one signal's probes and records whether they are up; when they
/// are, takes the maps userspace reads. A signal that cannot attach is down
/// (with the reason), not an error; an object without its maps is.
fn attach_signal<M>(
    ebpf: &mut Ebpf,
    status: &mut Vec<ProbeStatus>,
    signal: Signal,
    attach: impl FnOnce(&mut Ebpf) -> Result<(), String>,
    take: fn(&mut Ebpf) -> Result<M, LoadError>,
) -> Result<Option<M>, LoadError> {
    let (maps, state) = match attach(ebpf) {
        Ok(()) => (Some(take(ebpf)?), ProbeState::Up),
        Err(why) => (None, ProbeState::Down(why)),
    };
    status.push(ProbeStatus { signal, state });
    Ok(maps)
}

/// The program types the probes use, which load without arguments.
pub(crate) trait Plain {
    fn load_plain(&mut self) -> Result<(), ProgramError>;
    fn unload_plain(&mut self) -> Result<(), ProgramError>;
}

macro_rules! plain {
    ($($program:ty),+) => {
        $(impl Plain for $program {
            fn load_plain(&mut self) -> Result<(), ProgramError> {
                self.load()
            }
            fn unload_plain(&mut self) -> Result<(), ProgramError> {
                self.unload()
            }
        })+
    };
}
plain!(RawTracePoint, TracePoint, CgroupSkb, SockOps);

/// The object's program `name` as a `P`, loaded into the kernel (attach it
/// next).
pub(crate) fn loaded<'a, P: Plain>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P, String>
where
    &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    let prog: &mut P = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("the eBPF object has no program {name}"))?
        .try_into()
        .map_err(|e| format!("program {name}: {e}"))?;
    prog.load_plain()
        .map_err(|e| format!("program {name}: {}", error_chain(&e)))?;
    Ok(prog)
}

/// Unloads (and so detaches) the programs `names` of type `P`, after a
/// signal failed to attach them all.
pub(crate) fn unload_all<'n, P: Plain>(ebpf: &mut Ebpf, names: impl IntoIterator<Item = &'n str>)
where
    for<'a> &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    for name in names {
        let prog: Option<&mut P> = ebpf.program_mut(name).and_then(|p| p.try_into().ok());
        if let Some(prog) = prog {
            let _ = prog.unload_plain();
        }
    }
}

/// Loads and attaches raw tracepoint programs, all or none: a partial
/// attachment would count some events and not others (or twice, next to a
/// fallback).
pub(crate) fn attach_raw_all(ebpf: &mut Ebpf, programs: &[(&str, &str)]) -> Result<(), String> {
    let attached = programs.iter().try_for_each(|&(program, tracepoint)| {
        let prog: &mut RawTracePoint = loaded(ebpf, program)?;
        prog.attach(tracepoint).map(|_| ()).map_err(|e| {
            format!(
                "program {program} on raw tracepoint {tracepoint}: {}",
                error_chain(&e)
            )
        })
    });
    if attached.is_err() {
        unload_all::<RawTracePoint>(ebpf, programs.iter().map(|(program, _)| *program));
    }
    attached
}

/// Attaches a signal's `raw` or `classic` programs as `mode` asks; `auto`
/// tries raw ones where `raw_usable` allows, and falls back to classic ones,
/// logging why for `probe`. Returns how they attached.
pub(crate) fn attach_raw_or_classic(
    ebpf: &mut Ebpf,
    probe: &str,
    mode: AttachMode,
    raw_usable: Result<(), String>,
    raw: &dyn Fn(&mut Ebpf) -> Result<(), String>,
    classic: &dyn Fn(&mut Ebpf) -> Result<(), String>,
) -> Result<AttachMode, String> {
    let attach_classic = |ebpf: &mut Ebpf| classic(ebpf).map(|()| AttachMode::Tracepoint);
    match mode {
        AttachMode::Tracepoint => attach_classic(ebpf),
        AttachMode::Raw => raw(ebpf).map(|()| AttachMode::Raw),
        AttachMode::Auto => {
            let raw_attached = match raw_usable {
                Ok(()) => raw(ebpf).inspect_err(|why| {
                    tracing::warn!(
                        probe,
                        "raw tracepoints failed ({why}); using classic tracepoints"
                    );
                }),
                Err(why) => {
                    tracing::info!(probe, "{why}; using classic tracepoints");
                    Err(why)
                }
            };
            match raw_attached {
                Ok(()) => Ok(AttachMode::Raw),
                Err(_) => attach_classic(ebpf),
            }
        }
    }
}

/// Loads and attaches BTF-typed raw tracepoint programs, (program,
/// tracepoint), all or none, for the same reason as [`attach_raw_all`]. The
/// kernel checks their loads from the tracepoint's arguments against `btf`,
/// its own type information.
pub(crate) fn attach_btf_all(
    ebpf: &mut Ebpf,
    programs: &[(&str, &str)],
    btf: &aya::Btf,
) -> Result<(), String> {
    let attached = programs.iter().try_for_each(|&(program, tracepoint)| {
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(program)
            .ok_or_else(|| format!("the eBPF object has no program {program}"))?
            .try_into()
            .map_err(|e| format!("program {program}: {e}"))?;
        prog.load(tracepoint, btf)
            .map_err(|e| format!("program {program}: {}", error_chain(&e)))?;
        prog.attach().map(|_| ()).map_err(|e| {
            format!(
                "program {program} on BTF tracepoint {tracepoint}: {}",
                error_chain(&e)
            )
        })
    });
    if attached.is_err() {
        unload_btf_all(ebpf, programs);
    }
    attached
}

/// Unloads (and so detaches) the BTF tracepoint programs of `programs`.
pub(crate) fn unload_btf_all(ebpf: &mut Ebpf, programs: &[(&str, &str)]) {
    for &(program, _) in programs {
        let prog: Option<&mut BtfTracePoint> =
            ebpf.program_mut(program).and_then(|p| p.try_into().ok());
        if let Some(prog) = prog {
            let _ = prog.unload();
        }
    }
}

/// Loads and attaches classic tracepoint programs, (program, category,
/// event), all or none, for the same reason as [`attach_raw_all`].
pub(crate) fn attach_tracepoints_all(
    ebpf: &mut Ebpf,
    programs: &[(&'static str, &str, &str)],
) -> Result<(), String> {
    let attached = programs.iter().try_for_each(|&(program, category, event)| {
        let prog: &mut TracePoint =
            loaded(ebpf, program).map_err(|e| format!("tracepoint {category}/{event}: {e}"))?;
        prog.attach(category, event).map(|_| ()).map_err(|e| {
            format!(
                "tracepoint {category}/{event}: program {program}: {}",
                error_chain(&e)
            )
        })
    });
    if attached.is_err() {
        unload_all::<TracePoint>(ebpf, programs.iter().map(|(program, _, _)| *program));
    }
    attached
}

/// Appends every entry of a hash map to `out`; an entry deleted between
/// listing and reading it is skipped, as it is gone.
pub(crate) fn read_entries<K: aya::Pod, V: aya::Pod>(
    map: &aya::maps::HashMap<MapData, K, V>,
    out: &mut Vec<(K, V)>,
) -> Result<(), aya::maps::MapError> {
    for entry in map.iter() {
        match entry {
            Ok(entry) => out.push(entry),
            Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Deletes `key`; one already gone is fine.
pub(crate) fn remove_entry<K: aya::Pod, V: aya::Pod>(
    map: &mut aya::maps::HashMap<MapData, K, V>,
    key: &K,
) -> Result<(), aya::maps::MapError> {
    match map.remove(key) {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Takes a map out of the object, converted to its typed form.
pub(crate) fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(LoadError::MissingMap(name))?;
    T::try_from(map).map_err(|source| LoadError::Map { name, source })
}

/// An error and its sources on one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
