//! CPU run-queue latency per cgroup.
//!
//! Tracepoints: `sched:sched_wakeup`, `sched:sched_wakeup_new` (a task became
//! runnable) and `sched:sched_switch` (a CPU switched from `prev` to `next`).
//! Field offsets come from the tracefs format files, via [`RUNQ_FIELDS`].
//!
//! A task's wait starts when it is woken, or when it is switched out while
//! still runnable (preempted or yielding), and ends when it is switched in.
//! At wakeup `current` is the waker and at switch-in it is the previous task,
//! so neither knows the waiting task's cgroup. The wait is therefore parked in
//! the task's entry and added to the histogram at the task's next switch-out,
//! where the task is `current` and `bpf_get_current_cgroup_id()` is exactly its
//! cgroup — also for a task that moved cgroups while it waited, or was born
//! into another cgroup than its parent's (`CLONE_INTO_CGROUP`). A task's last
//! switch-out (state `X`/`Z`) removes its entry, so the map does not leak.
//!
//! Per event: at most two hash lookups, in place updates, and two atomic adds.

use agent_ebpf::{
    CgroupId,
    histogram::{self, Histogram},
    map_full::MapId,
    runqueue::{
        DEFAULT_MAX_CGROUPS, DEFAULT_MAX_TASKS, SchedFields, TASK_EXIT_STATE_MASK,
        TASK_SLEEP_STATE_MASK, TaskWait,
    },
};
use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::{Array, HashMap},
    programs::TracePointContext,
};

use crate::map_full;

const EEXIST: i32 = 17;

#[map(name = "RUNQ_TASKS")]
static RUNQ_TASKS: HashMap<u32, TaskWait> = HashMap::with_max_entries(DEFAULT_MAX_TASKS, 0);

#[map(name = "RUNQ_HIST")]
static RUNQ_HIST: HashMap<CgroupId, Histogram> = HashMap::with_max_entries(DEFAULT_MAX_CGROUPS, 0);

/// A zeroed histogram to insert from: 408 bytes do not fit the BPF stack
/// comfortably next to everything else.
#[map(name = "RUNQ_ZERO")]
static RUNQ_ZERO: Array<Histogram> = Array::with_max_entries(1, 0);

#[unsafe(no_mangle)]
static RUNQ_FIELDS: SchedFields = SchedFields::UNSET;

#[inline(always)]
fn fields() -> SchedFields {
    // SAFETY: a plain read of a global the loader may have overridden; volatile
    // so the compiler does not fold in the compile-time value.
    unsafe { core::ptr::read_volatile(&RUNQ_FIELDS) }
}

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
    if pid <= 0 {
        return Ok(());
    }
    // SAFETY: no other side-effect-free precondition; a kernel helper.
    let now = unsafe { bpf_ktime_get_ns() };
    mark_runnable(ctx, pid as u32, now);
    Ok(())
}

#[inline(always)]
fn mark_runnable(ctx: &TracePointContext, pid: u32, now: u64) {
    match RUNQ_TASKS.get_ptr_mut(pid) {
        // SAFETY: a pointer into a live hash map value; racing writers can at
        // worst swap one timestamp for another.
        Some(task) => unsafe { (*task).runnable_since_ns = now },
        None => {
            let task = TaskWait {
                runnable_since_ns: now,
                pending_wait_ns: 0,
            };
            if let Err(err) = RUNQ_TASKS.insert(pid, task, u64::from(BPF_ANY)) {
                map_full::record(ctx, MapId::RunqTasks, err);
            }
        }
    }
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
    // SAFETY: a kernel helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };

    // pid 0 is the per-CPU idle task: it never waits for a CPU.
    if prev_pid > 0 {
        switched_out(ctx, prev_pid as u32, prev_state, now);
    }
    if next_pid > 0 {
        switched_in(next_pid as u32, now);
    }
    Ok(())
}

/// `prev` leaves the CPU; it is `current`, so its cgroup is known.
#[inline(always)]
fn switched_out(ctx: &TracePointContext, pid: u32, state: u64, now: u64) {
    let still_runnable = state & TASK_SLEEP_STATE_MASK == 0;
    match RUNQ_TASKS.get_ptr_mut(pid) {
        Some(task) => {
            // SAFETY: a pointer into a live hash map value (see mark_runnable).
            let pending = unsafe { (*task).pending_wait_ns };
            if pending != 0 {
                // SAFETY: as above.
                unsafe { (*task).pending_wait_ns = 0 };
                // SAFETY: a kernel helper without preconditions.
                let cgroup = unsafe { bpf_get_current_cgroup_id() };
                record(ctx, cgroup, pending);
            }
            if state & TASK_EXIT_STATE_MASK != 0 {
                let _ = RUNQ_TASKS.remove(pid);
            } else if still_runnable {
                // SAFETY: as above.
                unsafe { (*task).runnable_since_ns = now };
            }
        }
        None if still_runnable => mark_runnable(ctx, pid, now),
        None => {}
    }
}

/// `next` gets the CPU: its wait ends now.
#[inline(always)]
fn switched_in(pid: u32, now: u64) {
    let Some(task) = RUNQ_TASKS.get_ptr_mut(pid) else {
        // Runnable since before the agent started: no honest sample to take.
        return;
    };
    // SAFETY: a pointer into a live hash map value (see mark_runnable).
    unsafe {
        let since = (*task).runnable_since_ns;
        if since != 0 {
            (*task).runnable_since_ns = 0;
            // A zero wait is a real sample; keep it distinguishable from none.
            (*task).pending_wait_ns = now.saturating_sub(since).max(1);
        }
    }
}

/// Adds one wait to `cgroup`'s histogram.
#[inline(always)]
fn record(ctx: &TracePointContext, cgroup: CgroupId, wait_ns: u64) {
    let hist = match RUNQ_HIST.get_ptr_mut(cgroup) {
        Some(hist) => hist,
        None => {
            let Some(zero) = RUNQ_ZERO.get(0) else { return };
            match RUNQ_HIST.insert(cgroup, zero, u64::from(BPF_NOEXIST)) {
                Ok(()) => {}
                // Another CPU created it first: fine.
                Err(EEXIST) => {}
                Err(err) => {
                    map_full::record(ctx, MapId::RunqHist, err);
                    return;
                }
            }
            let Some(hist) = RUNQ_HIST.get_ptr_mut(cgroup) else {
                return;
            };
            hist
        }
    };
    let slot = histogram::slot_for(wait_ns);
    // SAFETY: `hist` points into a live hash map value; the fields are only
    // ever updated atomically, from any CPU.
    unsafe {
        let Some(bucket) = (*hist).buckets.get_mut(slot) else {
            return;
        };
        crate::atomic_add(bucket, 1);
        crate::atomic_add(&mut (*hist).sum_ns, wait_ns);
    }
}
