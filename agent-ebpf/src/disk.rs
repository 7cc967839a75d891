//! Disk I/O latency: the ABI of the `disk` probes. See `src/probes/disk.rs`.
//!
//! A request is followed by its device and first sector, as the block
//! tracepoints report them: queued in the block layer (`block_rq_insert`),
//! issued to the driver (`block_rq_issue`), merged into another request
//! (`block_rq_merge`) and completed (`block_rq_complete`).

use crate::{CgroupId, histogram::Histogram};

/// Per-(cgroup, device, op) [`DiskSeries`]: latency issue → complete, time
/// queued insert → issue, and counters; cgroup [`UNMATCHED`] counts
/// completions whose start was not seen.
pub const SERIES_MAP: &str = "DISK_SERIES";
/// Requests inserted or issued and not yet completed: an array of
/// [`InFlight`] slots, two per bucket, found by [`bucket_of`].
pub const INFLIGHT_MAP: &str = "DISK_INFLIGHT";
/// The global that carries `slots - 1` of [`INFLIGHT_MAP`] (a power of two).
pub const INFLIGHT_MASK_GLOBAL: &str = "DISK_INFLIGHT_MASK";
/// The global that carries tracepoint field offsets, read from tracefs.
pub const FIELDS_GLOBAL: &str = "DISK_FIELDS";

/// Default number of slots of [`INFLIGHT_MAP`]: requests in
/// flight on the node at once (the sum of the devices' queue depths is
/// usually far lower).
pub const DEFAULT_MAX_INFLIGHT: u32 = 16_384;

/// Bytes at the start of a `block_rq_insert`, `_issue` or `_merge` record
/// that the probes copy and read the device and sector from.
pub const REQUEST_PREFIX: usize = 24;
/// Bytes at the start of a `block_rq_complete` record that the probes copy
/// and read its fields from.
pub const COMPLETE_PREFIX: usize = 40;

/// The bytes the probes copy of the record of block event `event`: every
/// field they read must end within them, and the record must be at least
/// as long (the kernel refuses to attach a program that loads past it).
pub fn record_prefix(event: &str) -> usize {
    if event == "block_rq_complete" {
        COMPLETE_PREFIX
    } else {
        REQUEST_PREFIX
    }
}

/// The cgroup id under which completions without a known start are counted.
/// No cgroup has id 0.
pub const UNMATCHED: CgroupId = 0;

/// The `op` label of each op number.
pub const OP_NAMES: [&str; 5] = ["read", "write", "flush", "discard", "other"];
pub const OP_READ: u32 = 0;
pub const OP_WRITE: u32 = 1;
pub const OP_FLUSH: u32 = 2;
pub const OP_DISCARD: u32 = 3;
pub const OP_OTHER: u32 = 4;

/// The op of a request from the first bytes of its `rwbs` field, as the
/// kernel's `blk_fill_rwbs()` writes it: an optional `F` (a flush before the
/// data), then the operation's letter (`R`, `W`, `D` for discard and secure
/// erase, `F` for a flush, `N` for anything else), then flags. Kernels before
/// 4.10 wrote a data-less flush as `FN`.
#[inline(always)]
pub fn op_from_rwbs(rwbs: [u8; 4]) -> u32 {
    let letter = |c: u8| match c {
        b'R' => Some(OP_READ),
        b'W' => Some(OP_WRITE),
        b'D' => Some(OP_DISCARD),
        b'F' => Some(OP_FLUSH),
        b'N' => Some(OP_OTHER),
        _ => None,
    };
    if rwbs[0] == b'F' {
        // A pre-flush followed by the op, or a flush alone ("F", "FS").
        match letter(rwbs[1]) {
            Some(OP_OTHER) | None => OP_FLUSH,
            Some(op) => op,
        }
    } else {
        match letter(rwbs[0]) {
            Some(op) => op,
            None => OP_OTHER,
        }
    }
}

/// A request as the tracepoints identify it: device and first sector.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestKey {
    /// The kernel's `dev_t`: major in the top 12 bits, minor in the low 20.
    pub dev: u32,
    pub _pad: u32,
    pub sector: u64,
}

/// The global that carries [`RequestLayout`], set by the loader from the
/// kernel's BTF.
pub const REQUEST_LAYOUT_GLOBAL: &str = "DISK_REQUEST_LAYOUT";

