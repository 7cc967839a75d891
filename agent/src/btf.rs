//! The kernel's BTF (`/sys/kernel/btf/vmlinux`): where a struct member lies.
//!
//! Rust eBPF programs have no CO-RE relocations, so a probe that reads a
//! kernel struct gets the member's offset from the running kernel's own type
//! information at start-up, as it gets tracepoint fields from tracefs. This
//! is a reader of just what that needs: the type section (`struct btf_header`,
//! `struct btf_type` and each kind's trailing data, as `include/uapi/linux/
//! btf.h` lays them out) and the names in the string section. A member that
//! the kernel lacks, or whose size is not the expected one, is an error that
//! names it, never a guess.

use std::{
    fs, io,
    ops::Range,
    path::{Path, PathBuf},
};

/// Where the kernel publishes its own BTF.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const TYPE_LEN: usize = 12;

// Kinds, from `BTF_KIND_*`.
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;
const KIND_MAX: u32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading the kernel's BTF {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("malformed BTF {path}: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("the kernel's BTF {path} has no struct {name}")]
    NoStruct { path: PathBuf, name: String },
    #[error("the kernel's BTF {path}: struct {name} has no member {member}")]
    NoMember {
        path: PathBuf,
        name: String,
        member: String,
    },
    #[error("the kernel's BTF {path} has no enumerator {name}")]
    NoEnumerator { path: PathBuf, name: String },
    #[error("the kernel's BTF {path} has no raw tracepoint {name} (no type btf_trace_{name})")]
    NoTracepoint { path: PathBuf, name: String },
    #[error("the kernel's BTF {path}: raw tracepoint {name} {what}")]
    TracepointArgs {
        path: PathBuf,
        name: String,
        what: String,
    },
    #[error("the kernel's BTF {path}: {name}.{member} {what}")]
    Unexpected {
        path: PathBuf,
        name: String,
        member: String,
        what: String,
    },
}

/// A struct member: its byte offset in the struct, and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub offset: u32,
    pub size: u32,
}

/// One type's header, decoded from the type section.
#[derive(Debug, Clone, Copy)]
struct TypeHeader {
    at: usize,
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    size_or_type: u32,
}

impl TypeHeader {
    fn decode(types: &[u8], at: usize) -> Option<Self> {
        let info = read_u32(types, at + 4)?;
        Some(Self {
            at,
            name_off: read_u32(types, at)?,
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 != 0,
            size_or_type: read_u32(types, at + 8)?,
        })
    }
}

/// A parsed BTF blob: the file, and where each type starts in it.
#[derive(Debug)]
pub struct Btf {
    path: PathBuf,
    data: Vec<u8>,
    types: Range<usize>,
    strings: Range<usize>,
    /// `starts[id - 1]` is where type `id` starts in the type section (id 0
    /// is `void`).
    starts: Vec<u32>,
}

impl Btf {
    /// Reads and indexes the BTF at `path`.
    pub fn read(path: &Path) -> Result<Self, BtfError> {
        let data = fs::read(path).map_err(|source| BtfError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, data)
    }

    /// Indexes a BTF blob; `path` only names it in errors.
    pub fn parse(path: &Path, data: Vec<u8>) -> Result<Self, BtfError> {
        let malformed = |reason: String| BtfError::Malformed {
            path: path.to_owned(),
            reason,
        };
        match data.get(0..2).map(|b| u16::from_le_bytes([b[0], b[1]])) {
            Some(MAGIC) => {}
            Some(magic) if magic.swap_bytes() == MAGIC => {
                return Err(malformed("big-endian BTF is not supported".into()));
            }
            _ => return Err(malformed("no BTF magic".into())),
        }
        let field = |at: usize| {
            read_u32(&data, at)
                .map(|v| v as usize)
                .ok_or_else(|| malformed("truncated header".into()))
        };
        let header_len = field(4)?;
        let (type_off, type_len) = (field(8)?, field(12)?);
        let (str_off, str_len) = (field(16)?, field(20)?);
        if header_len < HEADER_LEN {
            return Err(malformed(format!("header of {header_len} bytes")));
        }
        let section = |off: usize, len: usize, what: &str| {
            header_len
                .checked_add(off)
                .and_then(|start| Some(start..start.checked_add(len)?))
                .filter(|range| range.end <= data.len())
                .ok_or_else(|| malformed(format!("the {what} section lies outside the file")))
        };
        let types = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?;
        let starts = index_types(&data[types.clone()]).map_err(malformed)?;
        Ok(Self {
            path: path.to_owned(),
            data,
            types,
            strings,
            starts,
        })
    }

