//! Harness for black-box tests of the built `agent` binary: start it as a
//! user would, make cgroups and workloads, scrape it, and clean up after
//! every test, also when it fails (everything here cleans up on drop).

pub mod containerd;
pub mod prometheus;

use std::{
    fs,
    io::Write as _,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

/// The agent binary under test: `STALLWATCH_AGENT_BIN` (set by `cargo xtask
/// test`), else the workspace's release or debug build.
pub fn agent_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("STALLWATCH_AGENT_BIN") {
        return PathBuf::from(path);
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    for profile in ["release", "debug"] {
        let candidate = target.join(profile).join("agent");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "no agent binary: run the tests with `cargo xtask test`, or build with `cargo build -p agent`"
    );
}

/// A helper program of these tests (`tests/src/bin/<name>.rs`):
/// in `STALLWATCH_TEST_HELPERS` when set (as in the VM guests), else at
/// `built`, where cargo put it (`env!("CARGO_BIN_EXE_<name>")`).
pub fn helper_bin(name: &str, built: &str) -> PathBuf {
    match std::env::var_os("STALLWATCH_TEST_HELPERS") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => PathBuf::from(built),
    }
}

/// Whether a privileged test can run. As root under `cargo xtask test`
/// (`STALLWATCH_REQUIRE_PRIVILEGED=1`) a test that cannot run fails; as
/// another user it is skipped with the reason printed.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    if std::env::var_os("STALLWATCH_REQUIRE_PRIVILEGED").is_some() {
        panic!("{test} needs root");
    }
    eprintln!("SKIPPED {test}: needs root to load eBPF programs and create cgroups");
    false
}

/// A running agent, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Agent {
    child: Option<Child>,
    pub port: u16,
    log: PathBuf,
}

impl Agent {
    /// Starts `agent run` on a free loopback port and waits until /readyz is 200.
    pub fn start(extra_args: &[&str]) -> Self {
        let agent = Self::spawn(extra_args);
        agent.wait_for("/readyz", 200, Duration::from_secs(30));
        agent
    }

    /// Starts `agent run` without waiting for readiness.
    pub fn spawn(extra_args: &[&str]) -> Self {
        Self::spawn_with(extra_args, |_| {})
    }