/// Where the BTF-typed block programs find a request's device, sector and
/// op: byte offsets of members, and the values of `cmd_flags`' op and flags,
/// all from the kernel's BTF (never hard-coded: they change between kernels).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestLayout {
    /// `struct request`'s `q`.
    pub q: u32,
    /// `struct request`'s `__sector`.
    pub sector: u32,
    /// `struct request`'s `cmd_flags`.
    pub cmd_flags: u32,
    /// `struct request_queue`'s `disk`.
    pub disk: u32,
    /// `struct gendisk`'s `major` and `first_minor`.
    pub major: u32,
    pub first_minor: u32,
    /// The bits of `cmd_flags` that hold the op: below the first flag bit,
    /// `__REQ_FAILFAST_DEV`.
    pub op_mask: u32,
    /// The bit of `__REQ_PREFLUSH`: a flush before the data.
    pub preflush: u32,
    /// `REQ_OP_READ`, `_WRITE`, `_FLUSH`, `_DISCARD` and `_SECURE_ERASE`.
    pub op_read: u32,
    pub op_write: u32,
    pub op_flush: u32,
    pub op_discard: u32,
    pub op_secure_erase: u32,
}

impl RequestLayout {
    pub const UNSET: Self = Self {
        q: 0,
        sector: 0,
        cmd_flags: 0,
        disk: 0,
        major: 0,
        first_minor: 0,
        op_mask: 0,
        preflush: 0,
        op_read: 0,
        op_write: 0,
        op_flush: 0,
        op_discard: 0,
        op_secure_erase: 0,
    };

    /// The op of a request with `cmd_flags` `flags`, as [`op_from_rwbs`]
    /// decodes what the kernel's `blk_fill_rwbs()` makes of the same flags.
    #[inline(always)]
    pub const fn op_of(&self, flags: u32) -> u32 {
        let op = flags & self.op_mask;
        if op == self.op_read {
            OP_READ
        } else if op == self.op_write {
            OP_WRITE
        } else if op == self.op_flush {
            OP_FLUSH
        } else if op == self.op_discard || op == self.op_secure_erase {
            OP_DISCARD
        } else if flags & self.preflush != 0 {
            OP_FLUSH
        } else {
            OP_OTHER
        }
    }
}

/// The kernel's `dev_t` of a disk, `MKDEV(major, first_minor)`, as the
/// block tracepoints report it.
#[inline(always)]
pub const fn disk_dev(major: u32, first_minor: u32) -> u32 {
    (major << 20) | (first_minor & 0xf_ffff)
}

/// What the probes remember of a request in flight, in a slot of
/// [`INFLIGHT_MAP`]. A slot is free when both times are 0.
///
/// The slots are an array rather than a hash map because inserting into a
/// preallocated BPF hash map costs several hundred nanoseconds when entries
/// are freed on another CPU (completions run on the device's interrupt CPU),
/// which is most of what the probes would cost per request.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InFlight {
    pub request: RequestKey,
    /// The cgroup that submitted it.
    pub cgroup: CgroupId,
    /// `bpf_ktime_get_ns()` at `block_rq_insert`, 0 if it was not inserted.
    /// A request the driver re-issues without a new insert has this moved
    /// forward by the time since its first issue, so that `issued_ns -
    /// inserted_ns` stays its time queued.
    pub inserted_ns: u64,
    /// `bpf_ktime_get_ns()` at the last `block_rq_issue`, 0 until issued.
    pub issued_ns: u64,
}

impl InFlight {
    pub const fn is_free(&self) -> bool {
        self.inserted_ns == 0 && self.issued_ns == 0
    }

    /// Time queued in the block layer, insert → issue; `None` for a request
    /// issued directly (or not issued at all), which has no queue sample.
    pub const fn queued_ns(&self) -> Option<u64> {
        if self.inserted_ns == 0 || self.issued_ns == 0 {
            return None;
        }
        Some(self.issued_ns.saturating_sub(self.inserted_ns))
    }

    /// When the request was last seen: the later of insert and issue.
    pub const fn last_seen_ns(&self) -> u64 {
        if self.issued_ns > self.inserted_ns {
            self.issued_ns
        } else {
            self.inserted_ns
        }
    }
}