    /// The file this BTF was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The member `member` of `struct name`, looked for in the struct and in
    /// its anonymous struct and union members (as the kernel nests some).
    pub fn member(&self, name: &str, member: &str) -> Result<Member, BtfError> {
        let id = (1..=self.starts.len() as u32)
            .find(|&id| {
                self.header(id)
                    .is_some_and(|t| t.kind == KIND_STRUCT && self.name(t.name_off) == Some(name))
            })
            .ok_or_else(|| BtfError::NoStruct {
                path: self.path.clone(),
                name: name.to_owned(),
            })?;
        let unexpected = |what: String| BtfError::Unexpected {
            path: self.path.clone(),
            name: name.to_owned(),
            member: member.to_owned(),
            what,
        };
        let (bit_offset, type_id) =
            self.find_member(id, member, 0, 0)
                .ok_or_else(|| BtfError::NoMember {
                    path: self.path.clone(),
                    name: name.to_owned(),
                    member: member.to_owned(),
                })?;
        if bit_offset % 8 != 0 {
            return Err(unexpected(format!(
                "is a bitfield (bit offset {bit_offset})"
            )));
        }
        let size = self
            .size_of(type_id)
            .ok_or_else(|| unexpected(format!("has a type (id {type_id}) without a size")))?;
        let offset = u32::try_from(bit_offset / 8)
            .map_err(|_| unexpected(format!("lies {bit_offset} bits in")))?;
        Ok(Member { offset, size })
    }

    /// The value of the enumerator `name` (of any enum: C's enumerator
    /// names share one namespace).
    pub fn enumerator(&self, name: &str) -> Result<i64, BtfError> {
        let types = self.type_section();
        (1..=self.starts.len() as u32)
            .filter_map(|id| self.header(id))
            .filter(|t| matches!(t.kind, KIND_ENUM | KIND_ENUM64))
            .find_map(|t| {
                let stride = if t.kind == KIND_ENUM { 8 } else { 12 };
                (0..t.vlen).find_map(|i| {
                    let at = t.at + TYPE_LEN + i * stride;
                    if self.name(read_u32(types, at)?)? != name {
                        return None;
                    }
                    let low = read_u32(types, at + 4)?;
                    Some(match t.kind {
                        // A signed 32-bit value unless the enum is unsigned.
                        KIND_ENUM if t.kind_flag => i64::from(low),
                        KIND_ENUM => i64::from(low as i32),
                        _ => (i64::from(read_u32(types, at + 8)?) << 32) | i64::from(low),
                    })
                })
            })
            .ok_or_else(|| BtfError::NoEnumerator {
                path: self.path.clone(),
                name: name.to_owned(),
            })
    }

    /// The name of the struct that argument `n` of raw tracepoint
    /// `tracepoint` points to (its `TP_PROTO`, from the kernel's
    /// `btf_trace_<tracepoint>` typedef), or an error saying what it is.
    pub fn tracepoint_arg_struct(&self, tracepoint: &str, n: usize) -> Result<&str, BtfError> {
        let typedef = format!("btf_trace_{tracepoint}");
        let what = |what: String| BtfError::TracepointArgs {
            path: self.path.clone(),
            name: tracepoint.to_owned(),
            what,
        };
        let id = (1..=self.starts.len() as u32)
            .find(|&id| {
                self.header(id).is_some_and(|t| {
                    t.kind == KIND_TYPEDEF && self.name(t.name_off) == Some(typedef.as_str())
                })
            })
            .ok_or_else(|| BtfError::NoTracepoint {
                path: self.path.clone(),
                name: tracepoint.to_owned(),
            })?;
        // typedef -> pointer -> function prototype (void *ctx, args...).
        let proto = self
            .header(id)
            .and_then(|t| self.header(self.resolve(t.size_or_type)?))
            .filter(|t| t.kind == KIND_PTR)
            .and_then(|t| self.header(self.resolve(t.size_or_type)?))
            .filter(|t| t.kind == KIND_FUNC_PROTO)
            .ok_or_else(|| what("is not typed as a pointer to a function".into()))?;
        if proto.vlen < n + 2 {
            return Err(what(format!(
                "takes {} arguments",
                proto.vlen.saturating_sub(1)
            )));
        }
        let param_type = read_u32(self.type_section(), proto.at + TYPE_LEN + (n + 1) * 8 + 4)
            .ok_or_else(|| what("is truncated".into()))?;
        self.header(self.resolve(param_type).unwrap_or(0))
            .filter(|t| t.kind == KIND_PTR)
            .and_then(|t| self.header(self.resolve(t.size_or_type)?))
            .filter(|t| t.kind == KIND_STRUCT)
            .and_then(|t| self.name(t.name_off))
            .ok_or_else(|| what(format!("argument {n} is not a pointer to a struct")))
    }

