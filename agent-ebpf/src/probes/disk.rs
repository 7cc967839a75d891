//! Disk I/O latency per cgroup, device and op.
//!
//! Tracepoints of the block layer, attached one of two ways:
//! - BTF-typed raw tracepoints (`disk_btf_*`, Linux 5.11+): the kernel
//!   passes the `struct request` without building a trace record, and the
//!   programs read its disk, sector and `cmd_flags` with plain loads at
//!   offsets from the kernel's BTF ([`DISK_REQUEST_LAYOUT`]), which the
//!   kernel checks when it loads them;
//! - classic tracepoints (`disk_rq_*`), whose fields are read at offsets
//!   taken from the tracefs format files ([`DISK_FIELDS`]), from a copy of
//!   the record's first bytes.
//!
//! Either way a request is known by its device and first sector
//! ([`RequestKey`]):
//!
//! - `block_rq_insert` (queued in the block layer, e.g. by an I/O scheduler)
//!   or, for a request issued directly, `block_rq_issue` is its first
//!   sighting. Both run in the submitting task's context (`submit_bio()`, or
//!   the flush of the task's plug), so the current cgroup is the submitter's;
//!   it is recorded in [`DISK_INFLIGHT`].
//! - `block_rq_issue` (handed to the driver) notes the time in the entry.
//! - `block_rq_complete` runs in interrupt context, where `current` is
//!   unrelated: the entry says whose request it was. Issue → complete, the
//!   time queued (insert → issue), the request, its bytes and an error go to
//!   the cgroup's `DISK_SERIES`, in one map update per request. A request
//!   issued directly has no queue sample, not a zero one. A completion
//!   without an entry (the agent started mid-flight, the map was full) is
//!   counted under cgroup [`UNMATCHED`], never given a latency.
//! - `block_rq_merge` drops the entry of a request merged into another: it
//!   will never complete by itself. A request requeued by its driver keeps
//!   its entry, and its cgroup, when a kernel worker inserts it again.
//!
//! A flush asked for by a task (an empty write with a pre-flush: `fsync`)
//! becomes the block layer's own flush request, issued by a kernel worker at
//! sector 0, so it counts for the worker's cgroup (the root). The empty write
//! completes with it without being issued: it is not a device request and is
//! not counted.
//!
//! Writes flushed later by kernel writeback threads, and bios delayed by the
//! `io.max` throttle, reach the block layer from kernel threads, so they count
//! for the root cgroup: the tracepoints do not carry a bio's own cgroup.

use agent_ebpf::{
    disk::{
        BlockFields, COMPLETE_PREFIX, DEFAULT_MAX_INFLIGHT, DiskKey, DiskSeries, InFlight,
        OP_FLUSH, REQUEST_PREFIX, RequestKey, RequestLayout, UNMATCHED, bucket_of, disk_dev,
        op_from_rwbs,
    },
    map_full::MapId,
};
use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map, tracepoint},
    maps::{Array, HashMap},
    programs::{BtfTracePointContext, TracePointContext},
};

use crate::{hist, map_full};

/// Tracepoint field offsets, set by the loader from tracefs.
#[unsafe(no_mangle)]
static DISK_FIELDS: BlockFields = BlockFields::UNSET;

/// Where the BTF-typed programs find a request's device and op, set by the
/// loader from the kernel's BTF.
#[unsafe(no_mangle)]
static DISK_REQUEST_LAYOUT: RequestLayout = RequestLayout::UNSET;

#[map(name = "DISK_INFLIGHT")]
static DISK_INFLIGHT: Array<InFlight> = Array::with_max_entries(DEFAULT_MAX_INFLIGHT, 0);

/// `slots - 1` of `DISK_INFLIGHT`, set by the loader.
#[unsafe(no_mangle)]
static DISK_INFLIGHT_MASK: u32 = DEFAULT_MAX_INFLIGHT - 1;

#[map(name = "DISK_SERIES")]
static DISK_SERIES: HashMap<DiskKey, DiskSeries> =
    HashMap::with_max_entries(agent_ebpf::runqueue::DEFAULT_MAX_CGROUPS, 0);

/// A zeroed series to insert from (too large for the BPF stack).
#[map(name = "DISK_SERIES_ZERO")]
static DISK_SERIES_ZERO: Array<DiskSeries> = Array::with_max_entries(1, 0);

#[tracepoint(category = "block", name = "block_rq_insert")]
pub fn disk_rq_insert(ctx: TracePointContext) -> u32 {
    let _ = rq_insert(&ctx);
    0
}

#[tracepoint(category = "block", name = "block_rq_issue")]
pub fn disk_rq_issue(ctx: TracePointContext) -> u32 {
    let _ = rq_issue(&ctx);
    0
}

