//! CPU run-queue latency: the userspace half of `agent-ebpf/src/probes/runqueue.rs`.
//!
//! Chooses how to attach (raw tracepoints on Linux 5.18+, classic ones with
//! field offsets from tracefs elsewhere), attaches, and reads the per-cgroup
//! histograms when scraped.

use agent_ebpf::{
    CgroupId,
    histogram::Histogram,
    runqueue::{HIST_MAP, SchedFields, TASK_EXIT_STATE_MASK, TASK_SLEEP_STATE_MASK},
};
use aya::{
    Ebpf,
    maps::{HashMap, MapData, MapError},
    util::KernelVersion,
};

use super::{LoadError, take_map};
use crate::tracefs::{EventFormat, Tracefs, TracefsError};

pub const PROBE: &str = "runqueue";

/// How the run-queue probes attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Raw tracepoints where the kernel has them (5.18+), else classic.
    Auto,
    /// Raw tracepoints: several times cheaper per event; Linux 5.18+.
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

/// The first kernel whose `sched_switch` passes `prev_state` to raw tracepoints.
const RAW_SINCE: KernelVersion = KernelVersion::new(5, 18, 0);

/// Raw tracepoint programs: (program, tracepoint).
const RAW_PROGRAMS: [(&str, &str); 4] = [
    ("runq_raw_sched_wakeup", "sched_wakeup"),
    ("runq_raw_sched_wakeup_new", "sched_wakeup_new"),
    ("runq_raw_sched_switch", "sched_switch"),
    ("runq_raw_sched_process_free", "sched_process_free"),
];

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

/// Attaches the probes as `mode` asks; returns the mode used, or why none
/// could be. `fields` are the classic tracepoints' offsets, or why they are
/// not known.
pub fn attach(
    ebpf: &mut Ebpf,
    mode: AttachMode,
    fields: &Result<SchedFields, String>,
) -> Result<AttachMode, String> {
    let classic = |ebpf: &mut Ebpf| -> Result<AttachMode, String> {
        fields.as_ref().map_err(Clone::clone)?;
        super::attach_tracepoints_all(ebpf, &PROGRAMS)?;
        Ok(AttachMode::Tracepoint)
    };
    match mode {
        AttachMode::Tracepoint => classic(ebpf),
        AttachMode::Raw => super::attach_raw_all(ebpf, &RAW_PROGRAMS).map(|()| AttachMode::Raw),
        AttachMode::Auto => match raw_supported() {
            Ok(()) => match super::attach_raw_all(ebpf, &RAW_PROGRAMS) {
                Ok(()) => Ok(AttachMode::Raw),
                Err(why) => {
                    tracing::warn!("raw tracepoints failed ({why}); using classic tracepoints");
                    classic(ebpf)
                }
            },
            Err(why) => {
                tracing::info!("{why}; using classic tracepoints");
                classic(ebpf)
            }
        },
    }
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
    use crate::tracefs::tests::fixture_formats;

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