    fn type_section(&self) -> &[u8] {
        &self.data[self.types.clone()]
    }

    /// (bit offset, type id) of `member` in the struct or union `id`, which
    /// itself lies `base` bits into the outermost struct; `depth` bounds the
    /// search through anonymous members.
    fn find_member(&self, id: u32, member: &str, base: u64, depth: u32) -> Option<(u64, u32)> {
        let header = self.header(id)?;
        if !matches!(header.kind, KIND_STRUCT | KIND_UNION) || depth > 8 {
            return None;
        }
        let types = self.type_section();
        (0..header.vlen).find_map(|i| {
            let at = header.at + TYPE_LEN + i * 12;
            let (name_off, type_id, offset) = (
                read_u32(types, at)?,
                read_u32(types, at + 4)?,
                read_u32(types, at + 8)?,
            );
            // With kind_flag, the low 24 bits are the offset, the top 8 a
            // bitfield's size.
            let bits = u64::from(if header.kind_flag {
                offset & 0xff_ffff
            } else {
                offset
            });
            match self.name(name_off) {
                Some(name) if name == member => Some((base + bits, type_id)),
                Some("") | None => {
                    self.find_member(self.resolve(type_id)?, member, base + bits, depth + 1)
                }
                Some(_) => None,
            }
        })
    }