    /// Mounts tracefs at `/sys/kernel/tracing` if it is not there (the VM
    /// guests boot without it), as a DaemonSet's hostPath mount provides it:
    /// an agent without CAP_SYS_ADMIN cannot mount it itself.
    pub fn ensure_tracefs() {
        let tracing = Path::new("/sys/kernel/tracing");
        if tracing.join("events").is_dir() {
            return;
        }
        let (source, target, fstype) = (c"tracefs", c"/sys/kernel/tracing", c"tracefs");
        // SAFETY: valid C strings; mounting tracefs where the kernel expects it.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mounting tracefs: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Starts `agent run` as root with only the capabilities `keep` (their
    /// numbers, e.g. 39 for CAP_BPF) in its bounding set, so that they are
    /// all it has, as in a container whose securityContext drops ALL and
    /// adds those back. Does not wait for readiness.
    pub fn spawn_with_capabilities(extra_args: &[&str], keep: &[u32]) -> Self {
        let keep = keep.to_vec();
        Self::spawn_with(extra_args, move |command| {
            // SAFETY: the closure runs in the forked child before exec and
            // calls only prctl(2), which is async-signal-safe.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(command, move || {
                    // Root's capabilities after exec are its bounding set.
                    for cap in 0..64u32 {
                        if !keep.contains(&cap) {
                            libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0);
                        }
                    }
                    Ok(())
                });
            }
        })
    }

    fn spawn_with(extra_args: &[&str], configure: impl FnOnce(&mut Command)) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!(
            "stallwatch-agent-{}-{port}.log",
            std::process::id()
        ));
        let log_file =
            fs::File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let mut command = Command::new(agent_bin());
        command
            .args(["run", "--listen", &format!("127.0.0.1:{port}")])
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(log_file);
        configure(&mut command);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", agent_bin().display()));
        Self {
            child: Some(child),
            port,
            log,
        }
    }

    /// Polls `path` until it answers `status`, or panics with the agent's log.
    pub fn wait_for(&self, path: &str, status: u16, within: Duration) {
        let deadline = Instant::now() + within;
        let mut last = None;
        while Instant::now() < deadline {
            match self.get(path) {
                Ok((s, _)) if s == status => return,
                other => last = Some(other),
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{path} did not answer {status} within {within:?} (last: {last:?}); agent log:\n{}",
            self.log()
        );
    }

    /// `GET path` → (status, body).
    pub fn get(&self, path: &str) -> Result<(u16, String), String> {
        self.get_with(path, None)
    }

    pub fn get_with(&self, path: &str, accept: Option<&str>) -> Result<(u16, String), String> {
        http_get(&format!("http://127.0.0.1:{}{path}", self.port), accept)
    }

    /// Scrapes /metrics in the Prometheus text format.
    pub fn scrape(&self) -> Scrape {
        match self.get("/metrics") {
            Ok((200, text)) => Scrape { text },
            other => panic!("scrape failed: {other:?}; agent log:\n{}", self.log()),
        }
    }

    /// Scrapes until `ready` holds for a scrape (a new cgroup is known after
    /// the agent's next rescan, at most a second after it first shows up).
    pub fn scrape_until(&self, within: Duration, ready: impl Fn(&Scrape) -> bool) -> Scrape {
        let deadline = Instant::now() + within;
        loop {
            let scrape = self.scrape();
            if ready(&scrape) || Instant::now() > deadline {
                return scrape;
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits for the agent to exit by itself, at most `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends SIGTERM and waits; returns the exit status and how long it took.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("the agent was already stopped"));
        let started = Instant::now();
        signal(&child, libc::SIGTERM);
        let deadline = started + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return (status, started.elapsed());
            }
            if Instant::now() > deadline {
                signal(&child, libc::SIGKILL);
                let status = child
                    .wait()
                    .unwrap_or_else(|e| panic!("waiting for the agent: {e}"));
                return (status, started.elapsed());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        let _ = fs::remove_file(&self.log);
    }
}

fn signal(child: &Child, sig: i32) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
        unsafe { libc::kill(pid, sig) };
    }
}

/// `GET url` → (status, body), any status; with an `Accept` header if given.
pub fn http_get(url: &str, accept: Option<&str>) -> Result<(u16, String), String> {
    let mut request = ureq::get(url);
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    let config = request.config().http_status_as_error(false).build();
    let mut response = config.call().map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((status, body))
}

pub fn free_port() -> u16 {
    let listener =
        TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("binding a free port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("reading the free port: {e}"))
        .port()
}

/// The cgroup2 mount: `/sys/fs/cgroup` on pure v2 hosts, `/sys/fs/cgroup/unified` on hybrid ones.
pub fn cgroup2_root() -> PathBuf {
    for candidate in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let path = PathBuf::from(candidate);
        let is_v2 = fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
            m.lines().any(|l| {
                l.contains(" - cgroup2 ") && l.split_whitespace().nth(4) == Some(candidate)
            })
        });
        if is_v2 {
            return path;
        }
    }
    panic!("no cgroup2 mount at /sys/fs/cgroup or /sys/fs/cgroup/unified");
}

/// A cgroup2 directory made for one test, removed when dropped (with the
/// directories made above it).
pub struct TestCgroup {
    pub path: PathBuf,
    /// The path relative to the cgroup2 root, as in the `cgroup` label.
    pub label: String,
    _dirs: MadeDirs,
}

impl TestCgroup {
    pub fn create(name: &str) -> Self {
        Self::create_nested(name, &[])
    }

    /// `stallwatch-test-<pid>-<name>/<nested[0]>/<nested[1]>/…`, e.g. to
    /// reproduce the kubelet's layout below a prefix of our own.
    pub fn create_nested(name: &str, nested: &[&str]) -> Self {
        let mut label = format!("/stallwatch-test-{}-{name}", std::process::id());
        for level in nested {
            label = format!("{label}/{level}");
        }
        let dirs = MadeDirs::create(&cgroup2_root(), &label, None);
        Self {
            path: dirs.leaf.clone(),
            label,
            _dirs: dirs,
        }
    }

    /// The cgroup v2 id: its directory's inode number.
    pub fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        fs::metadata(&self.path)
            .unwrap_or_else(|e| panic!("stat {}: {e}", self.path.display()))
            .ino()
    }

    /// Moves a process into this cgroup (in the cgroup2 hierarchy only: a
    /// hybrid host's v1 memory cgroup is left alone).
    pub fn add(&self, pid: u32) {
        let procs = self.path.join("cgroup.procs");
        let mut file = fs::OpenOptions::new()
            .write(true)
            .open(&procs)
            .unwrap_or_else(|e| panic!("opening {}: {e}", procs.display()));
        file.write_all(pid.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", procs.display()));
    }
}

/// A workload process this test started, killed by its PID when dropped.
pub struct Workload {
    child: Child,
}

impl Workload {
    /// A shell loop that never sleeps.
    pub fn cpu_hog() -> Self {
        Self::shell("while :; do :; done")
    }

    /// A shell loop that wakes up every `interval_ms` and does almost nothing.
    pub fn sleeper(interval_ms: u32) -> Self {
        Self::shell(&format!(
            "while :; do sleep {}; done",
            f64::from(interval_ms) / 1000.0
        ))
    }

    pub fn shell(script: &str) -> Self {
        let child = Command::new("/bin/sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting /bin/sh: {e}"));
        Self { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit, at most `within`; panics if it does
    /// not, or if it fails.
    pub fn wait(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return,
                Ok(Some(status)) => panic!("workload {} failed: {status}", self.pid()),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => panic!("workload {} still runs after {within:?}", self.pid()),
                Err(e) => panic!("waiting for workload {}: {e}", self.pid()),
            }
        }
    }

    /// Pins the process (and the children it starts from now on) to one CPU.
    pub fn pin_to_cpu(self, cpu: usize) -> Self {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_setaffinity
        // reads it and changes only the scheduling of our own child.
        let rc = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(
                self.pid() as i32,
                std::mem::size_of::<libc::cpu_set_t>(),
                &set,
            )
        };
        assert_eq!(
            rc,
            0,
            "sched_setaffinity({}, cpu {cpu}): {}",
            self.pid(),
            std::io::Error::last_os_error()
        );
        self
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        signal(&self.child, libc::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A bpftrace script this test started; stopped (SIGINT) by its PID.
pub struct Bpftrace {
    child: Option<Child>,
    output: PathBuf,
}

/// What a bpftrace script printed at exit: `@name: value` lines.
pub struct BpftraceOutput {
    text: String,
}

impl BpftraceOutput {
    /// The integer printed for `@name`, or 0 if the map was never written.
    pub fn get(&self, name: &str) -> u64 {
        let prefix = format!("{name}: ");
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Bpftrace {
    /// Starts `bpftrace -e script` and waits until its probes are attached.
    pub fn start(script: &str) -> Self {
        let output =
            std::env::temp_dir().join(format!("stallwatch-bpftrace-{}.out", std::process::id()));
        let file = fs::File::create(&output)
            .unwrap_or_else(|e| panic!("creating {}: {e}", output.display()));
        let child = Command::new("bpftrace")
            .args(["-e", script])
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting bpftrace (cargo xtask setup installs it): {e}"));
        let bpftrace = Self {
            child: Some(child),
            output,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !fs::read_to_string(&bpftrace.output).is_ok_and(|t| t.starts_with("Attaching")) {
            assert!(
                Instant::now() < deadline,
                "bpftrace did not attach within 60 s"
            );
            thread::sleep(Duration::from_millis(100));
        }
        bpftrace
    }

    /// Stops it and returns what it printed.
    pub fn stop(mut self) -> BpftraceOutput {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGINT);
            let _ = child.wait();
        }
        BpftraceOutput {
            text: fs::read_to_string(&self.output).unwrap_or_default(),
        }
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGKILL);
            let _ = child.wait();
        }
        let _ = fs::remove_file(&self.output);
    }
}

/// One scrape in the Prometheus text format.
pub struct Scrape {
    pub text: String,
}

/// A histogram series read back from a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// (le, cumulative count), `+Inf` as `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    /// A lower bound of the time spent in waits longer than `seconds` (a
    /// bucket bound): each such wait counted at its bucket's lower bound.
    pub fn time_above(&self, seconds: f64) -> f64 {
        let mut time = 0.0;
        let mut previous = (0.0, 0);
        for &(le, cumulative) in &self.buckets {
            let (lower, below) = previous;
            if lower >= seconds - 1e-12 {
                time += (cumulative - below) as f64 * lower;
            }
            previous = (le, cumulative);
        }
        time
    }

    /// The fraction of samples above `seconds` (which must be a bucket bound).
    pub fn fraction_above(&self, seconds: f64) -> f64 {
        let at_or_below = self
            .buckets
            .iter()
            .find(|(le, _)| (*le - seconds).abs() < 1e-12)
            .map(|(_, c)| *c)
            .unwrap_or_else(|| panic!("{seconds} is not a bucket bound"));
        if self.count == 0 {
            0.0
        } else {
            1.0 - at_or_below as f64 / self.count as f64
        }
    }
}

impl Scrape {
    /// The histogram `name` whose `cgroup` label is `cgroup`, if exported.
    pub fn histogram(&self, name: &str, cgroup: &str) -> Option<Histogram> {
        self.histogram_where(name, &[("cgroup", cgroup)])
    }

    /// The histogram `name` with all of `labels`, if exported.
    pub fn histogram_where(&self, name: &str, labels: &[(&str, &str)]) -> Option<Histogram> {
        let mut hist = Histogram {
            buckets: Vec::new(),
            count: 0,
            sum: 0.0,
        };
        let mut found = false;
        for line in self
            .text
            .lines()
            .filter(|l| l.starts_with(name) && labels.iter().all(|(k, v)| label(l, k) == Some(v)))
        {
            let (series, value) = line.rsplit_once(' ')?;
            let rest = &series[name.len()..];
            found = true;
            if rest.starts_with("_count{") {
                hist.count = value.parse().ok()?;
            } else if rest.starts_with("_sum{") {
                hist.sum = value.parse().ok()?;
            } else if rest.starts_with("_bucket{") {
                let le = label(series, "le")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                hist.buckets.push((le, value.parse().ok()?));
            }
        }
        found.then_some(hist)
    }

    /// The value of the first sample of `name` with all of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .find(|l| labels.iter().all(|(k, v)| label(l, k) == Some(v)))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

impl Scrape {
    /// The sum of every sample of `name` with all of `labels` (0 if none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter(|l| labels.iter().all(|(k, v)| label(l, k) == Some(v)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Whether any sample line names `name` (a metric family prefix) and
    /// has all of `labels`.
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.text
            .lines()
            .filter(|l| !l.starts_with('#') && l.starts_with(name))
            .any(|l| labels.iter().all(|(k, v)| label(l, k) == Some(v)))
    }
}

/// The value of label `key` in a sample line.
fn label<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = [format!("{{{key}=\""), format!(",{key}=\"")]
        .iter()
        .find_map(|needle| line.find(needle.as_str()))?
        + key.len()
        + 3;
    let end = line[start..].find('"')? + start;
    Some(&line[start..end])
}

/// Runs `promtool check metrics` on an exposition; `Err` holds its complaint.
pub fn promtool_check(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting promtool (cargo xtask setup installs it): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Whether cgroup2 holds the controllers (a pure v2 node) or only ids (hybrid).
pub fn pure_v2() -> bool {
    cgroup2_root() == Path::new("/sys/fs/cgroup")
}

/// This process's v1 `memory` cgroup, as `/proc/self/cgroup` shows it.
fn own_v1_memory_cgroup() -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.to_owned())
    })
}

