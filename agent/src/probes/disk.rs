//! Disk I/O latency: the userspace half of `agent-ebpf/src/probes/disk.rs`.
//! Takes the block tracepoints' field offsets from tracefs, or the request's
//! layout from the kernel's BTF for the raw tracepoints, attaches the
//! probes, and reads the per-(cgroup, device, op) histograms and counters
//! when scraped.

use agent_ebpf::disk::{
    BlockFields, DiskKey, DiskSeries, RequestLayout, SERIES_MAP, record_prefix,
};
use aya::{
    Ebpf,
    maps::{HashMap, MapData, MapError},
};

use super::{AttachMode, LoadError, take_map};
use crate::{
    btf::Btf,
    tracefs::{EventFormat, Tracefs, TracefsError},
};

pub const PROBE: &str = "disk";

/// Classic tracepoint programs: (program, category, tracepoint).
const PROGRAMS: [(&str, &str, &str); 4] = [
    ("disk_rq_insert", "block", "block_rq_insert"),
    ("disk_rq_issue", "block", "block_rq_issue"),
    ("disk_rq_merge", "block", "block_rq_merge"),
    ("disk_rq_complete", "block", "block_rq_complete"),
];

/// Offsets of the fields the probes read, from this kernel's format files.
pub fn field_offsets(tracefs: &Tracefs) -> Result<BlockFields, TracefsError> {
    let mut fields = BlockFields::UNSET;
    for (_, category, event) in PROGRAMS {
        fill_from(&mut fields, &tracefs.format(category, event)?)?;
    }
    Ok(fields)
}

/// Takes the fields of one block event into `fields`, checking their sizes:
/// the probes read a 4-byte `dev_t`, an 8-byte `sector_t`, a 4-byte count and
/// error, and the first 2 bytes of `rwbs` at completion.
pub fn fill_from(fields: &mut BlockFields, format: &EventFormat) -> Result<(), TracefsError> {
    const DEV: &[u32] = &[4];
    const SECTOR: &[u32] = &[8];
    const INT: &[u32] = &[4];
    // `char rwbs[8]` before Linux 6.0, `char rwbs[10]` since.
    const RWBS: &[u32] = &[6, 8, 10, 12, 16];
    let unsupported = |what| TracefsError::Unsupported {
        category: format.category.clone(),
        name: format.name.clone(),
        what,
    };
    let prefix = record_prefix(&format.name);
    let record_len = format.fields.iter().map(|f| f.offset + f.size).max();
    if record_len.is_some_and(|len| (len as usize) < prefix) {
        return Err(unsupported(
            "its record is shorter than the bytes the probes copy",
        ));
    }
    let offset = |name: &str, sizes: &'static [u32]| -> Result<u32, TracefsError> {
        let field = format.field_sized(name, sizes)?;
        // rwbs is read for its first 2 bytes only.
        let read = if sizes == RWBS { 2 } else { field.size };
        if (field.offset + read) as usize > prefix {
            return Err(unsupported(
                "a field the probes read lies beyond the bytes they copy of the record",
            ));
        }
        // The probes copy the record from byte 8 on: the kernel lets them
        // load nothing from its common header.
        if field.offset < 8 {
            return Err(unsupported(
                "a field the probes read lies in the record's common header",
            ));
        }
        Ok(field.offset)
    };
    let dev_sector = || -> Result<(u32, u32), TracefsError> {
        Ok((offset("dev", DEV)?, offset("sector", SECTOR)?))
    };
    match format.name.as_str() {
        "block_rq_insert" => (fields.insert_dev, fields.insert_sector) = dev_sector()?,
        "block_rq_issue" => (fields.issue_dev, fields.issue_sector) = dev_sector()?,
        "block_rq_merge" => (fields.merge_dev, fields.merge_sector) = dev_sector()?,
        "block_rq_complete" => {
            (fields.complete_dev, fields.complete_sector) = dev_sector()?;
            fields.complete_nr_sector = offset("nr_sector", INT)?;
            // Renamed from `errors` in Linux 4.x.
            fields.complete_error = offset("error", INT).or_else(|_| offset("errors", INT))?;
            fields.complete_rwbs = offset("rwbs", RWBS)?;
        }
        _ => {}
    }
    Ok(())
}

