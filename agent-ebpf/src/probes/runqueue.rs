//! CPU run-queue latency per cgroup.
//!
//! A task's wait starts when it is woken, or when it is switched out while
//! still runnable (preempted or yielding), and ends when it is switched in.
//! At wakeup `current` is the waker and at switch-in it is the previous task,
//! so neither knows the waiting task's cgroup. Each wait is therefore added
//! to the histogram at the task's next switch-out, where the task is
//! `current` and `bpf_get_current_cgroup_id()` is exactly its cgroup — also
//! for a task that moved cgroups while it waited, or was born into another
//! cgroup than its parent's (`CLONE_INTO_CGROUP`).
//!
//! Two sources of the wait, one attached at a time:
//! - the kernel's own accounting (`runq_*sched_switch_info`): the scheduler
//!   keeps, per task, how often it was switched in and how long it waited on
//!   a run queue in all (`struct sched_info`, `CONFIG_SCHED_INFO`; what
//!   `/proc/<pid>/schedstat` prints). One program on `sched_switch` reads
//!   both of the task being switched out, at an offset from the kernel's BTF
//!   ([`RUNQ_SCHED_INFO`]): one switch-in since the last switch-out means
//!   one wait, the growth of the total. Nothing runs at wakeup, and no clock
//!   is read. Attached raw, it is a BTF-typed raw tracepoint (Linux 5.5+):
//!   the kernel knows `prev` is a `task_struct` and lets the program read
//!   the counters with plain loads, checked against its BTF at load time,
//!   where a classic tracepoint needs a helper call.
//! - timestamps (`runq_*sched_wakeup*`, `runq_*sched_switch`): the time at
//!   wakeup or preemption, and again at switch-in, parked in the task's
//!   entry until its switch-out. For kernels without BTF or `sched_info`.
//!
//! Two ways to attach share that logic:
//! - raw tracepoints: the kernel hands over its `TP_PROTO` arguments without
//!   building a trace record, which makes them several times cheaper. Tasks
//!   are keyed by the address of their `task_struct`; `sched_process_free`
//!   removes a task's entry when the struct is freed. With timestamps they
//!   need Linux 5.18+, where `sched_switch` passes `prev_state`.
//! - classic tracepoints (any kernel since 4.14): fields are read at offsets
//!   from the tracefs format files ([`RUNQ_FIELDS`]); tasks are keyed by pid,
//!   and a task's entry is removed at its last switch-out (state `X`/`Z`).
//!
//! Per event: at most two hash lookups, in-place updates, and two atomic adds.

use agent_ebpf::{
    CgroupId,
    histogram::Histogram,
    map_full::MapId,
    runqueue::{
        DEFAULT_MAX_CGROUPS, DEFAULT_MAX_TASKS, SchedFields, SchedInfoOffset, SchedInfoSeen,
        TASK_EXIT_STATE_MASK, TASK_SLEEP_STATE_MASK, TaskKey, TaskState, TaskWait,
    },
};
use aya_ebpf::{
    EbpfContext,
    bindings::BPF_ANY,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_ktime_get_ns, bpf_probe_read_kernel,
    },
    macros::{btf_tracepoint, map, raw_tracepoint, tracepoint},
    maps::HashMap,
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};

use crate::{hist, map_full};

/// Keyed by [`TaskKey`]: a pid (classic tracepoints) or a `task_struct`
/// address (raw tracepoints); one mode and one source are attached at a time.
#[map(name = "RUNQ_TASKS")]
static RUNQ_TASKS: HashMap<TaskKey, TaskState> = HashMap::with_max_entries(DEFAULT_MAX_TASKS, 0);

#[map(name = "RUNQ_HIST")]
static RUNQ_HIST: HashMap<CgroupId, Histogram> = HashMap::with_max_entries(DEFAULT_MAX_CGROUPS, 0);

#[unsafe(no_mangle)]
static RUNQ_FIELDS: SchedFields = SchedFields::UNSET;

