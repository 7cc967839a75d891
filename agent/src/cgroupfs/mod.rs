//! Reading cgroup files: one module per file family, on every layout a node
//! has — pure v2, pure v1, and hybrid (controllers on v1, ids from v2).
//!
//! A container has the same relative path in every hierarchy, so a cgroup
//! found in the v2 tree is joined to its v1 directories by that path; it gets
//! the series of whichever files exist. Files are read at scrape time, each
//! once per cgroup; a cgroup that vanishes mid-read is dropped from that
//! scrape. Malformed lines are skipped, counted per file, and logged once.

pub mod cpu;
pub mod io;
pub mod memory;
pub mod parse;
pub mod pressure;

use std::{
    ffi::CStr,
    io as stdio,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
};

use self::{cpu::CpuStats, io::DeviceIo, memory::MemoryStats, pressure::Stall};

/// Counts of malformed lines and failed reads, per file name; each file is
/// logged the first time only.
#[derive(Debug, Default)]
pub struct Errors {
    counts: Vec<(&'static str, u64)>,
    /// A worker's counts are logged when merged into the main counters.
    quiet: bool,
}

impl Errors {
    pub fn malformed(&mut self, file: &'static str) {
        self.record(file, "malformed content", 1);
    }

    fn record(&mut self, file: &'static str, what: &str, n: u64) {
        match self.counts.iter_mut().find(|(f, _)| *f == file) {
            Some((_, count)) => *count += n,
            None => {
                if !self.quiet {
                    tracing::warn!(
                        "{what} in a cgroup's {file}; skipped, and counted in \
                         stallwatch_cgroup_read_errors_total{{file=\"{file}\"}} (logged once)"
                    );
                }
                self.counts.push((file, n));
            }
        }
    }

    /// Moves a worker's counts into these.
    pub fn absorb(&mut self, worker: &mut Errors) {
        for (file, n) in worker.counts.drain(..) {
            self.record(file, "malformed content or a read error", n);
        }
    }

    #[cfg(test)]
    pub fn count(&self, file: &str) -> u64 {
        self.counts
            .iter()
            .find(|(f, _)| *f == file)
            .map_or(0, |(_, n)| *n)
    }

    #[cfg(test)]
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|(_, n)| n).sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.counts.iter().copied()
    }
}

/// Where each controller's files are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchies {
    /// The cgroup2 mount (ids, core files, PSI, and any v2 controllers).
    pub v2: PathBuf,
    pub cpu_v1: Option<PathBuf>,
    pub cpuacct_v1: Option<PathBuf>,
    pub memory_v1: Option<PathBuf>,
    pub blkio_v1: Option<PathBuf>,
}

impl Hierarchies {
    /// The v2 root, plus v1 controller mounts beside it (hybrid layout:
    /// `/sys/fs/cgroup/unified` with `/sys/fs/cgroup/{cpu,memory,…}`), each
    /// recognised by a file only that controller has.
    pub fn discover(v2: &Path) -> Self {
        let beside = v2
            .parent()
            .filter(|_| v2.file_name().is_some_and(|n| n == "unified"));
        let find = |names: &[&str], marker: &str| {
            let parent = beside?;
            names
                .iter()
                .map(|n| parent.join(n))
                .find(|dir| dir.join(marker).is_file())
        };
        Self {
            v2: v2.to_owned(),
            cpu_v1: find(&["cpu", "cpu,cpuacct"], "cpu.shares"),
            cpuacct_v1: find(&["cpuacct", "cpu,cpuacct"], "cpuacct.usage"),
            memory_v1: find(&["memory"], "memory.limit_in_bytes"),
            blkio_v1: find(&["blkio"], "blkio.throttle.io_serviced"),
        }
    }
}

/// Everything read for one cgroup in one scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CgroupStats {
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    /// Indexed like [`pressure::RESOURCES`].
    pub pressure: [Stall; 3],
    /// This cgroup's devices in the shared device list: `start..end`.
    pub io: (usize, usize),
}

/// The cgroup disappeared while it was being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vanished;

enum Text {
    Read,
    Absent,
}

/// Reads cgroup files with one reused buffer and path.
#[derive(Debug)]
pub struct StatsReader {
    hierarchies: Hierarchies,
    user_hz: u64,
    bytes: Vec<u8>,
    path: Vec<u8>,
    pub errors: Errors,
}

