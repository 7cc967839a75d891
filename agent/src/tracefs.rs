//! tracefs: where it is mounted, and the `format` files that describe each
//! tracepoint's record layout.
//!
//! The probes read tracepoint fields at offsets taken from these files at
//! start-up, because Rust eBPF programs have no CO-RE relocations and field
//! offsets differ between kernels. A field that a format lacks is an error
//! naming the tracepoint and the field, never a guess.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// Places tracefs is found, in order of preference.
const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "no tracefs found at {} or {}, and mounting it at {} failed: {source} \
         (mount it with `mount -t tracefs tracefs /sys/kernel/tracing`, or pass --tracefs)",
        CANDIDATES[0], CANDIDATES[1], CANDIDATES[0]
    )]
    NotFound { source: io::Error },
    #[error("{path} is not a tracefs directory (it has no events/ directory)")]
    NotTracefs { path: PathBuf },
    #[error("tracepoint {category}:{name} does not exist on this kernel ({path}: {source})")]
    NoSuchTracepoint {
        category: String,
        name: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("malformed tracepoint format {path}, line {line}: {reason}")]
    Malformed {
        path: PathBuf,
        line: usize,
        reason: &'static str,
    },
    #[error("tracepoint {category}:{name} has no field `{field}` on this kernel")]
    MissingField {
        category: String,
        name: String,
        field: String,
    },
    #[error("tracepoint {category}:{name} is not supported: {what}")]
    Unsupported {
        category: String,
        name: String,
        what: &'static str,
    },
    #[error(
        "tracepoint {category}:{name} field `{field}` has size {size}, expected one of {expected:?}"
    )]
    UnexpectedFieldSize {
        category: String,
        name: String,
        field: String,
        size: u32,
        expected: &'static [u32],
    },
}

/// A tracefs mount.
#[derive(Debug, Clone)]
pub struct Tracefs {
    root: PathBuf,
}

impl Tracefs {
    /// Uses `explicit` if given, else the first of the usual mount points that
    /// holds tracefs, else mounts tracefs at `/sys/kernel/tracing`.
    pub fn locate(explicit: Option<&Path>) -> Result<Self, TracefsError> {
        if let Some(path) = explicit {
            return Self::at(path);
        }
        if let Some(found) = CANDIDATES.iter().find_map(|c| Self::at(Path::new(c)).ok()) {
            return Ok(found);
        }
        mount_tracefs(Path::new(CANDIDATES[0]))
            .map_err(|source| TracefsError::NotFound { source })?;
        Self::at(Path::new(CANDIDATES[0]))
    }

    /// tracefs at exactly `root`.
    pub fn at(root: &Path) -> Result<Self, TracefsError> {
        if root.join("events").is_dir() {
            Ok(Self {
                root: root.to_owned(),
            })
        } else {
            Err(TracefsError::NotTracefs {
                path: root.to_owned(),
            })
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads and parses `events/<category>/<name>/format`.
    pub fn format(&self, category: &str, name: &str) -> Result<EventFormat, TracefsError> {
        let path = self
            .root
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = fs::read_to_string(&path).map_err(|source| TracefsError::NoSuchTracepoint {
            category: category.to_owned(),
            name: name.to_owned(),
            path: path.clone(),
            source,
        })?;
        EventFormat::parse(category, &text).map_err(|(line, reason)| TracefsError::Malformed {
            path,
            line,
            reason,
        })
    }
}

fn mount_tracefs(target: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt as _;
    let target = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let fstype = c"tracefs";
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the
    // call; `data` may be null.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One field of a tracepoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// The C declaration without the name, e.g. `pid_t`, `char[16]`.
    pub c_type: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

/// The parsed `format` file of one tracepoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFormat {
    pub category: String,
    pub name: String,
    pub id: Option<u32>,
    pub fields: Vec<Field>,
    /// The `print fmt:` expression, empty if the file has none.
    pub print_fmt: String,
}

impl EventFormat {
    /// Parses a format file's text. The error is (1-based line, reason).
    pub fn parse(category: &str, text: &str) -> Result<Self, (usize, &'static str)> {
        let mut name = None;
        let mut id = None;
        let mut fields = Vec::new();
        let mut print_fmt = String::new();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("name:") {
                name = Some(rest.trim().to_owned());
            } else if let Some(rest) = line.strip_prefix("ID:") {
                id = Some(
                    rest.trim()
                        .parse()
                        .map_err(|_| (line_no, "ID is not a number"))?,
                );
            } else if line.starts_with("field:") {
                fields.push(parse_field(line).map_err(|reason| (line_no, reason))?);
            } else if let Some(rest) = line.strip_prefix("print fmt:") {
                rest.trim().clone_into(&mut print_fmt);
                break;
            }
        }
        let name = name.ok_or((1, "no `name:` line"))?;
        if fields.is_empty() {
            return Err((1, "no `field:` lines"));
        }
        Ok(Self {
            category: category.to_owned(),
            name,
            id,
            fields,
            print_fmt,
        })
    }

    /// The `{ value, "name" }` pairs of the print fmt's `__print_flags` and
    /// `__print_symbolic` tables, e.g. `(0x10, "X")`. Pairs that do not parse
    /// are skipped.
    pub fn print_flags(&self) -> Vec<(u64, &str)> {
        let mut pairs = Vec::new();
        let mut rest = self.print_fmt.as_str();
        while let Some(open) = rest.find('{') {
            rest = &rest[open + 1..];
            let Some(close) = rest.find('}') else { break };
            let inner = &rest[..close];
            rest = &rest[close + 1..];
            let Some((value, name)) = inner.split_once(',') else {
                continue;
            };
            let value = value.trim();
            let parsed = match value.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => value.parse().ok(),
            };
            let name = name.trim().trim_matches('"');
            if let Some(v) = parsed {
                pairs.push((v, name));
            }
        }
        pairs
    }

