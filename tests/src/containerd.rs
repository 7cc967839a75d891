//! A real containerd (Debian's, with runc) on a private socket and state
//! directory, and the CRI calls the kubelet makes to run a pod on it.
//!
//! Everything lives in a fresh directory under `/tmp`; pods are made under
//! pod cgroups this harness creates beneath its own v1 memory cgroup (on
//! hybrid hosts), as the kubelet makes them. Dropping it removes the pods,
//! stops containerd, unmounts and removes whatever is left.

use std::{
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxContainerConfig,
    LinuxContainerResources, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
    runtime_service_client::RuntimeServiceClient,
};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{MadeDirs, pure_v2, test_cgroup_prefix};

/// The image every pod and container here runs: busybox, built locally.
pub const IMAGE: &str = "stallwatch.test/busybox:1";

/// Where the runc shim puts its sockets, whatever the configuration says.
const SHIM_SOCKETS: &str = "/run/containerd/s";

pub struct Containerd {
    dir: PathBuf,
    /// Whether `/run/containerd` was there before: if not, it is removed.
    had_run_dir: bool,
    pub socket: PathBuf,
    child: Option<Child>,
    runtime: tokio::runtime::Runtime,
    client: Option<RuntimeServiceClient<Channel>>,
    sandboxes: Vec<String>,
    /// Pod cgroups made for the pods, in every hierarchy.
    pod_cgroups: Vec<MadeDirs>,
}

/// A pod as the kubelet describes it.
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub sandbox_id: String,
    config: PodSandboxConfig,
}