/// BTF-typed raw tracepoint programs: (program, tracepoint). Each takes the
/// `struct request` as its first argument (Linux 5.11+).
const RAW_PROGRAMS: [(&str, &str); 4] = [
    ("disk_btf_rq_insert", "block_rq_insert"),
    ("disk_btf_rq_issue", "block_rq_issue"),
    ("disk_btf_rq_merge", "block_rq_merge"),
    ("disk_btf_rq_complete", "block_rq_complete"),
];

/// Where the raw programs find a request's device and op in this kernel,
/// from its BTF: the members' offsets, the op's bits and values in
/// `cmd_flags`, and that every tracepoint passes the request first.
pub fn request_layout(btf: &Btf) -> Result<RequestLayout, String> {
    for (_, tracepoint) in RAW_PROGRAMS {
        let arg = btf
            .tracepoint_arg_struct(tracepoint, 0)
            .map_err(|e| e.to_string())?;
        if arg != "request" {
            return Err(format!(
                "raw tracepoint {tracepoint} passes a struct {arg} first, not the request \
                 (before Linux 5.11)"
            ));
        }
    }
    let member = |name: &str, member: &str, size: u32| {
        let found = btf.member(name, member).map_err(|e| e.to_string())?;
        if found.size == size {
            Ok(found.offset)
        } else {
            Err(format!(
                "{name}.{member} is {} bytes in the kernel's BTF {}, not {size}",
                found.size,
                btf.path().display()
            ))
        }
    };
    let value = |name: &str| {
        let value = btf.enumerator(name).map_err(|e| e.to_string())?;
        u32::try_from(value).map_err(|_| format!("{name} is {value} in the kernel's BTF"))
    };
    let bit = |name: &str| {
        1u32.checked_shl(value(name)?)
            .ok_or_else(|| format!("{name} is not a bit of a 32-bit cmd_flags"))
    };
    Ok(RequestLayout {
        q: member("request", "q", 8)?,
        sector: member("request", "__sector", 8)?,
        cmd_flags: member("request", "cmd_flags", 4)?,
        disk: member("request_queue", "disk", 8)?,
        major: member("gendisk", "major", 4)?,
        first_minor: member("gendisk", "first_minor", 4)?,
        // The first flag bit lies just above the op's.
        op_mask: bit("__REQ_FAILFAST_DEV")? - 1,
        preflush: bit("__REQ_PREFLUSH")?,
        op_read: value("REQ_OP_READ")?,
        op_write: value("REQ_OP_WRITE")?,
        op_flush: value("REQ_OP_FLUSH")?,
        op_discard: value("REQ_OP_DISCARD")?,
        op_secure_erase: value("REQ_OP_SECURE_ERASE")?,
    })
}

/// Attaches all the probes, or none, as `mode` asks: raw tracepoints where
/// `layout` (or why it is not known) and `btf` allow, and classic ones,
/// whose offsets are `fields` (or why they are not known). Returns how they
/// attached.
pub fn attach(
    ebpf: &mut Ebpf,
    mode: AttachMode,
    fields: &Result<BlockFields, String>,
    layout: &Result<RequestLayout, String>,
    btf: Result<&aya::Btf, &String>,
) -> Result<AttachMode, String> {
    let raw_usable = layout.as_ref().map(|_| ()).map_err(Clone::clone);
    super::attach_raw_or_classic(
        ebpf,
        PROBE,
        mode,
        raw_usable.clone(),
        &|ebpf| {
            raw_usable.clone()?;
            super::attach_btf_all(ebpf, &RAW_PROGRAMS, btf.map_err(Clone::clone)?)
        },
        &|ebpf| {
            fields.as_ref().map_err(Clone::clone)?;
            super::attach_tracepoints_all(ebpf, &PROGRAMS)
        },
    )
}

/// One scrape's disk series, as read from the kernel (buffers reused).
#[derive(Debug, Default)]
pub struct DiskRead {
    pub series: Vec<(DiskKey, DiskSeries)>,
}

impl DiskRead {
    pub fn clear(&mut self) {
        self.series.clear();
    }

    /// Every key read.
    pub fn keys(&self) -> impl Iterator<Item = DiskKey> + '_ {
        self.series.iter().map(|(k, _)| *k)
    }

    /// Keeps the rows of the cgroups for which `keep` is true.
    pub fn retain_cgroups(&mut self, keep: impl Fn(agent_ebpf::CgroupId) -> bool) {
        self.series.retain(|(k, _)| keep(k.cgroup));
    }
}

