//! CPU run-queue latency: the ABI of the `runqueue` probes.
//!
//! For every task, the probes measure the time from becoming runnable (woken,
//! or preempted while still runnable) to running on a CPU, and add it to the
//! histogram of the task's cgroup v2. See `src/probes/runqueue.rs`.
//!
//! Two sources measure that wait, one attached at a time: the kernel's own
//! per-task accounting (`struct sched_info`, read at each switch-out at an
//! offset from the kernel's BTF), or timestamps taken at wakeup and switch.

/// Per-task state, keyed by [`TaskKey`].
pub const TASKS_MAP: &str = "RUNQ_TASKS";
/// Per-cgroup latency histograms, keyed by [`crate::CgroupId`].
pub const HIST_MAP: &str = "RUNQ_HIST";
/// The global that carries tracepoint field offsets, read from tracefs.
pub const FIELDS_GLOBAL: &str = "RUNQ_FIELDS";
/// The global that carries where `task_struct.sched_info.pcount` lies, from
/// the kernel's BTF ([`SchedInfoOffset`]).
pub const SCHED_INFO_GLOBAL: &str = "RUNQ_SCHED_INFO";

/// Default capacity of [`TASKS_MAP`]: threads alive on the node at once.
pub const DEFAULT_MAX_TASKS: u32 = 65_536;
/// Default capacity of [`HIST_MAP`]: cgroups with run-queue samples.
pub const DEFAULT_MAX_CGROUPS: u32 = 4_096;

/// `prev_state` bits of `sched_switch` that mean the task went to sleep or
/// died (`S D T t X Z P I`). A preempted task reports only the bit above them
/// (`TASK_REPORT_MAX`, printed as `R+`), a yielding one reports 0: both are
/// still runnable.
pub const TASK_SLEEP_STATE_MASK: u64 = 0xff;
/// `prev_state` bits of a task's last switch-out (`X` and `Z`).
pub const TASK_EXIT_STATE_MASK: u64 = 0x10 | 0x20;

/// A task's key in [`TASKS_MAP`]: its pid when the probes are classic
/// tracepoints, the address of its `task_struct` when they are raw ones.
pub type TaskKey = u64;

/// What the probes remember about one task in [`TASKS_MAP`]: its meaning
/// depends on the source of the waits (one is attached at a time), so both
/// share the map and its memory.
#[repr(C)]
#[derive(Clone, Copy)]
pub union TaskState {
    /// Timestamps at wakeup and switch.
    pub wait: TaskWait,
    /// The kernel's own accounting.
    pub seen: SchedInfoSeen,
}

/// A task's wait measured from timestamps at wakeup and switch.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskWait {
    /// `bpf_ktime_get_ns()` when the task last became runnable; 0 while it
    /// runs or sleeps.
    pub runnable_since_ns: u64,
    /// A wait measured when the task was switched in, not yet added to a
    /// histogram: it is added at the task's next switch-out, when the task is
    /// `current` and its cgroup is therefore known exactly.
    pub pending_wait_ns: u64,
}

/// The first two members of the kernel's `struct sched_info` (every kernel
/// since 2.6 starts it so), which the scheduler keeps for every task:
/// `/proc/<pid>/schedstat` prints them as its third and second fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedInfoSeen {
    /// Times the task was switched in (`pcount`).
    pub pcount: u64,
    /// Nanoseconds it has waited on a run queue in all (`run_delay`), from
    /// being queued (woken, or preempted) to being switched in.
    pub run_delay_ns: u64,
}

/// Where [`SchedInfoSeen`] lies in `struct task_struct`, from the kernel's
/// BTF; 0 while unset (it never lies at the start of the struct).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedInfoOffset {
    pub pcount: u32,
}

impl SchedInfoOffset {
    pub const UNSET: Self = Self { pcount: 0 };
}

/// Byte offsets and sizes of the tracepoint fields the probes read, taken
/// from the tracefs `format` files at start-up (there is no CO-RE for these
/// programs, so nothing is hard-coded).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedFields {
    /// `sched_switch.prev_pid` (a 4-byte `pid_t`).
    pub switch_prev_pid: u32,
    /// `sched_switch.prev_state`.
    pub switch_prev_state: u32,
    /// Size of `sched_switch.prev_state`: 8 (`long`) or 4.
    pub switch_prev_state_size: u32,
    /// `sched_switch.next_pid`.
    pub switch_next_pid: u32,
    /// `sched_wakeup.pid`.
    pub wakeup_pid: u32,
    /// `sched_wakeup_new.pid`.
    pub wakeup_new_pid: u32,
}

impl SchedFields {
    pub const UNSET: Self = Self {
        switch_prev_pid: 0,
        switch_prev_state: 0,
        switch_prev_state_size: 0,
        switch_next_pid: 0,
        wakeup_pid: 0,
        wakeup_new_pid: 0,
    };
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]` and made only of `u64`s: no padding, any bits valid.
    unsafe impl aya::Pod for super::TaskWait {}
    // SAFETY: `#[repr(C)]` and made only of `u64`s: no padding, any bits valid.
    unsafe impl aya::Pod for super::SchedInfoSeen {}
    // SAFETY: `#[repr(C)]`, one `u32`: no padding, any bits valid.
    unsafe impl aya::Pod for super::SchedInfoOffset {}
    // SAFETY: `#[repr(C)]` and made only of `u32`s: no padding, any bits valid.
    unsafe impl aya::Pod for super::SchedFields {}
}
