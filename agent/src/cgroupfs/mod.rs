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
    fs, io as stdio,
    io::Read as _,
    path::{Path, PathBuf},
};

use self::{cpu::CpuStats, io::DeviceIo, memory::MemoryStats, pressure::Stall};

/// Counts of malformed lines and failed reads, per file name; each file is
/// logged the first time only.
#[derive(Debug, Default)]
pub struct Errors {
    counts: Vec<(&'static str, u64)>,
}

impl Errors {
    pub fn malformed(&mut self, file: &'static str) {
        self.record(file, "malformed content");
    }

    fn record(&mut self, file: &'static str, what: &str) {
        match self.counts.iter_mut().find(|(f, _)| *f == file) {
            Some((_, n)) => *n += 1,
            None => {
                tracing::warn!(
                    "{what} in a cgroup's {file}; skipped, and counted in \
                     stallwatch_cgroup_read_errors_total{{file=\"{file}\"}} (logged once)"
                );
                self.counts.push((file, 1));
            }
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
    text: String,
    path: PathBuf,
    pub errors: Errors,
}

impl StatsReader {
    pub fn new(hierarchies: Hierarchies) -> Self {
        Self {
            hierarchies,
            user_hz: user_hz(),
            text: String::with_capacity(8192),
            path: PathBuf::with_capacity(512),
            errors: Errors::default(),
        }
    }

    pub fn hierarchies(&self) -> &Hierarchies {
        &self.hierarchies
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
            text,
            path,
            errors,
        } = self;
        let start = devices.len();

        // v2: core files (usage, PSI) and the controllers it has. The v2
        // tree is where cgroup ids come from: without it the cgroup is gone.
        let mut file = Files::new(path, text, errors, &hierarchies.v2, rel);
        if !file.present {
            return Err(Vanished);
        }
        if file.read("cpu.stat")? {
            file.with(|t, e| cpu::stat_v2(t, &mut stats.cpu, e));
        }
        if file.read("cpu.max")? {
            file.with(|t, e| cpu::max_v2(t, &mut stats.cpu, e));
        }
        if file.read("cpu.weight")? {
            stats.cpu.weight = parse::single(file.text());
        }
        if file.read("memory.current")? {
            stats.memory.usage_bytes = parse::single(file.text());
        }
        if file.read("memory.max")? {
            stats.memory.limit_bytes = file.with(|t, e| memory::limit_v2(t, "memory.max", e));
        }
        if file.read("memory.high")? {
            stats.memory.high_bytes = file.with(|t, e| memory::limit_v2(t, "memory.high", e));
        }
        if file.read("memory.stat")? {
            file.with(|t, e| memory::stat_v2(t, &mut stats.memory, e));
        }
        if file.read("memory.events")? {
            file.with(|t, e| memory::events_v2(t, &mut stats.memory, e));
        }
        if file.read("memory.swap.current")? {
            stats.memory.swap_bytes = parse::single(file.text());
        }
        if file.read("io.stat")? {
            file.with(|t, e| io::stat_v2(t, devices, e));
        }
        for (slot, name) in
            stats
                .pressure
                .iter_mut()
                .zip(["cpu.pressure", "memory.pressure", "io.pressure"])
        {
            if file.read(name)? {
                *slot = file.with(|t, e| pressure::parse_stall(t, name, e));
            }
        }

        // v1 controllers of a hybrid or v1 node.
        if let Some(root) = &hierarchies.cpu_v1 {
            let mut file = Files::new(path, text, errors, root, rel);
            if file.read("cpu.stat")? {
                file.with(|t, e| cpu::stat_v1(t, &mut stats.cpu, e));
            }
            if file.read("cpu.cfs_quota_us")? {
                let quota = file.text().to_owned();
                if file.read("cpu.cfs_period_us")? {
                    file.with(|t, e| cpu::limit_v1(&quota, t, &mut stats.cpu, e));
                }
            }
            if file.read("cpu.shares")? {
                stats.cpu.shares = parse::single(file.text());
            }
        }
        if let Some(root) = &hierarchies.cpuacct_v1 {
            let mut file = Files::new(path, text, errors, root, rel);
            if file.read("cpuacct.usage")? {
                stats.cpu.usage_seconds = parse::single(file.text()).map(|ns| ns as f64 / 1e9);
            }
            if file.read("cpuacct.stat")? {
                file.with(|t, e| cpu::cpuacct_stat(t, *user_hz, &mut stats.cpu, e));
            }
        }
        if let Some(root) = &hierarchies.memory_v1 {
            let mut file = Files::new(path, text, errors, root, rel);
            if file.read("memory.usage_in_bytes")? {
                stats.memory.usage_bytes = parse::single(file.text());
            }
            if file.read("memory.limit_in_bytes")? {
                stats.memory.limit_bytes = file.with(memory::limit_v1);
            }
            if file.read("memory.stat")? {
                file.with(|t, e| memory::stat_v1(t, &mut stats.memory, e));
            }
            if file.read("memory.failcnt")? {
                stats.memory.events[2] = parse::single(file.text());
            }
            if file.read("memory.oom_control")? {
                file.with(|t, e| memory::oom_control_v1(t, &mut stats.memory, e));
            }
            if file.read("memory.kmem.usage_in_bytes")? {
                stats.memory.kernel_bytes = parse::single(file.text());
            }
        }
        if let Some(root) = &hierarchies.blkio_v1 {
            let mut file = Files::new(path, text, errors, root, rel);
            if file.read("blkio.throttle.io_service_bytes")? {
                file.with(|t, e| io::throttle_v1(t, true, devices, e));
            }
            if file.read("blkio.throttle.io_serviced")? {
                file.with(|t, e| io::throttle_v1(t, false, devices, e));
            }
        }
        stats.memory.finish();
        stats.io = (start, devices.len());
        Ok(stats)
    }
}

/// The files of one cgroup directory in one hierarchy.
struct Files<'a> {
    path: &'a mut PathBuf,
    text: &'a mut String,
    errors: &'a mut Errors,
    /// Whether the directory exists at all: a v1 hierarchy may lack a cgroup
    /// the v2 tree has, which is not a vanished cgroup.
    present: bool,
}

impl<'a> Files<'a> {
    fn new(
        path: &'a mut PathBuf,
        text: &'a mut String,
        errors: &'a mut Errors,
        root: &Path,
        rel: &str,
    ) -> Self {
        path.clear();
        path.push(root);
        if !rel.is_empty() {
            path.push(rel);
        }
        let present = path.is_dir();
        Self {
            path,
            text,
            errors,
            present,
        }
    }

