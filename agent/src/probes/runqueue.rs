//! CPU run-queue latency: the userspace half of `agent-ebpf/src/probes/runqueue.rs`.
//!
//! Chooses where the waits come from (the kernel's own `sched_info`, at an
//! offset from its BTF, or timestamps at wakeup and switch) and how to attach
//! (raw tracepoints, or classic ones with field offsets from tracefs),
//! attaches, and reads the per-cgroup histograms when scraped.

use std::{fs, path::Path};

use agent_ebpf::{
    CgroupId,
    histogram::Histogram,
    runqueue::{
        HIST_MAP, SchedFields, SchedInfoOffset, TASK_EXIT_STATE_MASK, TASK_SLEEP_STATE_MASK,
    },
};
use aya::{
    Ebpf,
    maps::{HashMap, MapData, MapError},
    util::KernelVersion,
};

use super::{LoadError, take_map};
use crate::{
    btf::Btf,
    tracefs::{EventFormat, Tracefs, TracefsError},
};

pub const PROBE: &str = "runqueue";

pub use super::AttachMode;

/// Where the waits come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// The kernel's `sched_info` where its BTF describes it, else timestamps.
    Auto,
    /// The kernel's own per-task run-queue accounting (`sched_info`, as in
    /// `/proc/<pid>/schedstat`), read at each switch-out: one program per
    /// context switch, none at wakeup. Needs the kernel's BTF.
    SchedInfo,
    /// Timestamps taken at wakeup, preemption and switch-in: three programs.
    Timestamps,
}

impl Source {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::SchedInfo => "sched-info",
            Self::Timestamps => "timestamps",
        }
    }
}

/// Where the kernel's `sched_info` lies in `task_struct`, from its BTF
/// `btf` (or why that could not be read); and whether the kernel keeps it,
/// from `schedstat` (a `/proc/<pid>/schedstat` of a task that has run, so switched in at least
/// once: kernels before 5.14 keep it only with delay accounting or
/// schedstats on, and print `0 0 0` without).
pub fn sched_info_offset(
    btf: Result<&Btf, &String>,
    schedstat: &Path,
) -> Result<SchedInfoOffset, String> {
    let text = fs::read_to_string(schedstat).map_err(|e| {
        format!(
            "the kernel keeps no sched_info ({}: {e})",
            schedstat.display()
        )
    })?;
    match text.split_whitespace().nth(2).map(str::parse::<u64>) {
        Some(Ok(switches)) if switches > 0 => {}
        Some(Ok(_)) => {
            return Err(format!(
                "the kernel does not keep sched_info ({} reads {:?}; \
                 before Linux 5.14 it needs delay accounting or schedstats)",
                schedstat.display(),
                text.trim()
            ));
        }
        _ => {
            return Err(format!(
                "malformed {}: {:?}",
                schedstat.display(),
                text.trim()
            ));
        }
    }
    let btf = btf.map_err(Clone::clone)?;
    let member = |name, member| btf.member(name, member).map_err(|e| e.to_string());
    let in_task = member("task_struct", "sched_info")?;
    let pcount = member("sched_info", "pcount")?;
    let run_delay = member("sched_info", "run_delay")?;
    if pcount.size != 8 || run_delay.size != 8 || run_delay.offset != pcount.offset + 8 {
        return Err(format!(
            "sched_info's pcount ({pcount:?}) and run_delay ({run_delay:?}) are not two \
             adjacent 8-byte counters in the kernel's BTF {}",
            btf.path().display()
        ));
    }
    let offset = in_task
        .offset
        .checked_add(pcount.offset)
        .filter(|&offset| offset > 0)
        .ok_or_else(|| format!("task_struct.sched_info lies at {in_task:?}"))?;
    Ok(SchedInfoOffset { pcount: offset })
}

/// The first kernel whose `sched_switch` passes `prev_state` to raw tracepoints.
const RAW_SINCE: KernelVersion = KernelVersion::new(5, 18, 0);

/// Raw tracepoint programs: (program, tracepoint).
const RAW_PROGRAMS: [(&str, &str); 4] = [
    ("runq_raw_sched_wakeup", "sched_wakeup"),
    ("runq_raw_sched_wakeup_new", "sched_wakeup_new"),
    ("runq_raw_sched_switch", "sched_switch"),
    ("runq_raw_sched_process_free", "sched_process_free"),
];