/// Where tests make cgroups: beneath this process's own v1 memory cgroup on
/// hybrid hosts (so no process leaves the memory cgroup it started in), at
/// the root on pure v2 ones. Without a trailing `/`.
fn test_cgroup_prefix() -> String {
    if pure_v2() {
        String::new()
    } else {
        own_v1_memory_cgroup()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned()
    }
}

/// A directory tree made for a test in one hierarchy; removes what it made.
struct MadeDirs {
    made: Vec<PathBuf>,
    leaf: PathBuf,
}

impl MadeDirs {
    /// Makes `root/rel` level by level, enabling `controllers` in each
    /// parent's `cgroup.subtree_control` (v2) when given.
    fn create(root: &Path, rel: &str, controllers: Option<&str>) -> Self {
        let mut made = Vec::new();
        let mut path = root.to_owned();
        for level in rel.split('/').filter(|l| !l.is_empty()) {
            if let Some(controllers) = controllers {
                let _ = fs::write(path.join("cgroup.subtree_control"), controllers);
            }
            path.push(level);
            if !path.is_dir() {
                fs::create_dir(&path)
                    .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", path.display()));
                made.push(path.clone());
            }
        }
        Self { made, leaf: path }
    }
}

impl Drop for MadeDirs {
    fn drop(&mut self) {
        for path in self.made.iter().rev() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while fs::remove_dir(path).is_err() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
            }
            if path.exists() {
                eprintln!("warning: could not remove test cgroup {}", path.display());
            }
        }
    }
}