    /// The field called `name`, or an error naming this tracepoint.
    pub fn field(&self, name: &str) -> Result<&Field, TracefsError> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| TracefsError::MissingField {
                category: self.category.clone(),
                name: self.name.clone(),
                field: name.to_owned(),
            })
    }

    /// The field called `name`, checked to have one of the `expected` sizes.
    pub fn field_sized(
        &self,
        name: &str,
        expected: &'static [u32],
    ) -> Result<&Field, TracefsError> {
        let field = self.field(name)?;
        if expected.contains(&field.size) {
            Ok(field)
        } else {
            Err(TracefsError::UnexpectedFieldSize {
                category: self.category.clone(),
                name: self.name.clone(),
                field: name.to_owned(),
                size: field.size,
                expected,
            })
        }
    }
}

/// `field:pid_t prev_pid;<TAB>offset:24;<TAB>size:4;<TAB>signed:1;`
fn parse_field(line: &str) -> Result<Field, &'static str> {
    let mut decl = None;
    let mut offset = None;
    let mut size = None;
    let mut signed = false;
    for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once(':').ok_or("a field attribute has no `:`")?;
        let value = value.trim();
        match key.trim() {
            "field" => decl = Some(value),
            "offset" => offset = Some(value.parse().map_err(|_| "offset is not a number")?),
            "size" => size = Some(value.parse().map_err(|_| "size is not a number")?),
            "signed" => signed = value == "1",
            _ => {}
        }
    }
    let decl = decl.ok_or("no field declaration")?;
    let (c_type, name) = split_declaration(decl).ok_or("field declaration has no name")?;
    Ok(Field {
        name,
        c_type,
        offset: offset.ok_or("field has no offset")?,
        size: size.ok_or("field has no size")?,
        signed,
    })
}