/// The BTF-typed raw tracepoint program reading `sched_info` with plain
/// loads (Linux 5.5+), (program, tracepoint); and the raw one that forgets
/// freed tasks.
const BTF_INFO_PROGRAMS: [(&str, &str); 1] = [("runq_btf_sched_switch_info", "sched_switch")];
const FREE_PROGRAMS: [(&str, &str); 1] = [("runq_raw_sched_process_free", "sched_process_free")];

/// Classic tracepoint programs reading `sched_info`.
const INFO_PROGRAMS: [(&str, &str, &str); 1] =
    [("runq_sched_switch_info", "sched", "sched_switch")];

/// Classic tracepoint programs: (program, category, tracepoint).
const PROGRAMS: [(&str, &str, &str); 3] = [
    ("runq_sched_wakeup", "sched", "sched_wakeup"),
    ("runq_sched_wakeup_new", "sched", "sched_wakeup_new"),
    ("runq_sched_switch", "sched", "sched_switch"),
];

/// Offsets of the fields the probes read, from this kernel's format files.
pub fn field_offsets(tracefs: &Tracefs) -> Result<SchedFields, TracefsError> {
    let switch = tracefs.format("sched", "sched_switch")?;
    let wakeup = tracefs.format("sched", "sched_wakeup")?;
    let wakeup_new = tracefs.format("sched", "sched_wakeup_new")?;
    let mut fields = SchedFields::UNSET;
    fill_from(&mut fields, &switch)?;
    fill_from(&mut fields, &wakeup)?;
    fill_from(&mut fields, &wakeup_new)?;
    Ok(fields)
}

/// Takes the fields of one sched event into `fields`, checking their sizes.
pub fn fill_from(fields: &mut SchedFields, format: &EventFormat) -> Result<(), TracefsError> {
    const PID: &[u32] = &[4];
    match format.name.as_str() {
        "sched_switch" => {
            fields.switch_prev_pid = format.field_sized("prev_pid", PID)?.offset;
            fields.switch_next_pid = format.field_sized("next_pid", PID)?.offset;
            let state = format.field_sized("prev_state", &[4, 8])?;
            check_state_encoding(format)?;
            fields.switch_prev_state = state.offset;
            fields.switch_prev_state_size = state.size;
        }
        "sched_wakeup" => fields.wakeup_pid = format.field_sized("pid", PID)?.offset,
        "sched_wakeup_new" => fields.wakeup_new_pid = format.field_sized("pid", PID)?.offset,
        _ => {}
    }
    Ok(())
}

/// The probes read `prev_state` with the task-state bits of Linux 4.14 and
/// later (`S D T t X Z P I` in the low byte, preemption above). Older kernels
/// number the states differently; on them the probe refuses to run rather
/// than misread sleeping tasks as runnable.
fn check_state_encoding(format: &EventFormat) -> Result<(), TracefsError> {
    let flags = format.print_flags();
    let bit = |name: &str| flags.iter().find(|(_, n)| *n == name).map(|(v, _)| *v);
    let modern = [
        ("S", 0x1),
        ("D", 0x2),
        ("T", 0x4),
        ("t", 0x8),
        ("X", 0x10),
        ("Z", 0x20),
    ];
    let fits = flags.iter().all(|(v, _)| v & !TASK_SLEEP_STATE_MASK == 0)
        && modern.iter().all(|(name, v)| bit(name) == Some(*v))
        && bit("X")
            .zip(bit("Z"))
            .is_some_and(|(x, z)| x | z == TASK_EXIT_STATE_MASK);
    if fits {
        Ok(())
    } else {
        Err(TracefsError::Unsupported {
            category: format.category.clone(),
            name: format.name.clone(),
            what: "its prev_state task-state bits predate Linux 4.14",
        })
    }
}

/// How the probes ended up attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attached {
    pub mode: AttachMode,
    pub source: Source,
}