/// Where [`SchedInfoSeen`] lies in `task_struct`, set by the loader from BTF.
#[unsafe(no_mangle)]
static RUNQ_SCHED_INFO: SchedInfoOffset = SchedInfoOffset::UNSET;

#[inline(always)]
fn fields() -> SchedFields {
    // SAFETY: a plain read of a global the loader may have overridden; volatile
    // so the compiler does not fold in the compile-time value.
    unsafe { core::ptr::read_volatile(&RUNQ_FIELDS) }
}

// ---- classic tracepoints: fields at offsets from tracefs, tasks by pid ----

#[tracepoint]
pub fn runq_sched_wakeup(ctx: TracePointContext) -> u32 {
    let _ = try_wakeup(&ctx, fields().wakeup_pid);
    0
}

#[tracepoint]
pub fn runq_sched_wakeup_new(ctx: TracePointContext) -> u32 {
    let _ = try_wakeup(&ctx, fields().wakeup_new_pid);
    0
}

#[tracepoint]
pub fn runq_sched_switch(ctx: TracePointContext) -> u32 {
    let _ = try_switch(&ctx);
    0
}

fn try_wakeup(ctx: &TracePointContext, pid_offset: u32) -> Result<(), i32> {
    // SAFETY: the offset comes from this tracepoint's format file.
    let pid: i32 = unsafe { ctx.read_at(pid_offset as usize)? };
    // pid 0 is the per-CPU idle task: it never waits for a CPU.
    if pid > 0 {
        mark_runnable(ctx, pid as TaskKey, now());
    }
    Ok(())
}

fn try_switch(ctx: &TracePointContext) -> Result<(), i32> {
    let f = fields();
    // SAFETY: all offsets come from sched_switch's format file.
    let (prev_pid, next_pid, prev_state) = unsafe {
        let prev_pid: i32 = ctx.read_at(f.switch_prev_pid as usize)?;
        let next_pid: i32 = ctx.read_at(f.switch_next_pid as usize)?;
        let prev_state: u64 = if f.switch_prev_state_size == 8 {
            ctx.read_at::<i64>(f.switch_prev_state as usize)? as u64
        } else {
            ctx.read_at::<i32>(f.switch_prev_state as usize)? as u32 as u64
        };
        (prev_pid, next_pid, prev_state)
    };
    let now = now();
    if prev_pid > 0 {
        let still_runnable = prev_state & TASK_SLEEP_STATE_MASK == 0;
        let exited = prev_state & TASK_EXIT_STATE_MASK != 0;
        switched_out(ctx, prev_pid as TaskKey, still_runnable, exited, now);
    }
    if next_pid > 0 {
        switched_in(next_pid as TaskKey, now);
    }
    Ok(())
}

// ---- raw tracepoints: TP_PROTO arguments, tasks by task_struct address ----

#[raw_tracepoint(tracepoint = "sched_wakeup")]
pub fn runq_raw_sched_wakeup(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p)
    mark_runnable(&ctx, ctx.arg::<u64>(0), now());
    0
}

#[raw_tracepoint(tracepoint = "sched_wakeup_new")]
pub fn runq_raw_sched_wakeup_new(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p)
    mark_runnable(&ctx, ctx.arg::<u64>(0), now());
    0
}

#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn runq_raw_sched_switch(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(bool preempt, struct task_struct *prev,
    //          struct task_struct *next, unsigned int prev_state)
    let preempt = ctx.arg::<u64>(0) as u8 != 0;
    let prev = ctx.arg::<u64>(1);
    let next = ctx.arg::<u64>(2);
    let prev_state = ctx.arg::<u64>(3) as u32;
    let now = now();
    // `current` is still prev; pid 0 is the per-CPU idle task, which never
    // waits for a CPU and must not get an entry (it is never woken).
    let prev_is_idle = bpf_get_current_pid_tgid() as u32 == 0;
    if !prev_is_idle {
        // TASK_RUNNING is 0: a task that was not preempted but is still
        // runnable yielded the CPU.
        let still_runnable = preempt || prev_state == 0;
        switched_out(&ctx, prev, still_runnable, false, now);
    }
    switched_in(next, now);
    0
}