/// The number of [`INFLIGHT_MAP`] slots for a requested capacity: a power of
/// two, at least 256.
pub const fn inflight_slots(requested: u32) -> u32 {
    let slots = if requested < 256 { 256 } else { requested };
    match slots.checked_next_power_of_two() {
        Some(n) => n,
        None => 1 << 31,
    }
}

/// The first of the two slots where `request` may be kept, given the slot
/// mask (`slots - 1`): a multiplicative hash of the device and sector, so
/// sequential and strided sectors spread over the array.
#[inline(always)]
pub const fn bucket_of(request: &RequestKey, mask: u32) -> u32 {
    let mixed = (request.sector ^ ((request.dev as u64) << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((mixed >> 32) as u32) & mask & !1
}

/// The key of the per-container series.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiskKey {
    pub cgroup: CgroupId,
    /// The kernel's `dev_t` of the disk.
    pub dev: u32,
    /// An index into [`OP_NAMES`].
    pub op: u32,
}

/// One (cgroup, device, op)'s completed requests: their latency and time
/// queued, and how many there were, their bytes and how many failed. Kept
/// together so that a request updates one map value, once, at completion.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskSeries {
    /// Issue → complete, of the requests whose issue was seen.
    pub latency: Histogram,
    /// Insert → issue, of the requests the block layer queued (empty where
    /// every request is issued directly).
    pub queue: Histogram,
    pub requests: u64,
    pub bytes: u64,
    pub errors: u64,
}

impl DiskSeries {
    pub const ZERO: Self = Self {
        latency: Histogram::ZERO,
        queue: Histogram::ZERO,
        requests: 0,
        bytes: 0,
        errors: 0,
    };
}

/// Byte offsets of the tracepoint fields the probes read, taken from the
/// tracefs `format` files at start-up (nothing is hard-coded: `ioprio` moved
/// `rwbs` in 6.x, and `errors` became `error`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockFields {
    pub insert_dev: u32,
    pub insert_sector: u32,
    pub issue_dev: u32,
    pub issue_sector: u32,
    pub merge_dev: u32,
    pub merge_sector: u32,
    pub complete_dev: u32,
    pub complete_sector: u32,
    pub complete_nr_sector: u32,
    pub complete_error: u32,
    pub complete_rwbs: u32,
}