pub struct DiskMaps {
    series: HashMap<MapData, DiskKey, DiskSeries>,
}

impl DiskMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, LoadError> {
        Ok(Self {
            series: take_map(ebpf, SERIES_MAP)?,
        })
    }

    /// Appends every series to `out`.
    pub fn read_into(&self, out: &mut DiskRead) -> Result<(), MapError> {
        super::read_entries(&self.series, &mut out.series)
    }

    /// Drops the series of `key` (a cgroup that no longer exists).
    pub fn forget(&mut self, key: &DiskKey) -> Result<(), MapError> {
        super::remove_entry(&mut self.series, key)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn fixture(kernel: &str, event: &str) -> EventFormat {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tracefs")
            .join(kernel)
            .join("block")
            .join(event)
            .join("format");
        let text = std::fs::read_to_string(&path).expect("fixture exists");
        EventFormat::parse("block", &text).expect("fixture parses")
    }

    #[test]
    fn this_hosts_kernel_puts_rwbs_after_ioprio() {
        let mut fields = BlockFields::UNSET;
        for event in [
            "block_rq_insert",
            "block_rq_issue",
            "block_rq_merge",
            "block_rq_complete",
        ] {
            fill_from(&mut fields, &fixture("linux-6.18-this-host", event)).expect("fields");
        }
        assert_eq!(
            fields,
            BlockFields {
                insert_dev: 8,
                insert_sector: 16,
                issue_dev: 8,
                issue_sector: 16,
                merge_dev: 8,
                merge_sector: 16,
                complete_dev: 8,
                complete_sector: 16,
                complete_nr_sector: 24,
                complete_error: 28,
                complete_rwbs: 34,
            }
        );
    }

    #[test]
    fn older_kernels_call_the_error_field_errors() {
        let mut fields = BlockFields::UNSET;
        fill_from(
            &mut fields,
            &fixture("android-4.4.88-walleye", "block_rq_complete"),
        )
        .expect("fields");
        assert_eq!(fields.complete_error, 28);
        assert_eq!(fields.complete_rwbs, 32);
    }

    #[test]
    fn issue_and_complete_fields_are_found_on_every_fixture_kernel() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tracefs");
        let mut kernels = 0;
        for entry in std::fs::read_dir(&root).expect("fixtures") {
            let kernel = entry.expect("entry").file_name();
            let Some(kernel) = kernel.to_str() else {
                continue;
            };
            if !root.join(kernel).join("block").is_dir() {
                continue;
            }
            let mut fields = BlockFields::UNSET;
            for event in ["block_rq_issue", "block_rq_complete"] {
                fill_from(&mut fields, &fixture(kernel, event))
                    .unwrap_or_else(|e| panic!("{kernel}: {e}"));
            }
            assert_ne!(fields.complete_error, fields.complete_nr_sector, "{kernel}");
            assert_ne!(fields.complete_rwbs, fields.complete_sector, "{kernel}");
            kernels += 1;
        }
        assert!(kernels >= 7, "only {kernels} fixture kernels");
    }

    /// The kernel refuses to attach a program that loads past the record's
    /// end (EACCES), so a record shorter than the copy is refused first.
    #[test]
    fn a_record_shorter_than_the_probes_copy_is_refused() {
        let whole = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/tracefs/linux-6.18-this-host/block/block_rq_complete/format"),
        )
        .expect("fixture exists");
        let short: String = whole
            .lines()
            .filter(|l| !["ioprio", "rwbs", "cmd;"].iter().any(|f| l.contains(f)))
            .map(|l| format!("{l}\n"))
            .collect();
        let format = EventFormat::parse("block", &short).expect("parses");
        let err = fill_from(&mut BlockFields::default(), &format).expect_err("32 bytes < 40");
        assert!(
            err.to_string()
                .contains("shorter than the bytes the probes copy"),
            "{err}"
        );
    }

    #[test]
    fn a_field_of_an_unexpected_size_is_refused_by_name() {
        let text = "name: block_rq_issue\nID: 1\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:dev_t dev;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:sector_t sector;\toffset:16;\tsize:8;\tsigned:0;\n";
        let format = EventFormat::parse("block", text).expect("parses");
        let mut fields = BlockFields::UNSET;
        let err = fill_from(&mut fields, &format).expect_err("dev is 8 bytes");
        let text = err.to_string();
        assert!(
            text.contains("block_rq_issue") && text.contains("dev"),
            "{text}"
        );
    }

    /// A kernel's BTF with what the raw programs read, the block
    /// tracepoints passing `first` as their first argument, and `request`'s
    /// `cmd_flags` of `flags_size` bytes.
    fn block_btf(dir: &Path, first: &str, flags_size: u32) -> std::path::PathBuf {
        use crate::btf::tests::Builder;
        let mut b = Builder::new();
        b.enumeration(
            "req_op",
            &[
                ("REQ_OP_READ", 0),
                ("REQ_OP_WRITE", 1),
                ("REQ_OP_FLUSH", 2),
                ("REQ_OP_DISCARD", 3),
                ("REQ_OP_SECURE_ERASE", 5),
            ],
        );
        b.enumeration(
            "req_flag_bits",
            &[("__REQ_FAILFAST_DEV", 8), ("__REQ_PREFLUSH", 18)],
        );
        let int = b.int("int", 4);
        let flags = b.int("unsigned int", flags_size);
        let u64_ = b.int("long long unsigned int", 8);
        let gendisk = b.composite(
            "gendisk",
            64,
            &[("major", int, 0), ("first_minor", int, 32)],
            false,
        );
        let gendisk_ptr = b.ptr(gendisk);
        let queue = b.composite(
            "request_queue",
            128,
            &[("disk", gendisk_ptr, 104 * 8)],
            false,
        );
        let queue_ptr = b.ptr(queue);
        let request = b.composite(
            "request",
            256,
            &[
                ("q", queue_ptr, 0),
                ("cmd_flags", flags, 24 * 8),
                ("__sector", u64_, 48 * 8),
            ],
            false,
        );
        let arg = if first == "request" { request } else { queue };
        let arg_ptr = b.ptr(arg);
        let void_ptr = b.ptr(0);
        for tracepoint in [
            "block_rq_insert",
            "block_rq_issue",
            "block_rq_merge",
            "block_rq_complete",
        ] {
            let proto = b.func_proto(&[("", void_ptr), ("", arg_ptr)]);
            let proto_ptr = b.ptr(proto);
            b.typedef(&format!("btf_trace_{tracepoint}"), proto_ptr);
        }
        let path = dir.join("vmlinux");
        std::fs::write(&path, b.build()).expect("write the fixture");
        path
    }

    fn layout_of(path: &Path) -> Result<RequestLayout, String> {
        request_layout(&Btf::read(path).expect("the fixture parses"))
    }

    #[test]
    fn the_raw_programs_take_the_requests_layout_from_btf() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = layout_of(&block_btf(dir.path(), "request", 4)).expect("layout");
        assert_eq!(
            layout,
            RequestLayout {
                q: 0,
                sector: 48,
                cmd_flags: 24,
                disk: 104,
                major: 0,
                first_minor: 4,
                op_mask: 0xff,
                preflush: 1 << 18,
                op_read: 0,
                op_write: 1,
                op_flush: 2,
                op_discard: 3,
                op_secure_erase: 5,
            }
        );
    }

    #[test]
    fn a_kernel_whose_tracepoints_pass_the_queue_first_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = layout_of(&block_btf(dir.path(), "request_queue", 4)).expect_err("before 5.11");
        assert!(
            err.contains("block_rq_insert passes a struct request_queue first"),
            "{err}"
        );
    }

    #[test]
    fn a_member_of_another_size_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = layout_of(&block_btf(dir.path(), "request", 8)).expect_err("8-byte flags");
        assert!(err.contains("request.cmd_flags is 8 bytes"), "{err}");
    }

    #[test]
    fn this_kernels_btf_describes_what_the_raw_programs_read() {
        let path = Path::new(crate::btf::VMLINUX);
        if !path.exists() {
            eprintln!("skipped: {} does not exist on this kernel", path.display());
            return;
        }
        let layout = layout_of(path).expect("this kernel's request layout");
        assert_eq!(
            (layout.op_read, layout.op_write, layout.op_flush),
            (0, 1, 2)
        );
        // The op's bits are the low ones, below the first flag's.
        assert!((layout.op_mask + 1).is_power_of_two(), "{layout:?}");
        assert!(layout.preflush > layout.op_mask, "{layout:?}");
    }
}