    /// Reads `name` into the buffer: `Ok(true)` if read, `Ok(false)` if this
    /// hierarchy has no such file or directory, `Err` if the cgroup vanished.
    fn read(&mut self, name: &'static str) -> Result<bool, Vanished> {
        if !self.present {
            return Ok(false);
        }
        self.path.push(name);
        let result = read_into(self.path, self.text);
        self.path.pop();
        match result {
            Ok(()) => Ok(true),
            Err(e) => match classify(&e) {
                Text::Absent if self.path.is_dir() => Ok(false),
                Text::Absent => Err(Vanished),
                Text::Read => {
                    self.errors.record(name, "a read error");
                    Ok(false)
                }
            },
        }
    }

    fn text(&self) -> &str {
        self.text
    }

    /// Runs a parser over the file just read, with the error counters.
    fn with<R>(&mut self, parse: impl FnOnce(&str, &mut Errors) -> R) -> R {
        parse(self.text, self.errors)
    }
}

fn read_into(path: &Path, text: &mut String) -> stdio::Result<()> {
    text.clear();
    fs::File::open(path)?.read_to_string(text).map(|_| ())
}

/// Missing files (and PSI switched off, which refuses reads) are absences;
/// anything else is a read error.
fn classify(e: &stdio::Error) -> Text {
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENODEV | libc::EOPNOTSUPP) => Text::Absent,
        _ if e.kind() == stdio::ErrorKind::NotFound => Text::Absent,
        _ => Text::Read,
    }
}

fn user_hz() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|hz| *hz > 0).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cgroup");

    fn write(dir: &Path, name: &str, text: &str) {
        fs::create_dir_all(dir).expect("mkdir");
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
        fs::create_dir_all(root.path().join("unified/only-v2")).expect("mkdir");
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