impl Containerd {
    /// Starts containerd and imports [`IMAGE`]; panics with its log if it
    /// does not come up.
    pub fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("stallwatch-containerd-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("cni/conf"))
            .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let socket = dir.join("containerd.sock");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("a tokio runtime: {e}"));
        let mut containerd = Self {
            had_run_dir: Path::new(SHIM_SOCKETS).parent().is_some_and(Path::exists),
            dir,
            socket,
            child: None,
            runtime,
            client: None,
            sandboxes: Vec::new(),
            pod_cgroups: Vec::new(),
        };
        fs::write(containerd.dir.join("config.toml"), containerd.config())
            .unwrap_or_else(|e| panic!("writing containerd's config: {e}"));
        containerd.launch();
        containerd.import_image();
        containerd
    }

    fn config(&self) -> String {
        let d = self.dir.display();
        format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Pods ask for an OOM score below this process's; lowering it needs
  # CAP_SYS_RESOURCE, which root here lacks.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/conf"
"#
        )
    }

    /// Starts the daemon and waits until it answers CRI calls.
    fn launch(&mut self) {
        let log = fs::File::create(self.dir.join("containerd.log"))
            .unwrap_or_else(|e| panic!("creating containerd's log: {e}"));
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group, so a Ctrl-C of the tests leaves it to Drop.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting containerd (cargo xtask setup installs it): {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.socket.exists() && self.connect().is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!("containerd did not come up; its log:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn connect(&mut self) -> Result<(), String> {
        let socket = self.socket.clone();
        let channel = self.runtime.block_on(async move {
            Endpoint::from_static("http://localhost")
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let socket = socket.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(socket).await?,
                        ))
                    }
                }))
                .await
        });
        let mut client = RuntimeServiceClient::new(channel.map_err(|e| e.to_string())?);
        self.runtime
            .block_on(client.version(k8s_cri::v1::VersionRequest::default()))
            .map_err(|e| e.to_string())?;
        self.client = Some(client);
        Ok(())
    }

    /// An agent that names containers from this containerd, refreshing its
    /// names and cgroups every second; `extra` are more flags.
    pub fn agent(&self, extra: &[&str]) -> crate::Agent {
        let socket = self.socket.display().to_string();
        let mut args = vec![
            "--cri-socket",
            &socket,
            "--cri-refresh-interval",
            "1s",
            "--cgroup-rescan-interval",
            "1s",
        ];
        args.extend_from_slice(extra);
        crate::Agent::start(&args)
    }

    /// Stops the daemon with `signal`; pods keep running under their shims.
    fn signal(&mut self, signal: libc::c_int) {
        self.client = None;
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's PID.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
            let _ = child.wait();
        }
    }

    /// Kills the daemon (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
    }

    /// Starts the daemon again on the same state.
    pub fn restart(&mut self) {
        self.signal(libc::SIGTERM);
        self.launch();
    }

    /// The last lines of containerd's log and of runc's logs of the
    /// containers it has, for failure messages.
    pub fn log(&self) -> String {
        let tail = |text: String, n: usize| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        let mut out = tail(
            fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default(),
            15,
        );
        let tasks = self.dir.join("state/io.containerd.runtime.v2.task/k8s.io");
        for task in fs::read_dir(&tasks)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            let runc = fs::read_to_string(task.path().join("log.json")).unwrap_or_default();
            out.push_str(&format!(
                "\nrunc log of {}:\n{}",
                task.path().display(),
                tail(runc, 10)
            ));
        }
        out
    }

    /// Builds [`IMAGE`] from this machine's static busybox (one layer:
    /// `/bin/busybox` and `/bin/sh`) as a docker archive, and imports it
    /// into the `k8s.io` namespace the CRI uses.
    fn import_image(&self) {
        let image = self.dir.join("image");
        let rootfs = image.join("rootfs/bin");
        let out = image.join("out");
        fs::create_dir_all(&rootfs).unwrap_or_else(|e| panic!("mkdir: {e}"));
        fs::create_dir_all(&out).unwrap_or_else(|e| panic!("mkdir: {e}"));
        fs::copy("/bin/busybox", rootfs.join("busybox"))
            .unwrap_or_else(|e| panic!("copying /bin/busybox (busybox-static): {e}"));
        std::os::unix::fs::symlink("busybox", rootfs.join("sh"))
            .unwrap_or_else(|e| panic!("symlink: {e}"));
        run(Command::new("tar")
            .arg("-C")
            .arg(image.join("rootfs"))
            .arg("-cf")
            .arg(out.join("layer.tar"))
            .arg("bin"));
        let layer = sha256(&out.join("layer.tar"));
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/busybox","sleep","86400"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer}"]}}}}"#
        );
        fs::write(out.join("config.json"), &config).unwrap_or_else(|e| panic!("write: {e}"));
        let config_digest = sha256(&out.join("config.json"));
        fs::rename(
            out.join("config.json"),
            out.join(format!("{config_digest}.json")),
        )
        .unwrap_or_else(|e| panic!("rename: {e}"));
        fs::write(
            out.join("manifest.json"),
            format!(r#"[{{"Config":"{config_digest}.json","RepoTags":["{IMAGE}"],"Layers":["layer.tar"]}}]"#),
        )
        .unwrap_or_else(|e| panic!("write: {e}"));
        run(Command::new("tar")
            .arg("-C")
            .arg(&out)
            .arg("-cf")
            .arg(image.join("image.tar"))
            .arg("."));
        run(Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "k8s.io", "images", "import"])
            .arg(image.join("image.tar")));
    }

    fn client(&mut self) -> RuntimeServiceClient<Channel> {
        if self.client.is_none() {
            self.connect()
                .unwrap_or_else(|e| panic!("connecting to containerd: {e}\n{}", self.log()));
        }
        self.client
            .clone()
            .unwrap_or_else(|| panic!("no CRI client"))
    }

    /// `RunPodSandbox` for a pod with host networking (no CNI needed), under
    /// a kubelet-style pod cgroup `…/kubepods/burstable/pod<uid>` made here.
    pub fn run_pod(&mut self, name: &str, namespace: &str, uid: &str) -> Pod {
        let cgroup_parent = self.make_pod_cgroup(uid);
        let logs = self.dir.join("logs").join(uid);
        fs::create_dir_all(&logs).unwrap_or_else(|e| panic!("mkdir: {e}"));
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_owned(),
                uid: uid.to_owned(),
                namespace: namespace.to_owned(),
                attempt: 0,
            }),
            // Host-network pods keep the node's hostname, as the kubelet leaves it.
            log_directory: logs.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent,
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..NamespaceOption::default()
                    }),
                    ..LinuxSandboxSecurityContext::default()
                }),
                ..LinuxPodSandboxConfig::default()
            }),
            ..PodSandboxConfig::default()
        };
        let mut client = self.client();
        let response = self
            .runtime
            .block_on(client.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            }))
            .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", self.log()));
        let sandbox_id = response.into_inner().pod_sandbox_id;
        self.sandboxes.push(sandbox_id.clone());
        Pod {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            uid: uid.to_owned(),
            sandbox_id,
            config,
        }
    }

    /// `CreateContainer` + `StartContainer` of `command`, limited to
    /// `cpu_quota_us` per 100 ms (0: no limit), with `cpu_shares` (the
    /// kubelet's 1024 per requested core; 0: the runtime's default);
    /// returns the container id.
    pub fn start_container(
        &mut self,
        pod: &Pod,
        name: &str,
        command: &[&str],
        cpu_quota_us: i64,
        cpu_shares: i64,
    ) -> String {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.to_owned(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: IMAGE.to_owned(),
                ..ImageSpec::default()
            }),
            command: command.iter().map(|c| (*c).to_owned()).collect(),
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    cpu_period: 100_000,
                    cpu_quota: cpu_quota_us,
                    cpu_shares,
                    ..LinuxContainerResources::default()
                }),
                ..LinuxContainerConfig::default()
            }),
            ..ContainerConfig::default()
        };
        let mut client = self.client();
        let created = self
            .runtime
            .block_on(client.create_container(CreateContainerRequest {
                pod_sandbox_id: pod.sandbox_id.clone(),
                config: Some(config),
                sandbox_config: Some(pod.config.clone()),
            }))
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", self.log()));
        let id = created.into_inner().container_id;
        self.runtime
            .block_on(client.start_container(StartContainerRequest {
                container_id: id.clone(),
            }))
            .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", self.log()));
        id
    }

    /// `StopPodSandbox` + `RemovePodSandbox`: its containers go with it.
    pub fn remove_pod(&mut self, sandbox_id: &str) {
        if let Err(e) = self.try_remove_pod(sandbox_id) {
            panic!("removing pod {sandbox_id}: {e}\n{}", self.log());
        }
    }

    fn try_remove_pod(&mut self, sandbox_id: &str) -> Result<(), tonic::Status> {
        let mut client = self
            .client
            .clone()
            .ok_or_else(|| tonic::Status::unavailable("not connected"))?;
        let id = sandbox_id.to_owned();
        self.runtime
            .block_on(client.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            }))?;
        self.runtime
            .block_on(client.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }))?;
        self.sandboxes.retain(|s| s != sandbox_id);
        Ok(())
    }

    /// The pod's cgroup in every hierarchy, as the kubelet makes it, and its
    /// path for `cgroup_parent`. On hybrid hosts it lies beneath this
    /// process's own v1 memory cgroup in every hierarchy, so no process
    /// leaves the memory cgroup it started in.
    fn make_pod_cgroup(&mut self, uid: &str) -> String {
        let parent = format!(
            "{}/stallwatch-cri-{}/kubepods/burstable/pod{uid}",
            test_cgroup_prefix(),
            std::process::id()
        );
        for (root, controllers) in hierarchies() {
            self.pod_cgroups
                .push(MadeDirs::create(&root, &parent, controllers));
        }
        parent
    }
}