/// A container cgroup in the kubelet's systemd layout, made on whatever
/// layout this machine has: in cgroup2 with its controllers (pure v2), or in
/// cgroup2 for the id plus the same path in the v1 `cpu` and `memory`
/// hierarchies (hybrid). On hybrid hosts every path lies beneath this
/// process's own v1 memory cgroup, so no process leaves the memory cgroup
/// it started in.
pub struct ContainerCgroup {
    /// The path below the cgroup2 root, as in the `cgroup` label.
    pub label: String,
    pub container_id: String,
    v2: MadeDirs,
    cpu_v1: Option<MadeDirs>,
    memory_v1: Option<MadeDirs>,
}

impl ContainerCgroup {
    pub fn create(name: &str) -> Self {
        let uid = "7c1e2d3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f";
        let container_id =
            format!("{:0>64}", format!("{:x}", std::process::id())).replace('0', "a");
        let label = format!(
            "{}/stallwatch-test-{}-{name}/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{container_id}.scope",
            test_cgroup_prefix(),
            std::process::id(),
            uid.replace('-', "_"),
        );
        let (v2, cpu_v1, memory_v1) = if pure_v2() {
            (
                MadeDirs::create(&cgroup2_root(), &label, Some("+cpu +memory")),
                None,
                None,
            )
        } else {
            (
                MadeDirs::create(&cgroup2_root(), &label, None),
                Some(MadeDirs::create(
                    Path::new("/sys/fs/cgroup/cpu"),
                    &label,
                    None,
                )),
                Some(MadeDirs::create(
                    Path::new("/sys/fs/cgroup/memory"),
                    &label,
                    None,
                )),
            )
        };
        Self {
            label,
            container_id,
            v2,
            cpu_v1,
            memory_v1,
        }
    }