#[raw_tracepoint(tracepoint = "sched_process_free")]
pub fn runq_raw_sched_process_free(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p): the struct is about to be freed, so
    // its address may be reused from now on.
    let _ = RUNQ_TASKS.remove(ctx.arg::<u64>(0));
    0
}

// ---- the kernel's accounting: sched_info at switch-out ----

#[tracepoint]
pub fn runq_sched_switch_info(ctx: TracePointContext) -> u32 {
    let _ = try_switch_info(&ctx);
    0
}

fn try_switch_info(ctx: &TracePointContext) -> Result<(), i32> {
    // `current` is still the task being switched out.
    let pid = bpf_get_current_pid_tgid() as u32;
    if pid == 0 {
        // The per-CPU idle task never waits for a CPU.
        return Ok(());
    }
    let f = fields();
    // SAFETY: the offset comes from sched_switch's format file.
    let prev_state: u64 = unsafe {
        if f.switch_prev_state_size == 8 {
            ctx.read_at::<i64>(f.switch_prev_state as usize)? as u64
        } else {
            ctx.read_at::<i32>(f.switch_prev_state as usize)? as u32 as u64
        }
    };
    // SAFETY: a kernel helper without preconditions; it returns `current`.
    let task = unsafe { bpf_get_current_task() };
    let exited = prev_state & TASK_EXIT_STATE_MASK != 0;
    switched_out_info(ctx, TaskKey::from(pid), task, exited);
    Ok(())
}

#[btf_tracepoint(function = "sched_switch")]
pub fn runq_btf_sched_switch_info(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(bool preempt, struct task_struct *prev, ...), with prev typed
    // by the kernel's BTF, so its counters are read with plain loads, which
    // the kernel checks against the BTF when it loads the program.
    if bpf_get_current_pid_tgid() as u32 != 0 {
        let prev: *const u8 = ctx.arg(1);
        // SAFETY: a plain read of a global the loader may have overridden.
        let offset = unsafe { core::ptr::read_volatile(&RUNQ_SCHED_INFO) }.pcount as usize;
        // SAFETY: `prev` is the current task, alive while it runs here; the
        // offset is sched_info's in task_struct, from the kernel's BTF, and
        // the verifier refuses the program if it is not.
        let seen = unsafe {
            SchedInfoSeen {
                pcount: core::ptr::read_volatile(prev.add(offset).cast::<u64>()),
                run_delay_ns: core::ptr::read_volatile(prev.add(offset + 8).cast::<u64>()),
            }
        };
        switched_out_seen(&ctx, prev as u64, seen, false);
    }
    0
}

/// `task` (its `task_struct`'s address) leaves the CPU; it is `current`, so
/// its cgroup is known. One switch-in since its last switch-out means one
/// wait, which is what its run-queue total grew by.
#[inline(always)]
fn switched_out_info<C: EbpfContext>(ctx: &C, key: TaskKey, task: u64, exited: bool) {
    // SAFETY: a plain read of a global the loader may have overridden.
    let offset = unsafe { core::ptr::read_volatile(&RUNQ_SCHED_INFO) }.pcount;
    // SAFETY: `task` is the current task, alive while it runs here; the
    // helper checks the address and fails rather than faults.
    let Ok(seen) =
        (unsafe { bpf_probe_read_kernel((task + u64::from(offset)) as *const SchedInfoSeen) })
    else {
        return;
    };
    switched_out_seen(ctx, key, seen, exited);
}