/// `char prev_comm[16]` → (`char[16]`, `prev_comm`); `__data_loc char[] name`
/// → (`__data_loc char[]`, `name`).
fn split_declaration(decl: &str) -> Option<(String, String)> {
    let (ty, last) = decl.rsplit_once(char::is_whitespace)?;
    let (name, array) = match last.find('[') {
        Some(i) => last.split_at(i),
        None => (last, ""),
    };
    if name.is_empty() || ty.trim().is_empty() {
        return None;
    }
    Some((format!("{}{array}", ty.trim()), name.to_owned()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const SCHED_SWITCH_6_18: &str = "name: sched_switch\nID: 372\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;\n\tfield:int prev_prio;\toffset:28;\tsize:4;\tsigned:1;\n\tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;\n\tfield:char next_comm[16];\toffset:40;\tsize:16;\tsigned:0;\n\tfield:pid_t next_pid;\toffset:56;\tsize:4;\tsigned:1;\n\tfield:int next_prio;\toffset:60;\tsize:4;\tsigned:1;\n\nprint fmt: \"prev_comm=%s prev_pid=%d\", REC->prev_comm, REC->prev_pid\n";

    #[test]
    fn parses_sched_switch_of_6_18() {
        let f = EventFormat::parse("sched", SCHED_SWITCH_6_18).expect("parses");
        assert_eq!(f.name, "sched_switch");
        assert_eq!(f.id, Some(372));
        assert_eq!(f.fields.len(), 11);
        let prev_state = f.field("prev_state").expect("has prev_state");
        assert_eq!(
            (prev_state.offset, prev_state.size, prev_state.signed),
            (32, 8, true)
        );
        assert_eq!(prev_state.c_type, "long");
        let comm = f.field("prev_comm").expect("has prev_comm");
        assert_eq!(
            (comm.c_type.as_str(), comm.offset, comm.size),
            ("char[16]", 8, 16)
        );
        assert_eq!(f.field("next_pid").map(|f| f.offset).ok(), Some(56));
    }

    #[test]
    fn a_missing_field_is_an_error_naming_the_tracepoint() {
        let f = EventFormat::parse("sched", SCHED_SWITCH_6_18).expect("parses");
        let err = f.field("prev_cgroup").expect_err("no such field");
        assert_eq!(
            err.to_string(),
            "tracepoint sched:sched_switch has no field `prev_cgroup` on this kernel"
        );
        let err = f.field_sized("prev_pid", &[8]).expect_err("wrong size");
        assert!(err.to_string().contains("has size 4"), "{err}");
    }

    #[test]
    fn malformed_formats_are_errors_with_a_line_number() {
        assert_eq!(EventFormat::parse("x", ""), Err((1, "no `name:` line")));
        assert_eq!(
            EventFormat::parse("x", "name: y\nformat:\n"),
            Err((1, "no `field:` lines"))
        );
        let bad_offset = "name: y\n\tfield:int a;\toffset:x;\tsize:4;\tsigned:1;\n";
        assert_eq!(
            EventFormat::parse("x", bad_offset),
            Err((2, "offset is not a number"))
        );
        let truncated = "name: y\n\tfield:int a;\toffset:4;";
        assert_eq!(
            EventFormat::parse("x", truncated),
            Err((2, "field has no size"))
        );
        let no_name = "name: y\n\tfield:int;\toffset:4;\tsize:4;\n";
        assert_eq!(
            EventFormat::parse("x", no_name),
            Err((2, "field declaration has no name"))
        );
    }

    #[test]
    fn parses_dynamic_arrays_and_formats_without_signed() {
        let text = "name: e\n\tfield:__data_loc char[] name;\toffset:8;\tsize:4;\n";
        let f = EventFormat::parse("c", text).expect("parses");
        assert_eq!(f.fields[0].name, "name");
        assert_eq!(f.fields[0].c_type, "__data_loc char[]");
        assert!(!f.fields[0].signed);
    }

    /// Real format files of several kernels, under
    /// `tests/fixtures/tracefs/<kernel>/<category>/<event>/format`.
    pub(crate) fn fixture_formats(category: &str, event: &str) -> Vec<(String, EventFormat)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tracefs");
        let mut found = Vec::new();
        for kernel in fs::read_dir(&dir).expect("fixtures dir").flatten() {
            let path = kernel.path().join(category).join(event).join("format");
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            let format = EventFormat::parse(category, &text)
                .unwrap_or_else(|(line, why)| panic!("{}:{line}: {why}", path.display()));
            found.push((kernel.file_name().to_string_lossy().into_owned(), format));
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    #[test]
    fn parses_real_format_files_of_several_kernels() {
        let switches = fixture_formats("sched", "sched_switch");
        assert!(
            switches.len() >= 4,
            "only {} sched_switch fixtures",
            switches.len()
        );
        for (kernel, format) in &switches {
            assert_eq!(format.name, "sched_switch", "{kernel}");
            let state = format
                .field("prev_state")
                .expect("every kernel has prev_state");
            assert!(matches!(state.size, 4 | 8), "{kernel}: {state:?}");
            assert!(
                format.print_flags().iter().any(|(_, n)| *n == "S"),
                "{kernel}"
            );
        }
        for event in ["sched_wakeup", "sched_wakeup_new"] {
            for (kernel, format) in fixture_formats("sched", event) {
                assert!(format.field_sized("pid", &[4]).is_ok(), "{kernel} {event}");
            }
        }
    }
}