    fn cpu_dir(&self) -> &Path {
        self.cpu_v1.as_ref().map_or(&self.v2.leaf, |d| &d.leaf)
    }

    fn memory_dir(&self) -> &Path {
        self.memory_v1.as_ref().map_or(&self.v2.leaf, |d| &d.leaf)
    }

    /// Limits the container to `quota_us` of CPU per `period_us`.
    pub fn limit_cpu(&self, quota_us: u64, period_us: u64) {
        let (file, value) = match &self.cpu_v1 {
            Some(_) => ("cpu.cfs_period_us", period_us.to_string()),
            None => ("cpu.max", format!("{quota_us} {period_us}")),
        };
        write_cgroup_file(self.cpu_dir(), file, &value);
        if self.cpu_v1.is_some() {
            write_cgroup_file(self.cpu_dir(), "cpu.cfs_quota_us", &quota_us.to_string());
        }
    }

    /// Limits the container's memory, without swap.
    pub fn limit_memory(&self, bytes: u64) {
        match &self.memory_v1 {
            Some(_) => write_cgroup_file(
                self.memory_dir(),
                "memory.limit_in_bytes",
                &bytes.to_string(),
            ),
            None => {
                write_cgroup_file(self.memory_dir(), "memory.max", &bytes.to_string());
                let _ = fs::write(self.memory_dir().join("memory.swap.max"), "0");
            }
        }
    }

    /// The `cgroup.procs` files a process must be written to, to be in this
    /// container in every hierarchy.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        [
            Some(&self.v2),
            self.cpu_v1.as_ref(),
            self.memory_v1.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|d| d.leaf.join("cgroup.procs"))
        .collect()
    }

    /// Moves a process into this container in every hierarchy.
    pub fn add(&self, pid: u32) {
        for procs in self.procs_files() {
            write_cgroup_file(
                procs.parent().unwrap_or(Path::new("/")),
                "cgroup.procs",
                &pid.to_string(),
            );
        }
    }

    /// (throttled periods, throttled seconds) as the kernel reports them now.
    pub fn throttled(&self) -> (u64, f64) {
        let text = fs::read_to_string(self.cpu_dir().join("cpu.stat")).unwrap_or_default();
        let value = |key: &str| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(key)?
                        .strip_prefix(' ')?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .unwrap_or(0)
        };
        match &self.cpu_v1 {
            Some(_) => (value("nr_throttled"), value("throttled_time") as f64 / 1e9),
            None => (value("nr_throttled"), value("throttled_usec") as f64 / 1e6),
        }
    }

    /// OOM kills as the kernel reports them now.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.memory_v1.is_some() {
            "memory.oom_control"
        } else {
            "memory.events"
        };
        let text = fs::read_to_string(self.memory_dir().join(file)).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
            .unwrap_or(0)
    }
}