impl StatsReader {
    pub fn new(hierarchies: Hierarchies) -> Self {
        Self {
            hierarchies,
            user_hz: user_hz(),
            bytes: Vec::with_capacity(8192),
            path: Vec::with_capacity(512),
            errors: Errors::default(),
        }
    }

    pub fn hierarchies(&self) -> &Hierarchies {
        &self.hierarchies
    }

    /// A reader for another thread: same hierarchies, its own buffers, and
    /// error counts to be [`Errors::absorb`]ed by this one.
    pub fn worker(&self) -> Self {
        let mut worker = Self::new(self.hierarchies.clone());
        worker.errors.quiet = true;
        worker
    }

    /// Reads every family for the cgroup at `rel` (`/` for the root),
    /// appending its block devices to `devices`.
    pub fn read(
        &mut self,
        rel: &str,
        devices: &mut Vec<DeviceIo>,
    ) -> Result<CgroupStats, Vanished> {
        let mut stats = CgroupStats::default();
        let rel = rel.trim_start_matches('/');
        let Self {
            hierarchies,
            user_hz,
            bytes,
            path,
            errors,
        } = self;
        let start = devices.len();

        // v2: core files (usage, PSI) and the controllers it has. The v2
        // tree is where cgroup ids come from: without it the cgroup is gone.
        let mut file = Files::new(path, bytes, errors, &hierarchies.v2, rel);
        if !file.present() {
            return Err(Vanished);
        }
        if file.read(c"cpu.stat")? {
            file.with(|t, e| cpu::stat_v2(t, &mut stats.cpu, e));
        }
        if file.read(c"cpu.max")? {
            file.with(|t, e| cpu::max_v2(t, &mut stats.cpu, e));
        }
        if file.read(c"cpu.weight")? {
            stats.cpu.weight = parse::single(file.text());
        }
        if file.read(c"memory.current")? {
            stats.memory.usage_bytes = parse::single(file.text());
        }
        if file.read(c"memory.max")? {
            stats.memory.limit_bytes = file.with(|t, e| memory::limit_v2(t, "memory.max", e));
        }
        if file.read(c"memory.high")? {
            stats.memory.high_bytes = file.with(|t, e| memory::limit_v2(t, "memory.high", e));
        }
        if file.read(c"memory.stat")? {
            file.with(|t, e| memory::stat_v2(t, &mut stats.memory, e));
        }
        if file.read(c"memory.events")? {
            file.with(|t, e| memory::events_v2(t, &mut stats.memory, e));
        }
        if file.read(c"memory.swap.current")? {
            stats.memory.swap_bytes = parse::single(file.text());
        }
        if file.read(c"io.stat")? {
            file.with(|t, e| io::stat_v2(t, devices, e));
        }
        let pressure_files = [
            (c"cpu.pressure", "cpu.pressure"),
            (c"memory.pressure", "memory.pressure"),
            (c"io.pressure", "io.pressure"),
        ];
        for (slot, (name, label)) in stats.pressure.iter_mut().zip(pressure_files) {
            if file.read(name)? {
                *slot = file.with(|t, e| pressure::parse_stall(t, label, e));
            }
        }

        // v1 controllers of a hybrid or v1 node.
        if let Some(root) = &hierarchies.cpu_v1 {
            let mut file = Files::new(path, bytes, errors, root, rel);
            if file.read(c"cpu.stat")? {
                file.with(|t, e| cpu::stat_v1(t, &mut stats.cpu, e));
            }
            if file.read(c"cpu.cfs_quota_us")? {
                let quota = file.text().to_owned();
                if file.read(c"cpu.cfs_period_us")? {
                    file.with(|t, e| cpu::limit_v1(&quota, t, &mut stats.cpu, e));
                }
            }
            if file.read(c"cpu.shares")? {
                stats.cpu.shares = parse::single(file.text());
            }
        }
        if let Some(root) = &hierarchies.cpuacct_v1 {
            let mut file = Files::new(path, bytes, errors, root, rel);
            if file.read(c"cpuacct.usage")? {
                stats.cpu.usage_seconds = parse::single(file.text()).map(|ns| ns as f64 / 1e9);
            }
            if file.read(c"cpuacct.stat")? {
                file.with(|t, e| cpu::cpuacct_stat(t, *user_hz, &mut stats.cpu, e));
            }
        }
        if let Some(root) = &hierarchies.memory_v1 {
            let mut file = Files::new(path, bytes, errors, root, rel);
            if file.read(c"memory.usage_in_bytes")? {
                stats.memory.usage_bytes = parse::single(file.text());
            }
            if file.read(c"memory.limit_in_bytes")? {
                stats.memory.limit_bytes = file.with(memory::limit_v1);
            }
            if file.read(c"memory.stat")? {
                file.with(|t, e| memory::stat_v1(t, &mut stats.memory, e));
            }
            if file.read(c"memory.failcnt")? {
                stats.memory.events[2] = parse::single(file.text());
            }
            if file.read(c"memory.oom_control")? {
                file.with(|t, e| memory::oom_control_v1(t, &mut stats.memory, e));
            }
            if file.read(c"memory.kmem.usage_in_bytes")? {
                stats.memory.kernel_bytes = parse::single(file.text());
            }
        }
        if let Some(root) = &hierarchies.blkio_v1 {
            let mut file = Files::new(path, bytes, errors, root, rel);
            if file.read(c"blkio.throttle.io_service_bytes")? {
                file.with(|t, e| io::throttle_v1(t, true, devices, e));
            }
            if file.read(c"blkio.throttle.io_serviced")? {
                file.with(|t, e| io::throttle_v1(t, false, devices, e));
            }
        }
        stats.memory.finish();
        stats.io = (start, devices.len());
        Ok(stats)
    }
}