#[tracepoint(category = "block", name = "block_rq_merge")]
pub fn disk_rq_merge(ctx: TracePointContext) -> u32 {
    let f = fields();
    if let Some(slot) = Record::of_request(&ctx)
        .and_then(|r| r.request(f.merge_dev, f.merge_sector))
        .and_then(|key| find(&key))
    {
        // SAFETY: `slot` points into a live array map value.
        unsafe { free(slot) };
    }
    0
}

#[tracepoint(category = "block", name = "block_rq_complete")]
pub fn disk_rq_complete(ctx: TracePointContext) -> u32 {
    let _ = rq_complete(&ctx);
    0
}

// ---- BTF-typed raw tracepoints: no trace record ----

#[btf_tracepoint(function = "block_rq_insert")]
pub fn disk_btf_rq_insert(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(struct request *rq)
    start(&ctx, request(ctx.arg(0), &layout()), now(), 0);
    0
}

#[btf_tracepoint(function = "block_rq_issue")]
pub fn disk_btf_rq_issue(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(struct request *rq)
    issue(&ctx, request(ctx.arg(0), &layout()));
    0
}

#[btf_tracepoint(function = "block_rq_merge")]
pub fn disk_btf_rq_merge(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(struct request *rq)
    if let Some(slot) = find(&request(ctx.arg(0), &layout())) {
        // SAFETY: `slot` points into a live array map value.
        unsafe { free(slot) };
    }
    0
}

#[btf_tracepoint(function = "block_rq_complete")]
pub fn disk_btf_rq_complete(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(struct request *rq, blk_status_t error, unsigned int nr_bytes)
    let rq: *const u8 = ctx.arg(0);
    let layout = layout();
    // SAFETY: as in `request`.
    let flags =
        unsafe { core::ptr::read_volatile(rq.add(layout.cmd_flags as usize).cast::<u32>()) };
    let failed = ctx.arg::<u64>(1) as u8 != 0;
    let bytes = u64::from(ctx.arg::<u64>(2) as u32);
    let _ = complete(
        &ctx,
        request(rq, &layout),
        layout.op_of(flags),
        bytes,
        failed,
    );
    0
}

#[inline(always)]
fn layout() -> RequestLayout {
    // SAFETY: a plain read of a global the loader may have overridden.
    unsafe { core::ptr::read_volatile(&DISK_REQUEST_LAYOUT) }
}

/// The (device, sector) of request `rq`, as the tracepoints report them.
/// A BTF-typed pointer cannot be used as a number
/// (the kernel keeps programs from computing with kernel addresses), so
/// requests are known by their contents, as with classic tracepoints.
#[inline(always)]
fn request(rq: *const u8, layout: &RequestLayout) -> RequestKey {
    // SAFETY: `rq` is the request the tracepoint is about, typed by the
    // kernel's BTF, as are the queue and disk it points to; the offsets are
    // those members' in this kernel's BTF, and the kernel checks each load
    // against it when it loads the program (a load through a pointer that
    // turns out to be bad reads 0 rather than faulting).
    unsafe {
        let sector = core::ptr::read_volatile(rq.add(layout.sector as usize).cast::<u64>());
        let queue = core::ptr::read_volatile(rq.add(layout.q as usize).cast::<*const u8>());
        let disk = core::ptr::read_volatile(queue.add(layout.disk as usize).cast::<*const u8>());
        // As the tracepoints report it: 0 for a request without a disk.
        let dev = if disk.is_null() {
            0
        } else {
            disk_dev(
                core::ptr::read_volatile(disk.add(layout.major as usize).cast::<u32>()),
                core::ptr::read_volatile(disk.add(layout.first_minor as usize).cast::<u32>()),
            )
        };
        RequestKey {
            dev,
            _pad: 0,
            sector,
        }
    }
}