fn write_cgroup_file(dir: &Path, file: &str, value: &str) {
    let path = dir.join(file);
    fs::write(&path, value)
        .unwrap_or_else(|e| panic!("writing {value} to {}: {e}", path.display()));
}

impl Workload {
    /// A shell that first joins `procs` files, then runs `script`: it is in
    /// the cgroups before it starts any work or child.
    pub fn in_cgroups(procs: &[PathBuf], script: &str) -> Self {
        let joins: String = procs
            .iter()
            .map(|p| format!("echo $$ > '{}' && ", p.display()))
            .collect();
        Self::shell(&format!("{joins}{script}"))
    }
}

/// A scratch area for direct I/O on a block device, and that device:
/// `STALLWATCH_TEST_SCRATCH_DISK` (a whole spare disk, as in the VM tests),
/// else a file in `/var/tmp` (on this machine, on the root disk), removed
/// when dropped.
pub struct Scratch {
    pub path: PathBuf,
    /// The kernel's name of the disk that holds it, e.g. `vda`.
    pub disk: String,
    /// The disk's `dev_t` as the block tracepoints report it
    /// (`major << 20 | minor`).
    pub kernel_dev: u32,
    is_file: bool,
}

impl Scratch {
    /// Room for `bytes` of direct I/O, already allocated on the disk.
    pub fn create(bytes: usize) -> Self {
        use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
        if let Some(disk) = std::env::var_os("STALLWATCH_TEST_SCRATCH_DISK") {
            let mut scratch = Self::at(PathBuf::from(disk), false);
            let meta = fs::metadata(&scratch.path)
                .unwrap_or_else(|e| panic!("stat {}: {e}", scratch.path.display()));
            assert!(
                meta.file_type().is_block_device(),
                "{} is not a block device",
                scratch.path.display()
            );
            scratch.resolve_disk(meta.rdev());
            return scratch;
        }
        // Removed when dropped, also if anything below panics.
        let mut scratch = Self::at(
            PathBuf::from(format!(
                "/var/tmp/stallwatch-test-{}.scratch",
                std::process::id()
            )),
            true,
        );
        // Written through the page cache and synced: the blocks exist, so
        // direct I/O to them later touches nothing but data.
        let path = scratch.path.clone();
        let mut file =
            fs::File::create(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        file.write_all(&vec![0x5a; bytes])
            .and_then(|()| file.sync_all())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        let dev = fs::metadata(&path)
            .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
            .dev();
        scratch.resolve_disk(dev);
        scratch
    }

    /// The disk's I/O scheduler, e.g. `mq-deadline`, or `none`.
    pub fn scheduler(&self) -> String {
        let path = format!("/sys/class/block/{}/queue/scheduler", self.disk);
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        // "none [mq-deadline] kyber": the one in brackets is in use.
        let chosen = text
            .split_whitespace()
            .find_map(|s| s.strip_prefix('[')?.strip_suffix(']'))
            .or_else(|| text.split_whitespace().next());
        chosen
            .unwrap_or_else(|| panic!("{path}: {text:?}"))
            .to_owned()
    }

    fn at(path: PathBuf, is_file: bool) -> Self {
        Self {
            path,
            disk: String::new(),
            kernel_dev: 0,
            is_file,
        }
    }

    /// Finds the disk of `dev`, the userspace `dev_t` of the device (a
    /// partition's is resolved to its whole disk, which is what block
    /// requests report).
    fn resolve_disk(&mut self, dev: u64) {
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        let link = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
        let mut disk_dir =
            fs::canonicalize(&link).unwrap_or_else(|e| panic!("resolving {}: {e}", link.display()));
        if link.join("partition").exists() {
            disk_dir.pop();
        }
        self.disk = disk_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_else(|| panic!("no disk name in {}", disk_dir.display()))
            .to_owned();
        let disk_dev = fs::read_to_string(disk_dir.join("dev"))
            .unwrap_or_else(|e| panic!("reading {}/dev: {e}", disk_dir.display()));
        let (major, minor) = disk_dev
            .trim()
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
            .unwrap_or_else(|| panic!("{}/dev: {disk_dev:?}", disk_dir.display()));
        self.kernel_dev = (major << 20) | minor;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.is_file {
            let _ = fs::remove_file(&self.path);
        }
    }
}