impl BlockFields {
    pub const UNSET: Self = Self {
        insert_dev: 0,
        insert_sector: 0,
        issue_dev: 0,
        issue_sector: 0,
        merge_dev: 0,
        merge_sector: 0,
        complete_dev: 0,
        complete_sector: 0,
        complete_nr_sector: 0,
        complete_error: 0,
        complete_rwbs: 0,
    };
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]`, two u32s then a u64: no padding, any bits valid.
    unsafe impl aya::Pod for super::RequestKey {}
    // SAFETY: `#[repr(C)]`, a RequestKey (two u32s, a u64) then u64s: no
    // padding, any bits valid.
    unsafe impl aya::Pod for super::InFlight {}
    // SAFETY: `#[repr(C)]`, a u64 then two u32s: no padding, any bits valid.
    unsafe impl aya::Pod for super::DiskKey {}
    // SAFETY: `#[repr(C)]` and made only of `u64`s: no padding, any bits valid.
    unsafe impl aya::Pod for super::DiskSeries {}
    // SAFETY: `#[repr(C)]` and made only of `u32`s: no padding, any bits valid.
    unsafe impl aya::Pod for super::BlockFields {}
    // SAFETY: `#[repr(C)]` and made only of `u32`s: no padding, any bits valid.
    unsafe impl aya::Pod for super::RequestLayout {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(rwbs: &str) -> &'static str {
        let mut bytes = [0; 4];
        for (b, c) in bytes.iter_mut().zip(rwbs.bytes()) {
            *b = c;
        }
        OP_NAMES[op_from_rwbs(bytes) as usize]
    }

    #[test]
    fn plain_reads_and_writes() {
        assert_eq!(op("R"), "read");
        assert_eq!(op("RA"), "read");
        assert_eq!(op("RS"), "read");
        assert_eq!(op("RM"), "read");
        assert_eq!(op("W"), "write");
        assert_eq!(op("WS"), "write");
        assert_eq!(op("WM"), "write");
    }

    #[test]
    fn a_preflush_or_fua_write_is_a_write() {
        assert_eq!(op("FWS"), "write");
        assert_eq!(op("FWFS"), "write");
        assert_eq!(op("WFS"), "write");
    }

    #[test]
    fn flushes_alone_are_flushes_on_every_kernel() {
        // The flush machinery's own request (REQ_OP_FLUSH | REQ_PREFLUSH).
        assert_eq!(op("FF"), "flush");
        assert_eq!(op("F"), "flush");
        assert_eq!(op("FS"), "flush");
        // Before 4.10: a flush with no data.
        assert_eq!(op("FN"), "flush");
    }

    #[test]
    fn discards_and_secure_erase_are_discards() {
        assert_eq!(op("D"), "discard");
        assert_eq!(op("DS"), "discard");
        assert_eq!(op("DE"), "discard");
        assert_eq!(op("FD"), "discard");
    }

    /// `cmd_flags` as Linux 6.x lays them out.
    const LINUX_6: RequestLayout = RequestLayout {
        op_mask: 0xff,
        preflush: 1 << 18,
        op_read: 0,
        op_write: 1,
        op_flush: 2,
        op_discard: 3,
        op_secure_erase: 5,
        ..RequestLayout::UNSET
    };

    #[test]
    fn the_op_from_cmd_flags_is_the_op_rwbs_gives_for_them() {
        let sync = 1 << 11;
        let fua = 1 << 17;
        let preflush = LINUX_6.preflush;
        for (flags, rwbs) in [
            (0, "R"),
            (sync, "RS"),
            (1, "W"),
            (1 | sync, "WS"),
            (1 | preflush | sync, "FWS"),
            (1 | fua | sync, "WFS"),
            // The flush machinery's own request.
            (2 | preflush, "FF"),
            (3, "D"),
            (5, "DE"),
            (3 | preflush, "FD"),
        ] {
            assert_eq!(
                OP_NAMES[LINUX_6.op_of(flags) as usize],
                op(rwbs),
                "flags {flags:#x}"
            );
        }
        // REQ_OP_WRITE_ZEROES, which rwbs spells N.
        assert_eq!(OP_NAMES[LINUX_6.op_of(9) as usize], op("N"));
    }

    #[test]
    fn a_disks_dev_is_its_major_and_first_minor() {
        assert_eq!(disk_dev(254, 0), 254 << 20);
        assert_eq!(disk_dev(259, 3), (259 << 20) | 3);
    }

    #[test]
    fn slots_are_a_power_of_two_of_at_least_256() {
        assert_eq!(inflight_slots(0), 256);
        assert_eq!(inflight_slots(256), 256);
        assert_eq!(inflight_slots(16_384), 16_384);
        assert_eq!(inflight_slots(16_385), 32_768);
        assert_eq!(inflight_slots(u32::MAX), 1 << 31);
    }

    #[test]
    fn sequential_and_strided_requests_spread_over_the_buckets() {
        let slots = inflight_slots(4_096);
        let mask = slots - 1;
        for stride in [1u64, 8, 256, 2048] {
            let mut used = std::collections::HashSet::new();
            for i in 0..1_024u64 {
                let request = RequestKey {
                    dev: 254 << 20,
                    _pad: 0,
                    sector: 1_000_000 + i * stride,
                };
                let bucket = bucket_of(&request, mask);
                assert_eq!(bucket % 2, 0);
                assert!(bucket < slots);
                used.insert(bucket);
            }
            // 1,024 requests over 2,048 buckets: few may share one.
            assert!(used.len() > 700, "stride {stride}: {} buckets", used.len());
        }
    }

    fn in_flight(inserted_ns: u64, issued_ns: u64) -> InFlight {
        InFlight {
            request: RequestKey {
                dev: 254 << 20,
                _pad: 0,
                sector: 8,
            },
            cgroup: 1,
            inserted_ns,
            issued_ns,
        }
    }

    #[test]
    fn only_a_request_inserted_then_issued_has_a_queue_time() {
        assert_eq!(in_flight(1_000, 4_000).queued_ns(), Some(3_000));
        assert_eq!(in_flight(0, 4_000).queued_ns(), None, "issued directly");
        assert_eq!(in_flight(1_000, 0).queued_ns(), None, "never issued");
    }

    #[test]
    fn anything_else_is_other() {
        assert_eq!(op("N"), "other");
        assert_eq!(op(""), "other");
        assert_eq!(op("?"), "other");
    }
}