/// Attaches the probes as `mode` and `source` ask; returns how they were
/// attached, or why they could not be. `fields` are the classic tracepoints'
/// offsets and `sched_info` where the kernel keeps `sched_info`, or why they
/// are not known.
pub fn attach(
    ebpf: &mut Ebpf,
    mode: AttachMode,
    source: Source,
    fields: &Result<SchedFields, String>,
    sched_info: &Result<SchedInfoOffset, String>,
    btf: Result<&aya::Btf, &String>,
) -> Result<Attached, String> {
    let with_sched_info = |ebpf: &mut Ebpf| {
        sched_info.as_ref().map_err(Clone::clone)?;
        // Only timestamps need `prev_state` as a raw tracepoint argument.
        let mode = super::attach_raw_or_classic(
            ebpf,
            PROBE,
            mode,
            Ok(()),
            &|ebpf| attach_sched_info_raw(ebpf, btf),
            &|ebpf| attach_classic(ebpf, &INFO_PROGRAMS, fields),
        )?;
        Ok(Attached {
            mode,
            source: Source::SchedInfo,
        })
    };
    let with_timestamps = |ebpf: &mut Ebpf| {
        let mode = super::attach_raw_or_classic(
            ebpf,
            PROBE,
            mode,
            raw_supported(),
            &|ebpf| super::attach_raw_all(ebpf, &RAW_PROGRAMS),
            &|ebpf| attach_classic(ebpf, &PROGRAMS, fields),
        )?;
        Ok(Attached {
            mode,
            source: Source::Timestamps,
        })
    };
    match source {
        Source::SchedInfo => with_sched_info(ebpf),
        Source::Timestamps => with_timestamps(ebpf),
        Source::Auto => with_sched_info(ebpf).or_else(|why: String| {
            tracing::info!("{why}; measuring run-queue waits with timestamps");
            with_timestamps(ebpf)
        }),
    }
}