/// The files of one cgroup directory in one hierarchy, read through a
/// directory descriptor: per file one `openat`, one `read`, one `close`.
struct Files<'a> {
    /// `None` when this hierarchy has no such cgroup, which is not a
    /// vanished cgroup: a v1 hierarchy may lack one the v2 tree has.
    dir: Option<OwnedFd>,
    bytes: &'a mut Vec<u8>,
    errors: &'a mut Errors,
}

impl<'a> Files<'a> {
    fn new(
        path: &mut Vec<u8>,
        bytes: &'a mut Vec<u8>,
        errors: &'a mut Errors,
        root: &Path,
        rel: &str,
    ) -> Self {
        path.clear();
        path.extend_from_slice(root.as_os_str().as_bytes());
        if !rel.is_empty() {
            path.push(b'/');
            path.extend_from_slice(rel.as_bytes());
        }
        path.push(0);
        let dir = CStr::from_bytes_with_nul(path).ok().and_then(|path| {
            // SAFETY: `path` is NUL-terminated and outlives the call.
            let fd = unsafe {
                libc::open(
                    path.as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            };
            // SAFETY: a descriptor open() just returned, owned by nobody else.
            (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
        });
        Self { dir, bytes, errors }
    }

    fn present(&self) -> bool {
        self.dir.is_some()
    }

    /// Reads `name` into the buffer: `Ok(true)` if read, `Ok(false)` if this
    /// hierarchy has no such file or directory, `Err` if the cgroup vanished.
    fn read(&mut self, name: &'static CStr) -> Result<bool, Vanished> {
        let Some(dir) = &self.dir else {
            return Ok(false);
        };
        let label = name.to_str().unwrap_or("?");
        self.bytes.clear();
        // SAFETY: `dir` is an open directory descriptor and `name` a
        // NUL-terminated relative path.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = stdio::Error::last_os_error();
            return match classify(&e) {
                Text::Absent if still_there(dir) => Ok(false),
                Text::Absent => Err(Vanished),
                Text::Read => {
                    self.errors.record(label, "a read error", 1);
                    Ok(false)
                }
            };
        }
        // SAFETY: a descriptor openat() just returned, owned by nobody else.
        let file = unsafe { OwnedFd::from_raw_fd(fd) };
        loop {
            if self.bytes.capacity() - self.bytes.len() < 1024 {
                self.bytes.reserve(4096);
            }
            let spare = self.bytes.spare_capacity_mut();
            // SAFETY: reads at most `spare.len()` bytes into the vector's
            // spare capacity, which it owns.
            let n = unsafe { libc::read(file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
            let Ok(n) = usize::try_from(n) else {
                let e = stdio::Error::last_os_error();
                self.bytes.clear();
                return match classify(&e) {
                    // PSI switched off refuses reads of its files.
                    Text::Absent => Ok(false),
                    Text::Read => {
                        self.errors.record(label, "a read error", 1);
                        Ok(false)
                    }
                };
            };
            let short = n < spare.len();
            // SAFETY: read() initialised the first `n` spare bytes.
            unsafe { self.bytes.set_len(self.bytes.len() + n) };
            // cgroup files are sequence files: a short read is the end.
            if n == 0 || short {
                break;
            }
        }
        if std::str::from_utf8(self.bytes).is_err() {
            self.bytes.clear();
            self.errors.record(label, "text that is not UTF-8", 1);
            return Ok(false);
        }
        Ok(true)
    }

    fn text(&self) -> &str {
        std::str::from_utf8(self.bytes).unwrap_or_default()
    }

    /// Runs a parser over the file just read, with the error counters.
    fn with<R>(&mut self, parse: impl FnOnce(&str, &mut Errors) -> R) -> R {
        parse(
            std::str::from_utf8(self.bytes).unwrap_or_default(),
            self.errors,
        )
    }
}

/// Whether a cgroup directory still exists: every cgroup has `cgroup.procs`.
fn still_there(dir: &OwnedFd) -> bool {
    // SAFETY: `dir` is an open directory descriptor; the path is a literal.
    unsafe { libc::faccessat(dir.as_raw_fd(), c"cgroup.procs".as_ptr(), libc::F_OK, 0) == 0 }
}

/// Missing files (and PSI switched off, which refuses reads) are absences;
/// anything else is a read error.
fn classify(e: &stdio::Error) -> Text {
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENODEV | libc::EOPNOTSUPP) => Text::Absent,
        _ => Text::Read,
    }
}

pub(crate) fn user_hz() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|hz| *hz > 0).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    /// Every real file under tests/fixtures/cgroup, from dumped `/sys` trees
    /// of kernels from 2.6.32 to 6.14+, goes through its parser cleanly.
    #[test]
    fn real_files_of_many_kernels_parse_without_errors() {
        let mut parsed = 0;
        for source in fs::read_dir(FIXTURES).expect("fixtures").flatten() {
            for version in ["v1", "v2", ""] {
                let dir = source.path().join(version);
                let Ok(files) = fs::read_dir(&dir) else {
                    continue;
                };
                for file in files.flatten().filter(|f| f.path().is_file()) {
                    let name = file.file_name().to_string_lossy().into_owned();
                    let text = fs::read_to_string(file.path()).expect("readable");
                    let mut errors = Errors::default();
                    let mut cpu = CpuStats::default();
                    let mut memory = MemoryStats::default();
                    let mut devices = Vec::new();
                    let v1 = version == "v1";
                    let checked = match name.as_str() {
                        "cpu.stat" if v1 => {
                            cpu::stat_v1(&text, &mut cpu, &mut errors);
                            cpu.periods.is_some()
                        }
                        "cpu.stat" => {
                            cpu::stat_v2(&text, &mut cpu, &mut errors);
                            cpu.usage_seconds.is_some()
                        }
                        "cpu.max" => {
                            cpu::max_v2(&text, &mut cpu, &mut errors);
                            true
                        }
                        "cpuacct.stat" => {
                            cpu::cpuacct_stat(&text, 100, &mut cpu, &mut errors);
                            cpu.user_seconds.is_some()
                        }
                        "memory.stat" if v1 => {
                            memory::stat_v1(&text, &mut memory, &mut errors);
                            memory.cache_bytes.is_some()
                        }
                        "memory.stat" => {
                            memory::stat_v2(&text, &mut memory, &mut errors);
                            memory.rss_bytes.is_some() && memory.kernel_bytes.is_some()
                        }
                        "memory.events" => {
                            memory::events_v2(&text, &mut memory, &mut errors);
                            memory.events[4].is_some()
                        }
                        "memory.max" | "memory.high" => {
                            memory::limit_v2(&text, "memory.max", &mut errors);
                            true
                        }
                        "memory.limit_in_bytes" => memory::limit_v1(&text, &mut errors).is_none(),
                        "memory.oom_control" => {
                            memory::oom_control_v1(&text, &mut memory, &mut errors);
                            true
                        }
                        "io.stat" => {
                            io::stat_v2(&text, &mut devices, &mut errors);
                            !devices.is_empty()
                        }
                        "blkio.throttle.io_service_bytes" => {
                            io::throttle_v1(&text, true, &mut devices, &mut errors);
                            true
                        }
                        "blkio.throttle.io_serviced" => {
                            io::throttle_v1(&text, false, &mut devices, &mut errors);
                            true
                        }
                        n if n.ends_with("pressure") || n.starts_with("proc-pressure-") => {
                            let stall = pressure::parse_stall(&text, "pressure", &mut errors);
                            stall.some_seconds.is_some() || stall.full_seconds.is_some()
                        }
                        _ => parse::single(&text).is_some() || text.trim().parse::<i64>().is_ok(),
                    };
                    let at = file.path().display().to_string();
                    assert!(checked, "{at}: expected values missing");
                    assert_eq!(
                        errors.total(),
                        0,
                        "{at}: {:?}",
                        errors.iter().collect::<Vec<_>>()
                    );
                    parsed += 1;
                }
            }
        }
        assert!(parsed >= 50, "only {parsed} fixture files");
    }

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cgroup");

    /// Writes a file into a fixture cgroup, which (like a real one) has a
    /// `cgroup.procs`.
    fn write(dir: &Path, name: &str, text: &str) {
        fs::create_dir_all(dir).expect("mkdir");
        fs::write(dir.join("cgroup.procs"), "").expect("write");
        fs::write(dir.join(name), text).expect("write");
    }

    /// A hybrid node laid out as this host's: cgroup2 at `unified` (ids,
    /// usage and PSI) and v1 controllers beside it, with real file contents.
    fn hybrid_tree(rel: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        let real = Path::new(FIXTURES).join("host-6.18-hybrid/v1");
        // Every hierarchy's root has its controller's files, as on a node.
        let copy = |hierarchy: &str, files: &[&str]| {
            for name in files {
                let text = fs::read_to_string(real.join(name)).expect("fixture");
                write(&root.path().join(hierarchy), name, &text);
                write(&root.path().join(hierarchy).join(rel), name, &text);
            }
        };
        write(
            &root.path().join("unified").join(rel),
            "cpu.stat",
            "usage_usec 3000000\nuser_usec 2000000\nsystem_usec 1000000\n",
        );
        write(
            &root.path().join("unified").join(rel),
            "cpu.pressure",
            "some avg10=4.93 avg60=5.04 avg300=10.21 total=440604288\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        );
        copy(
            "cpu",
            &[
                "cpu.stat",
                "cpu.cfs_quota_us",
                "cpu.cfs_period_us",
                "cpu.shares",
            ],
        );
        copy("cpuacct", &["cpuacct.usage", "cpuacct.stat"]);
        copy(
            "memory",
            &[
                "memory.stat",
                "memory.usage_in_bytes",
                "memory.limit_in_bytes",
                "memory.failcnt",
                "memory.oom_control",
            ],
        );
        copy(
            "blkio",
            &[
                "blkio.throttle.io_service_bytes",
                "blkio.throttle.io_serviced",
            ],
        );
        root
    }

    #[test]
    fn finds_v1_controllers_beside_a_unified_v2_mount_and_none_on_pure_v2() {
        let root = hybrid_tree("");
        let h = Hierarchies::discover(&root.path().join("unified"));
        assert_eq!(h.cpu_v1, Some(root.path().join("cpu")));
        assert_eq!(h.cpuacct_v1, Some(root.path().join("cpuacct")));
        assert_eq!(h.memory_v1, Some(root.path().join("memory")));
        assert_eq!(h.blkio_v1, Some(root.path().join("blkio")));
        let pure = Hierarchies::discover(root.path());
        assert_eq!(
            pure,
            Hierarchies {
                v2: root.path().to_owned(),
                ..Hierarchies::default()
            }
        );
    }

    #[test]
    fn reads_a_hybrid_cgroup_joined_by_relative_path() {
        let root = hybrid_tree("kubepods/pod1/c1");
        let mut reader = StatsReader::new(Hierarchies::discover(&root.path().join("unified")));
        let mut devices = Vec::new();
        let stats = reader
            .read("/kubepods/pod1/c1", &mut devices)
            .expect("present");
        // cpuacct (ns) wins over v2's usage_usec; ticks are USER_HZ.
        let usage_ns =
            fs::read_to_string(Path::new(FIXTURES).join("host-6.18-hybrid/v1/cpuacct.usage"))
                .expect("fixture");
        let usage_ns: u64 = usage_ns.trim().parse().expect("a number");
        assert_eq!(stats.cpu.usage_seconds, Some(usage_ns as f64 / 1e9));
        assert_eq!(stats.cpu.periods, Some(0));
        assert_eq!(stats.cpu.limit_cores, None, "quota -1 is no limit");
        assert_eq!(stats.cpu.shares, Some(1024));
        assert_eq!(
            stats.memory.limit_bytes, None,
            "the page counter maximum is no limit"
        );
        assert_eq!(stats.memory.events[4], Some(0));
        assert!(stats.memory.working_set_bytes.is_some());
        assert_eq!(stats.pressure[0].some_seconds, Some(440.604288));
        assert_eq!(stats.io, (0, 0), "no devices in a Total-only blkio file");
        assert_eq!(reader.errors.total(), 0);
    }

    #[test]
    fn reads_a_pure_v2_cgroup_with_limits_and_max() {
        let root = tempfile::tempdir().expect("tempdir");
        let c = root.path().join("pod/c");
        write(
            &c,
            "cpu.stat",
            "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 20\nnr_throttled 18\nthrottled_usec 1700000\n",
        );
        write(&c, "cpu.max", "10000 100000\n");
        write(&c, "cpu.weight", "100\n");
        write(&c, "memory.current", "104857600\n");
        write(&c, "memory.max", "max\n");
        write(&c, "memory.high", "max\n");
        write(
            &c,
            "memory.stat",
            "anon 90000000\nfile 10000000\ninactive_file 4857600\npgmajfault 2\n",
        );
        write(
            &c,
            "memory.events",
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        );
        write(
            &c,
            "io.stat",
            "254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
        );
        let mut reader = StatsReader::new(Hierarchies::discover(root.path()));
        let mut devices = vec![DeviceIo::default()];
        let stats = reader.read("/pod/c", &mut devices).expect("present");
        assert_eq!(stats.cpu.limit_cores, Some(0.1));
        assert_eq!(stats.cpu.throttled_periods, Some(18));
        assert_eq!(stats.memory.limit_bytes, None);
        assert_eq!(stats.memory.working_set_bytes, Some(100_000_000));
        assert_eq!(stats.memory.events[4], Some(1));
        assert_eq!(stats.io, (1, 2));
        assert_eq!(devices[1].write_bytes, 8192);
        // A file this kernel lacks is no series, not an error.
        assert_eq!(stats.memory.swap_bytes, None);
        assert_eq!(stats.pressure[1], Stall::default());
        assert_eq!(reader.errors.total(), 0);
    }

    #[test]
    fn truncated_and_garbage_files_are_counted_and_the_rest_kept() {
        let root = tempfile::tempdir().expect("tempdir");
        let c = root.path().join("c");
        write(&c, "cpu.stat", "usage_usec 2500000\nnr_peri");
        write(&c, "cpu.max", "\u{0}\u{1}garbage");
        write(&c, "memory.current", "");
        write(&c, "memory.events", "oom_kill one\n");
        let mut reader = StatsReader::new(Hierarchies::discover(root.path()));
        let stats = reader.read("/c", &mut Vec::new()).expect("present");
        assert_eq!(stats.cpu.usage_seconds, Some(2.5));
        assert_eq!(stats.memory.usage_bytes, None);
        assert_eq!(reader.errors.count("cpu.stat"), 1);
        assert_eq!(reader.errors.count("cpu.max"), 1);
        assert_eq!(reader.errors.count("memory.events"), 1);
    }

    #[test]
    fn a_cgroup_that_vanished_is_reported_as_such() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut reader = StatsReader::new(Hierarchies::discover(root.path()));
        assert_eq!(reader.read("/gone", &mut Vec::new()), Err(Vanished));
    }

    #[test]
    fn a_cgroup_only_some_v1_hierarchies_have_gets_what_they_have() {
        let root = hybrid_tree("");

        write(
            &root.path().join("unified/only-v2"),
            "cpu.stat",
            "usage_usec 1000000\n",
        );
        let mut reader = StatsReader::new(Hierarchies::discover(&root.path().join("unified")));
        let stats = reader.read("/only-v2", &mut Vec::new()).expect("present");
        assert_eq!(stats.cpu.usage_seconds, Some(1.0));
        assert_eq!(stats.memory, MemoryStats::default());
    }
}