    /// The id behind typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..32 {
            let header = self.header(id)?;
            match header.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = header.size_or_type;
                }
                _ => return Some(id),
            }
        }
        None
    }

    /// The size in bytes of type `id`.
    fn size_of(&self, id: u32) -> Option<u32> {
        let header = self.header(self.resolve(id)?)?;
        match header.kind {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 => {
                Some(header.size_or_type)
            }
            KIND_PTR => Some(8),
            KIND_ARRAY => {
                let types = self.type_section();
                let elem = read_u32(types, header.at + TYPE_LEN)?;
                let count = read_u32(types, header.at + TYPE_LEN + 8)?;
                self.size_of(elem)?.checked_mul(count)
            }
            _ => None,
        }
    }

    fn header(&self, id: u32) -> Option<TypeHeader> {
        let start = *self.starts.get(usize::try_from(id).ok()?.checked_sub(1)?)?;
        TypeHeader::decode(self.type_section(), start as usize)
    }

    fn name(&self, offset: u32) -> Option<&str> {
        let strings = &self.data[self.strings.clone()];
        let rest = strings.get(usize::try_from(offset).ok()?..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&rest[..end]).ok()
    }
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Walks the type section once, noting where each type starts.
fn index_types(types: &[u8]) -> Result<Vec<u32>, String> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at < types.len() {
        let id = starts.len() + 1;
        let header =
            TypeHeader::decode(types, at).ok_or_else(|| format!("type {id} is truncated"))?;
        let (kind, vlen) = (header.kind, header.vlen);
        if kind == 0 || kind > KIND_MAX {
            return Err(format!("type {id} has unknown kind {kind}"));
        }
        let trailing = match kind {
            KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
            KIND_ARRAY => 12,
            KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
            KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
            _ => 0,
        };
        starts.push(u32::try_from(at).map_err(|_| "the type section is over 4 GiB".to_owned())?);
        at += TYPE_LEN + trailing;
        if at > types.len() {
            return Err(format!("type {id} is truncated"));
        }
    }
    Ok(starts)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds BTF blobs for tests, type by type.
    #[derive(Default)]
    pub(crate) struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        count: u32,
    }

    impl Builder {
        pub(crate) fn new() -> Self {
            Self {
                strings: vec![0],
                ..Self::default()
            }
        }

        fn string(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let at = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            at
        }

        fn push(
            &mut self,
            name: &str,
            kind: u32,
            vlen: u32,
            size_or_type: u32,
            tail: &[u32],
        ) -> u32 {
            let name = self.string(name);
            for word in [name, (kind << 24) | vlen, size_or_type].iter().chain(tail) {
                self.types.extend_from_slice(&word.to_le_bytes());
            }
            self.count += 1;
            self.count
        }

        pub(crate) fn int(&mut self, name: &str, size: u32) -> u32 {
            self.push(name, KIND_INT, 0, size, &[size * 8])
        }

        pub(crate) fn typedef(&mut self, name: &str, target: u32) -> u32 {
            self.push(name, KIND_TYPEDEF, 0, target, &[])
        }

        pub(crate) fn ptr(&mut self, target: u32) -> u32 {
            self.push("", KIND_PTR, 0, target, &[])
        }

        /// A struct (or, with `union`, a union) of (name, type, bit offset).
        pub(crate) fn composite(
            &mut self,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32)],
            union: bool,
        ) -> u32 {
            let mut tail = Vec::new();
            for &(member, ty, offset) in members {
                tail.extend([self.string(member), ty, offset]);
            }
            let kind = if union { KIND_UNION } else { KIND_STRUCT };
            self.push(name, kind, members.len() as u32, size, &tail)
        }

        /// An enum of 4-byte (name, value)s.
        pub(crate) fn enumeration(&mut self, name: &str, values: &[(&str, i32)]) -> u32 {
            let mut tail = Vec::new();
            for &(enumerator, value) in values {
                tail.extend([self.string(enumerator), value as u32]);
            }
            self.push(name, KIND_ENUM, values.len() as u32, 4, &tail)
        }

        /// A function prototype returning void, of (name, type) parameters.
        pub(crate) fn func_proto(&mut self, params: &[(&str, u32)]) -> u32 {
            let mut tail = Vec::new();
            for &(param, ty) in params {
                tail.extend([self.string(param), ty]);
            }
            self.push("", KIND_FUNC_PROTO, params.len() as u32, 0, &tail)
        }

        pub(crate) fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            for word in [
                HEADER_LEN as u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&word.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        Btf::parse(Path::new("fixture"), data.to_vec())
    }

    /// `struct task_struct` with `sched_info` behind an anonymous struct, as
    /// a randomized layout nests it.
    fn task_struct_fixture() -> Vec<u8> {
        let mut b = Builder::new();
        let ulong = b.int("long unsigned int", 8);
        let ull = b.int("long long unsigned int", 8);
        let u64_ = b.typedef("u64", ull);
        let int = b.int("int", 4);
        let sched_info = b.composite(
            "sched_info",
            48,
            &[
                ("pcount", ulong, 0),
                ("run_delay", u64_, 64),
                ("last_arrival", ull, 128),
            ],
            false,
        );
        let anon = b.composite(
            "",
            56,
            &[("pid", int, 0), ("sched_info", sched_info, 64)],
            false,
        );
        let ptr = b.ptr(int);
        b.composite(
            "task_struct",
            4096,
            &[("stack", ptr, 0), ("", anon, 8 * 960)],
            false,
        );
        b.build()
    }

    #[test]
    fn finds_a_member_through_anonymous_structs_and_typedefs() {
        let btf = parse(&task_struct_fixture()).expect("parses");
        assert_eq!(
            btf.member("task_struct", "sched_info").expect("found"),
            Member {
                offset: 968,
                size: 48
            }
        );
        assert_eq!(
            btf.member("sched_info", "run_delay").expect("found"),
            Member { offset: 8, size: 8 }
        );
        assert_eq!(
            btf.member("task_struct", "stack").expect("found"),
            Member { offset: 0, size: 8 }
        );
    }

    #[test]
    fn a_missing_struct_or_member_is_named() {
        let btf = parse(&task_struct_fixture()).expect("parses");
        let err = btf.member("rq", "clock").expect_err("no struct rq");
        assert_eq!(err.to_string(), "the kernel's BTF fixture has no struct rq");
        let err = btf
            .member("sched_info", "max_run_delay")
            .expect_err("no member");
        assert_eq!(
            err.to_string(),
            "the kernel's BTF fixture: struct sched_info has no member max_run_delay"
        );
    }

    #[test]
    fn a_bitfield_is_refused() {
        let mut b = Builder::new();
        let int = b.int("unsigned int", 4);
        b.composite("flags", 4, &[("a", int, 0), ("b", int, 3)], false);
        let err = parse(&b.build())
            .expect("parses")
            .member("flags", "b")
            .expect_err("bitfield");
        assert!(err.to_string().contains("is a bitfield"), "{err}");
    }

    #[test]
    fn truncated_or_foreign_data_is_an_error_not_a_panic() {
        let whole = task_struct_fixture();
        for len in [0, 1, 2, 10, HEADER_LEN, HEADER_LEN + 5, whole.len() - 1] {
            let err = parse(&whole[..len]).expect_err(&format!("{len} bytes"));
            assert!(
                err.to_string().starts_with("malformed BTF fixture"),
                "{len}: {err}"
            );
        }
        let mut swapped = whole.clone();
        swapped.swap(0, 1);
        let err = parse(&swapped).expect_err("big-endian");
        assert!(err.to_string().contains("big-endian"), "{err}");
        let mut unknown_kind = whole;
        unknown_kind[HEADER_LEN + 7] = 0x1f;
        let err = parse(&unknown_kind).expect_err("unknown kind");
        assert!(err.to_string().contains("unknown kind"), "{err}");
    }

    /// The block layer's request flags and one raw tracepoint, as 6.x has them.
    fn block_fixture() -> Vec<u8> {
        let mut b = Builder::new();
        b.enumeration(
            "req_op",
            &[("REQ_OP_READ", 0), ("REQ_OP_WRITE", 1), ("REQ_OP_FLUSH", 2)],
        );
        b.enumeration(
            "req_flag_bits",
            &[("__REQ_FAILFAST_DEV", 8), ("__REQ_PREFLUSH", 18)],
        );
        let int = b.int("int", 4);
        let request = b.composite("request", 8, &[("tag", int, 0)], false);
        let request_ptr = b.ptr(request);
        let void_ptr = b.ptr(0);
        let proto = b.func_proto(&[("", void_ptr), ("", request_ptr), ("", int)]);
        let proto_ptr = b.ptr(proto);
        b.typedef("btf_trace_block_rq_complete", proto_ptr);
        b.build()
    }

    #[test]
    fn finds_enumerators_of_any_enum_by_name() {
        let btf = parse(&block_fixture()).expect("parses");
        assert_eq!(btf.enumerator("REQ_OP_FLUSH").expect("found"), 2);
        assert_eq!(btf.enumerator("__REQ_PREFLUSH").expect("found"), 18);
        let err = btf.enumerator("REQ_OP_ZONE_APPEND").expect_err("missing");
        assert_eq!(
            err.to_string(),
            "the kernel's BTF fixture has no enumerator REQ_OP_ZONE_APPEND"
        );
    }

    #[test]
    fn tells_what_a_raw_tracepoints_arguments_point_to() {
        let btf = parse(&block_fixture()).expect("parses");
        assert_eq!(
            btf.tracepoint_arg_struct("block_rq_complete", 0)
                .expect("argument 0"),
            "request"
        );
        let err = btf
            .tracepoint_arg_struct("block_rq_complete", 1)
            .expect_err("an int");
        assert!(
            err.to_string()
                .ends_with("argument 1 is not a pointer to a struct"),
            "{err}"
        );
        let err = btf
            .tracepoint_arg_struct("block_rq_complete", 5)
            .expect_err("too few");
        assert!(err.to_string().ends_with("takes 2 arguments"), "{err}");
        let err = btf
            .tracepoint_arg_struct("block_rq_issue", 0)
            .expect_err("absent");
        assert!(
            err.to_string().contains("no raw tracepoint block_rq_issue"),
            "{err}"
        );
    }

    #[test]
    fn an_unreadable_file_names_its_path() {
        let err = Btf::read(Path::new("/nonexistent/vmlinux")).expect_err("no such file");
        assert!(
            err.to_string()
                .starts_with("reading the kernel's BTF /nonexistent/vmlinux"),
            "{err}"
        );
    }

    #[test]
    fn reads_this_kernels_task_struct() {
        let path = Path::new(VMLINUX);
        if !path.exists() {
            eprintln!("skipped: {VMLINUX} does not exist on this kernel");
            return;
        }
        let btf = Btf::read(path).expect("the kernel's BTF parses");
        let sched_info = btf
            .member("task_struct", "sched_info")
            .expect("task_struct.sched_info");
        let pcount = btf
            .member("sched_info", "pcount")
            .expect("sched_info.pcount");
        assert!(
            sched_info.offset > 0 && sched_info.size >= 16,
            "{sched_info:?}"
        );
        assert_eq!(pcount.size, 8);
        assert_eq!(
            btf.tracepoint_arg_struct("sched_switch", 1)
                .expect("sched_switch's prev"),
            "task_struct"
        );
    }
}