/// Classic tracepoint programs, where their fields' offsets are known.
fn attach_classic(
    ebpf: &mut Ebpf,
    programs: &[(&'static str, &str, &str)],
    fields: &Result<SchedFields, String>,
) -> Result<(), String> {
    fields.as_ref().map_err(Clone::clone)?;
    super::attach_tracepoints_all(ebpf, programs)
}

/// The `sched_info` programs on raw tracepoints: the BTF-typed one, which
/// reads the counters with plain loads that the kernel checks against `btf`
/// when it loads the program.
fn attach_sched_info_raw(ebpf: &mut Ebpf, btf: Result<&aya::Btf, &String>) -> Result<(), String> {
    super::attach_btf_all(ebpf, &BTF_INFO_PROGRAMS, btf.map_err(Clone::clone)?)?;
    super::attach_raw_all(ebpf, &FREE_PROGRAMS)
        .inspect_err(|_| super::unload_btf_all(ebpf, &BTF_INFO_PROGRAMS))
}

fn raw_supported() -> Result<(), String> {
    let current =
        KernelVersion::current().map_err(|e| format!("cannot read the kernel version: {e}"))?;
    if current >= RAW_SINCE {
        Ok(())
    } else {
        Err(format!(
            "kernel {current} is older than {RAW_SINCE}, whose sched_switch passes prev_state"
        ))
    }
}

/// The maps userspace reads.
pub struct RunqueueMaps {
    hist: HashMap<MapData, CgroupId, Histogram>,
}

impl RunqueueMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, LoadError> {
        Ok(Self {
            hist: take_map(ebpf, HIST_MAP)?,
        })
    }

    /// Appends every histogram to `out`.
    pub fn read_into(&self, out: &mut Vec<(CgroupId, Histogram)>) -> Result<(), MapError> {
        super::read_entries(&self.hist, out)
    }

    /// Drops the histogram of a cgroup that no longer exists.
    pub fn forget(&mut self, cgroup: CgroupId) -> Result<(), MapError> {
        super::remove_entry(&mut self.hist, &cgroup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{btf::tests::Builder, tracefs::tests::fixture_formats};

    /// A kernel's BTF with `task_struct.sched_info` at byte 968 and its
    /// counters as `members` (name, bit offset) of 8-byte integers.
    fn kernel(dir: &Path, members: &[(&str, u32)]) -> std::path::PathBuf {
        let mut b = Builder::new();
        let ulong = b.int("long unsigned int", 8);
        let members: Vec<_> = members.iter().map(|&(n, off)| (n, ulong, off)).collect();
        let sched_info = b.composite("sched_info", 48, &members, false);
        b.composite(
            "task_struct",
            4096,
            &[("sched_info", sched_info, 968 * 8)],
            false,
        );
        let path = dir.join("vmlinux");
        fs::write(&path, b.build()).expect("write the fixture");
        path
    }

    fn schedstat(dir: &Path, text: &str) -> std::path::PathBuf {
        let path = dir.join("schedstat");
        fs::write(&path, text).expect("write the fixture");
        path
    }

    fn offset_in(btf: &Path, schedstat: &Path) -> Result<SchedInfoOffset, String> {
        let btf = Btf::read(btf).map_err(|e| e.to_string());
        sched_info_offset(btf.as_ref(), schedstat)
    }

    const SCHED_INFO: &[(&str, u32)] = &[("pcount", 0), ("run_delay", 64), ("last_arrival", 128)];

    #[test]
    fn finds_sched_info_in_the_kernels_btf() {
        let dir = tempfile::tempdir().expect("tempdir");
        let offset = offset_in(
            &kernel(dir.path(), SCHED_INFO),
            &schedstat(dir.path(), "1154335 0 1\n"),
        );
        assert_eq!(offset, Ok(SchedInfoOffset { pcount: 968 }));
    }

    #[test]
    fn a_kernel_that_keeps_no_sched_info_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let btf = kernel(dir.path(), SCHED_INFO);
        let off = offset_in(&btf, &schedstat(dir.path(), "0 0 0\n")).expect_err("off");
        assert!(
            off.contains("does not keep sched_info") && off.contains("delay accounting"),
            "{off}"
        );
        let absent = offset_in(&btf, &dir.path().join("none")).expect_err("absent");
        assert!(
            absent.contains("keeps no sched_info") && absent.contains("none"),
            "{absent}"
        );
        let garbled = offset_in(&btf, &schedstat(dir.path(), "12 x\n")).expect_err("garbled");
        assert!(garbled.starts_with("malformed"), "{garbled}");
    }

    #[test]
    fn counters_that_are_not_where_the_probe_reads_them_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stat = schedstat(dir.path(), "1 2 3\n");
        let apart = kernel(
            dir.path(),
            &[("pcount", 0), ("last_arrival", 64), ("run_delay", 128)],
        );
        let err = offset_in(&apart, &stat).expect_err("not adjacent");
        assert!(err.contains("not two adjacent 8-byte counters"), "{err}");
        let without = kernel(dir.path(), &[("pcount", 0)]);
        let err = offset_in(&without, &stat).expect_err("no run_delay");
        assert!(err.contains("has no member run_delay"), "{err}");
    }

    #[test]
    fn takes_offsets_from_kernels_of_4_14_and_later() {
        let mut fields = SchedFields::UNSET;
        for (kernel, format) in fixture_formats("sched", "sched_switch")
            .into_iter()
            .chain(fixture_formats("sched", "sched_wakeup"))
            .chain(fixture_formats("sched", "sched_wakeup_new"))
            .filter(|(k, _)| k.starts_with("linux-6.18"))
        {
            fill_from(&mut fields, &format).unwrap_or_else(|e| panic!("{kernel}: {e}"));
        }
        assert_eq!(
            fields,
            SchedFields {
                switch_prev_pid: 24,
                switch_prev_state: 32,
                switch_prev_state_size: 8,
                switch_next_pid: 56,
                wakeup_pid: 24,
                wakeup_new_pid: 24,
            }
        );
        let (_, android_5_10) = fixture_formats("sched", "sched_switch")
            .into_iter()
            .find(|(k, _)| k.contains("5.10"))
            .expect("a 5.10 fixture");
        assert!(fill_from(&mut SchedFields::default(), &android_5_10).is_ok());
    }

    #[test]
    fn refuses_the_task_state_bits_of_older_kernels() {
        let old: Vec<_> = fixture_formats("sched", "sched_switch")
            .into_iter()
            .filter(|(k, _)| k.contains("-3.") || k.contains("-4.4"))
            .collect();
        assert!(!old.is_empty());
        for (kernel, format) in old {
            let err = fill_from(&mut SchedFields::default(), &format).expect_err(&kernel);
            assert!(
                err.to_string().contains("predate Linux 4.14"),
                "{kernel}: {err}"
            );
        }
    }
}