#[inline(always)]
fn fields() -> BlockFields {
    // SAFETY: a plain read of a global the loader may have overridden; volatile
    // so the compiler cannot fold in the default.
    unsafe { core::ptr::read_volatile(&DISK_FIELDS) }
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: a kernel helper without preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// The start of a trace record, copied word by word with direct loads.
///
/// The verifier lets a tracepoint program load from its record only at
/// offsets fixed when the program is compiled, while the fields' offsets
/// come from tracefs at run time. So the record's first bytes are copied
/// with loads at the fixed offsets 8, 16, … (the kernel refuses loads from
/// the common header below 8, which no probe needs), and fields are read
/// from the copy. That costs a few instructions where a
/// `bpf_probe_read_kernel` of the same bytes costs a helper call. A request
/// event copies [`REQUEST_PREFIX`] bytes, a completion [`COMPLETE_PREFIX`]:
/// the kernel refuses to attach a program whose loads reach past the
/// record's end, so each copies no more than its fields need (the loader
/// checks that the records are as long).
struct Record {
    words: [u64; COMPLETE_PREFIX / 8],
    len: usize,
}

// `Record::of_request` copies words 1 and 2, `Record::of_completion` 1 to 4.
const _: () = assert!(REQUEST_PREFIX == 24 && COMPLETE_PREFIX == 40);

impl Record {
    /// The first [`REQUEST_PREFIX`] bytes of an insert, issue or merge.
    #[inline(always)]
    fn of_request(ctx: &TracePointContext) -> Option<Self> {
        let record = ctx.as_ptr().cast::<u64>();
        let mut words = [0u64; COMPLETE_PREFIX / 8];
        // SAFETY: the kernel checks each load at verification time (aligned,
        // past the header) and at attach time (within the record).
        unsafe {
            words[1] = core::ptr::read_volatile(record.add(1));
            words[2] = core::ptr::read_volatile(record.add(2));
        }
        Some(Self {
            words,
            len: REQUEST_PREFIX,
        })
    }

    /// The first [`COMPLETE_PREFIX`] bytes of a completion.
    #[inline(always)]
    fn of_completion(ctx: &TracePointContext) -> Option<Self> {
        let record = ctx.as_ptr().cast::<u64>();
        let mut words = [0u64; COMPLETE_PREFIX / 8];
        // SAFETY: as in `of_request`.
        unsafe {
            words[1] = core::ptr::read_volatile(record.add(1));
            words[2] = core::ptr::read_volatile(record.add(2));
            words[3] = core::ptr::read_volatile(record.add(3));
            words[4] = core::ptr::read_volatile(record.add(4));
        }
        Some(Self {
            words,
            len: COMPLETE_PREFIX,
        })
    }

    /// The field of type `T` at `offset`, `None` past the prefix.
    #[inline(always)]
    fn at<T: Copy>(&self, offset: u32) -> Option<T> {
        let offset = offset as usize;
        if offset + core::mem::size_of::<T>() > self.len {
            return None;
        }
        // SAFETY: in bounds, as checked above; an unaligned read of plain
        // bytes into a type valid for any bits.
        Some(unsafe {
            self.words
                .as_ptr()
                .cast::<u8>()
                .add(offset)
                .cast::<T>()
                .read_unaligned()
        })
    }

    /// The request's (device, sector).
    #[inline(always)]
    fn request(&self, dev: u32, sector: u32) -> Option<RequestKey> {
        Some(RequestKey {
            dev: self.at::<u32>(dev)?,
            _pad: 0,
            sector: self.at::<u64>(sector)?,
        })
    }

    /// The request's op, from the first two bytes of its `rwbs` field.
    #[inline(always)]
    fn op(&self, rwbs: u32) -> Option<u32> {
        let [first, second] = self.at::<[u8; 2]>(rwbs)?;
        Some(op_from_rwbs([first, second, 0, 0]))
    }
}

#[inline(always)]
fn inflight_mask() -> u32 {
    // SAFETY: a plain read of a global the loader may have overridden.
    unsafe { core::ptr::read_volatile(&DISK_INFLIGHT_MASK) }
}

/// The two slots of the bucket where `key` may be kept.
#[inline(always)]
fn bucket(key: &RequestKey) -> Option<(*mut InFlight, *mut InFlight)> {
    let first = bucket_of(key, inflight_mask());
    Some((
        DISK_INFLIGHT.get_ptr_mut(first)?,
        DISK_INFLIGHT.get_ptr_mut(first + 1)?,
    ))
}

/// Whether `slot` holds `key`.
///
/// # Safety
/// `slot` must point into a live array map value.
#[inline(always)]
unsafe fn holds(slot: *const InFlight, key: &RequestKey) -> bool {
    // SAFETY: per the function's contract.
    unsafe { !(*slot).is_free() && (*slot).request == *key }
}

/// Marks `slot` free.
///
/// # Safety
/// `slot` must point into a live array map value.
#[inline(always)]
unsafe fn free(slot: *mut InFlight) {
    // SAFETY: per the function's contract.
    unsafe {
        (*slot).inserted_ns = 0;
        (*slot).issued_ns = 0;
    }
}

/// The slot holding `key`, if any.
#[inline(always)]
fn find(key: &RequestKey) -> Option<*mut InFlight> {
    let (a, b) = bucket(key)?;
    // SAFETY: both point into the live array map.
    unsafe {
        if holds(a, key) {
            Some(a)
        } else if holds(b, key) {
            Some(b)
        } else {
            None
        }
    }
}

/// Records a request's first sighting, in the submitter's context. The
/// request's bucket gives it the slot that already holds it (requeued after
/// an issue: it keeps its submitter; never issued: stale, replaced), else a
/// free one, else the one seen least recently, whose request will complete
/// unmatched (counted as the map being full).
#[inline(always)]
fn start<C: EbpfContext>(ctx: &C, key: RequestKey, inserted_ns: u64, issued_ns: u64) {
    let Some((a, b)) = bucket(&key) else { return };
    // SAFETY: both point into the live array map; a request is handled by
    // one CPU at a time, and another request sharing the bucket at the same
    // moment is rare and at worst lost.
    unsafe {
        let slot = if holds(a, &key) {
            a
        } else if holds(b, &key) {
            b
        } else if (*a).is_free() {
            a
        } else if (*b).is_free() {
            b
        } else {
            map_full::record(ctx, MapId::DiskInflight, ENOSPC);
            if (*a).last_seen_ns() <= (*b).last_seen_ns() {
                a
            } else {
                b
            }
        };
        let requeued = holds(slot, &key) && (*slot).issued_ns != 0;
        if !requeued {
            (*slot).cgroup = bpf_get_current_cgroup_id();
            (*slot).request = key;
        }
        (*slot).inserted_ns = inserted_ns;
        (*slot).issued_ns = issued_ns;
    }
}

/// `-ENOSPC`, reported for an in-flight request evicted from a full bucket.
const ENOSPC: i32 = -28;

fn rq_insert(ctx: &TracePointContext) -> Option<()> {
    let f = fields();
    let key = Record::of_request(ctx)?.request(f.insert_dev, f.insert_sector)?;
    start(ctx, key, now(), 0);
    Some(())
}

fn rq_issue(ctx: &TracePointContext) -> Option<()> {
    let f = fields();
    let key = Record::of_request(ctx)?.request(f.issue_dev, f.issue_sector)?;
    issue(ctx, key);
    Some(())
}

/// Notes the issue of request `key`, its first sighting if it was not
/// inserted.
#[inline(always)]
fn issue<C: EbpfContext>(ctx: &C, key: RequestKey) {
    let issued = now();
    let Some(entry) = find(&key) else {
        start(ctx, key, 0, issued);
        return;
    };
    // SAFETY: `entry` points into a live map value; a request is issued by
    // one CPU at a time.
    unsafe {
        let (inserted, was_issued) = ((*entry).inserted_ns, (*entry).issued_ns);
        // Re-issued without a new insert (the driver was busy): the time
        // queued is still insert → first issue.
        if inserted != 0 && was_issued != 0 {
            (*entry).inserted_ns = inserted.saturating_add(issued.saturating_sub(was_issued));
        }
        (*entry).issued_ns = issued;
    }
}

fn rq_complete(ctx: &TracePointContext) -> Option<()> {
    let f = fields();
    let record = Record::of_completion(ctx)?;
    let mut key = record.request(f.complete_dev, f.complete_sector)?;
    // A request without a position (the flush machinery's own flush) is
    // traced at issue as sector 0 but at completion as -1.
    if key.sector == u64::MAX {
        key.sector = 0;
    }
    let nr_sector = record.at::<u32>(f.complete_nr_sector)?;
    let error = record.at::<i32>(f.complete_error)?;
    let op = record.op(f.complete_rwbs)?;
    complete(ctx, key, op, u64::from(nr_sector) * 512, error != 0)
}

/// Counts the completion of request `key`, of `bytes`, for the cgroup that
/// submitted it.
#[inline(always)]
fn complete<C: EbpfContext>(
    ctx: &C,
    key: RequestKey,
    op: u32,
    bytes: u64,
    failed: bool,
) -> Option<()> {
    let done = now();
    let started = find(&key).map(|slot| {
        // SAFETY: `slot` points into the live array map.
        unsafe {
            let entry = *slot;
            free(slot);
            entry
        }
    });
    let cgroup = match started {
        Some(entry) => entry.cgroup,
        // The empty write that asked for a flush completes when the flush
        // does, without being issued itself: the device did nothing for it.
        None if bytes == 0 && op != OP_FLUSH => return Some(()),
        None => UNMATCHED,
    };
    let series = DiskKey {
        cgroup,
        dev: key.dev,
        op,
    };
    // A request that failed before it was issued has no latency.
    let latency = started
        .filter(|entry| entry.issued_ns != 0)
        .map(|entry| done.saturating_sub(entry.issued_ns));
    let queued = started.and_then(|entry| entry.queued_ns());
    let zero = DISK_SERIES_ZERO.get(0)?;
    let value = hist::get_or_insert(ctx, &DISK_SERIES, &series, zero, MapId::DiskSeries)?;
    // SAFETY: `value` points into a live hash map value whose fields are only
    // ever updated atomically.
    unsafe {
        if let Some(ns) = latency {
            hist::add(&mut (*value).latency, ns);
        }
        if let Some(ns) = queued {
            hist::add(&mut (*value).queue, ns);
        }
        crate::atomic_add(&mut (*value).requests, 1);
        crate::atomic_add(&mut (*value).bytes, bytes);
        if failed {
            crate::atomic_add(&mut (*value).errors, 1);
        }
    }
    Some(())
}