/// The task `key`, `current`, leaves the CPU with its counters at `seen`.
#[inline(always)]
fn switched_out_seen<C: EbpfContext>(ctx: &C, key: TaskKey, seen: SchedInfoSeen, exited: bool) {
    let wait = match RUNQ_TASKS.get_ptr_mut(key) {
        Some(entry) => {
            // SAFETY: a pointer into a live hash map value; only the task's
            // own switch-outs, one at a time, write it.
            let last = unsafe { (*entry).seen };
            if exited {
                let _ = RUNQ_TASKS.remove(key);
            } else {
                // SAFETY: as above.
                unsafe { (*entry).seen = seen };
            }
            // More than one switch-in unseen (the entry was missing for a
            // while): the waits cannot be told apart, so none is taken. A
            // total that shrank belongs to another task under the same pid
            // (a thread that exec'd took its leader's): none either.
            (seen.pcount == last.pcount.wrapping_add(1))
                .then(|| seen.run_delay_ns.checked_sub(last.run_delay_ns))
                .flatten()
        }
        None => {
            if !exited {
                let entry = TaskState { seen };
                if let Err(err) = RUNQ_TASKS.insert(key, entry, u64::from(BPF_ANY)) {
                    map_full::record(ctx, MapId::RunqTasks, err);
                }
            }
            // First seen: only a task switched in once so far has a total
            // that is a single wait.
            (seen.pcount == 1).then_some(seen.run_delay_ns)
        }
    };
    if let Some(wait) = wait {
        // SAFETY: a kernel helper without preconditions.
        let cgroup = unsafe { bpf_get_current_cgroup_id() };
        hist::record(ctx, &RUNQ_HIST, &cgroup, wait, MapId::RunqHist);
    }
}

// ---- shared by both ----

#[inline(always)]
fn now() -> u64 {
    // SAFETY: a kernel helper without preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// `task` became runnable at `now`.
#[inline(always)]
fn mark_runnable<C: EbpfContext>(ctx: &C, task: TaskKey, now: u64) {
    match RUNQ_TASKS.get_ptr_mut(task) {
        // SAFETY: a pointer into a live hash map value; racing writers can at
        // worst swap one timestamp for another.
        Some(entry) => unsafe { (*entry).wait.runnable_since_ns = now },
        None => {
            let entry = TaskState {
                wait: TaskWait {
                    runnable_since_ns: now,
                    pending_wait_ns: 0,
                },
            };
            if let Err(err) = RUNQ_TASKS.insert(task, entry, u64::from(BPF_ANY)) {
                map_full::record(ctx, MapId::RunqTasks, err);
            }
        }
    }
}

/// `task` leaves the CPU; it is `current`, so its cgroup is known.
#[inline(always)]
fn switched_out<C: EbpfContext>(
    ctx: &C,
    task: TaskKey,
    still_runnable: bool,
    exited: bool,
    now: u64,
) {
    match RUNQ_TASKS.get_ptr_mut(task) {
        Some(entry) => {
            // SAFETY: a pointer into a live hash map value (see mark_runnable).
            let pending = unsafe { (*entry).wait.pending_wait_ns };
            if pending != 0 {
                // SAFETY: as above.
                unsafe { (*entry).wait.pending_wait_ns = 0 };
                // SAFETY: a kernel helper without preconditions.
                let cgroup = unsafe { bpf_get_current_cgroup_id() };
                hist::record(ctx, &RUNQ_HIST, &cgroup, pending, MapId::RunqHist);
            }
            if exited {
                let _ = RUNQ_TASKS.remove(task);
            } else if still_runnable {
                // SAFETY: as above.
                unsafe { (*entry).wait.runnable_since_ns = now };
            }
        }
        None if still_runnable && !exited => mark_runnable(ctx, task, now),
        None => {}
    }
}

/// `task` gets the CPU: its wait ends now.
#[inline(always)]
fn switched_in(task: TaskKey, now: u64) {
    let Some(entry) = RUNQ_TASKS.get_ptr_mut(task) else {
        // Runnable since before the agent started: no honest sample to take.
        return;
    };
    // SAFETY: a pointer into a live hash map value (see mark_runnable).
    unsafe {
        let since = (*entry).wait.runnable_since_ns;
        if since != 0 {
            (*entry).wait.runnable_since_ns = 0;
            // A zero wait is a real sample; keep it distinguishable from none.
            (*entry).wait.pending_wait_ns = now.saturating_sub(since).max(1);
        }
    }
}