/// Every cgroup hierarchy: `/sys/fs/cgroup` on pure v2 (with the
/// controllers to enable), else each mounted v1 hierarchy and `unified`.
fn hierarchies() -> Vec<(PathBuf, Option<&'static str>)> {
    let root = Path::new("/sys/fs/cgroup");
    if pure_v2() {
        return vec![(root.to_owned(), Some("+cpu +memory"))];
    }
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|p| p.join("cgroup.procs").exists())
        .map(|p| (p, None))
        .collect()
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            for sandbox in self.sandboxes.clone() {
                if let Some(mut client) = self.client.clone() {
                    let _ = self
                        .runtime
                        .block_on(client.stop_pod_sandbox(StopPodSandboxRequest {
                            pod_sandbox_id: sandbox.clone(),
                        }));
                    let _ =
                        self.runtime
                            .block_on(client.remove_pod_sandbox(RemovePodSandboxRequest {
                                pod_sandbox_id: sandbox,
                            }));
                }
            }
        }
        self.signal(libc::SIGTERM);
        // Mounts containerd left (a pod's /dev/shm, a container's rootfs).
        if let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") {
            let dir = self.dir.display().to_string();
            let mut mounts: Vec<&str> = mountinfo
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|m| m.starts_with(&dir))
                .collect();
            mounts.reverse();
            for mount in mounts {
                if let Ok(path) = std::ffi::CString::new(mount) {
                    // SAFETY: a valid C string; detaching a mount under our own directory.
                    unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
                }
            }
        }
        self.pod_cgroups.clear();
        if !self.had_run_dir {
            let sockets = Path::new(SHIM_SOCKETS);
            let _ = fs::remove_dir(sockets);
            if let Some(run) = sockets.parent() {
                let _ = fs::remove_dir(run);
            }
        }
        if fs::remove_dir_all(&self.dir).is_err() {
            eprintln!("warning: could not remove {}", self.dir.display());
        }
    }
}

fn run(command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("running sha256sum: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}
