//! Container identity from a cgroup path.
//!
//! Recognises the kubelet's layouts (systemd and cgroupfs drivers, with
//! containerd, CRI-O and Docker runtimes), plain Docker and systemd units. A
//! prefix before `kubepods` (kind or k3d nodes, nested cgroups) is normal.
//! Anything that does not match gets no container labels — never a panic and
//! never a half-parsed id. A cgroup below a container's (a process's own
//! sub-cgroup) belongs to that container.

/// What a cgroup path says about its owner. Borrowed from the path, so
/// parsing allocates nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Identity<'a> {
    pub container_id: Option<&'a str>,
    pub pod_uid: Option<PodUid<'a>>,
    pub qos_class: Option<QosClass>,
    /// The innermost systemd unit (`foo.service`), outside Kubernetes pods.
    pub systemd_unit: Option<&'a str>,
}

/// A pod UID as it appears in a path: the systemd driver writes `_` for `-`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodUid<'a> {
    raw: &'a str,
}

impl PodUid<'_> {
    /// The UID in its Kubernetes form (`-` separated), written into `out`.
    pub fn write_to(&self, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        for c in self.raw.chars() {
            out.write_char(if c == '_' { '-' } else { c })?;
        }
        Ok(())
    }
}

impl std::fmt::Display for PodUid<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.write_to(f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Guaranteed => "guaranteed",
            Self::Burstable => "burstable",
            Self::BestEffort => "besteffort",
        }
    }
}

/// Parses a cgroup path relative to the cgroup2 root (`/a/b/c`).
pub fn parse(path: &str) -> Identity<'_> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.iter().position(|s| is_kubepods(s)) {
        Some(start) => parse_kubepods(&segments[start..]),
        None => parse_plain(&segments),
    }
}

fn is_kubepods(segment: &str) -> bool {
    segment == "kubepods" || segment == "kubepods.slice" || segment.ends_with("-kubepods.slice")
}

/// `kubepods[.slice]/[qos]/pod<uid>/<container>/…`, both drivers.
fn parse_kubepods<'a>(segments: &[&'a str]) -> Identity<'a> {
    let mut identity = Identity::default();
    let mut rest = segments.iter().skip(1).copied().peekable();
    // QoS level: absent for Guaranteed pods.
    let qos = rest.peek().and_then(|s| qos_of(s));
    if qos.is_some() {
        rest.next();
    }
    let Some(pod) = rest.next().and_then(pod_uid_of) else {
        // `kubepods` itself, or a QoS level cgroup: no pod.
        identity.qos_class = qos;
        return identity;
    };
    identity.qos_class = Some(qos.unwrap_or(QosClass::Guaranteed));
    identity.pod_uid = Some(pod);
    identity.container_id = rest.next().and_then(container_id_of);
    identity
}

fn qos_of(segment: &str) -> Option<QosClass> {
    let name = segment.strip_suffix(".slice").unwrap_or(segment);
    let name = name.rsplit('-').next().unwrap_or(name);
    match name {
        "burstable" => Some(QosClass::Burstable),
        "besteffort" => Some(QosClass::BestEffort),
        _ => None,
    }
}

/// `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid>.slice` (systemd).
fn pod_uid_of(segment: &str) -> Option<PodUid<'_>> {
    let name = segment.strip_suffix(".slice").unwrap_or(segment);
    let uid = match name.rfind("-pod") {
        Some(i) if segment.ends_with(".slice") => &name[i + 4..],
        _ => name.strip_prefix("pod")?,
    };
    is_uid(uid).then_some(PodUid { raw: uid })
}

/// 36 characters of hex digits and `-` (or `_`) in the UUID positions.
fn is_uid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-' || c == '_',
            _ => c.is_ascii_hexdigit(),
        })
}

/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`, or a
/// bare `<id>` (cgroupfs driver). `crio-conmon-<id>.scope` is the monitor, not
/// the container.
fn container_id_of(segment: &str) -> Option<&str> {
    let id = match segment.strip_suffix(".scope") {
        Some(scope) => ["cri-containerd-", "crio-", "docker-", "containerd-"]
            .iter()
            .find_map(|prefix| scope.strip_prefix(prefix))?,
        None => segment,
    };
    is_container_id(id).then_some(id)
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Docker outside Kubernetes, and systemd units.
fn parse_plain<'a>(segments: &[&'a str]) -> Identity<'a> {
    let mut identity = Identity::default();
    for (i, segment) in segments.iter().enumerate() {
        if *segment == "docker"
            && let Some(id) = segments.get(i + 1).copied().filter(|s| is_container_id(s))
        {
            identity.container_id = Some(id);
            return identity;
        }
        if let Some(id) = container_id_of(segment).filter(|_| segment.ends_with(".scope")) {
            identity.container_id = Some(id);
            return identity;
        }
        if is_systemd_unit(segment) {
            identity.systemd_unit = Some(segment);
        }
    }
    identity
}

fn is_systemd_unit(segment: &str) -> bool {
    [".service", ".scope", ".socket", ".mount"]
        .iter()
        .any(|suffix| segment.len() > suffix.len() && segment.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4e1f8a2c9b7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f";

    fn uid(identity: &Identity<'_>) -> Option<String> {
        identity.pod_uid.map(|u| u.to_string())
    }

    #[test]
    fn systemd_driver_burstable_containerd() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f6a8b3c_1d2e_4f5a_8b9c_0d1e2f3a4b5c.slice/cri-containerd-{ID}.scope"
        );
        let identity = parse(&path);
        assert_eq!(identity.container_id, Some(ID));
        assert_eq!(
            uid(&identity).as_deref(),
            Some("0f6a8b3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c")
        );
        assert_eq!(identity.qos_class, Some(QosClass::Burstable));
        assert_eq!(identity.systemd_unit, None);
    }

    #[test]
    fn systemd_driver_guaranteed_crio_and_besteffort_docker() {
        let guaranteed = format!(
            "/kubepods.slice/kubepods-pod0f6a8b3c_1d2e_4f5a_8b9c_0d1e2f3a4b5c.slice/crio-{ID}.scope"
        );
        let identity = parse(&guaranteed);
        assert_eq!(identity.qos_class, Some(QosClass::Guaranteed));
        assert_eq!(identity.container_id, Some(ID));

        let besteffort = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f6a8b3c_1d2e_4f5a_8b9c_0d1e2f3a4b5c.slice/docker-{ID}.scope"
        );
        let identity = parse(&besteffort);
        assert_eq!(identity.qos_class, Some(QosClass::BestEffort));
        assert_eq!(identity.container_id, Some(ID));
    }

    #[test]
    fn cgroupfs_driver_with_every_qos() {
        for (qos_dir, qos) in [
            ("/burstable", QosClass::Burstable),
            ("/besteffort", QosClass::BestEffort),
            ("", QosClass::Guaranteed),
        ] {
            let path = format!("/kubepods{qos_dir}/pod0f6a8b3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c/{ID}");
            let identity = parse(&path);
            assert_eq!(identity.qos_class, Some(qos), "{path}");
            assert_eq!(identity.container_id, Some(ID), "{path}");
            assert_eq!(
                uid(&identity).as_deref(),
                Some("0f6a8b3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c")
            );
        }
    }

    #[test]
    fn a_prefix_before_kubepods_is_normal() {
        let kind = format!(
            "/system.slice/docker-{ID}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod0f6a8b3c_1d2e_4f5a_8b9c_0d1e2f3a4b5c.slice/cri-containerd-{}.scope",
            "a".repeat(64)
        );
        let identity = parse(&kind);
        // The pod's container, not the kind node's own Docker container.
        assert_eq!(identity.container_id, Some("a".repeat(64).as_str()));
        assert_eq!(identity.qos_class, Some(QosClass::Burstable));

        let k3d = format!("/kubepods/besteffort/pod0f6a8b3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c/{ID}");
        assert_eq!(parse(&format!("/k3d-node{k3d}")).container_id, Some(ID));
    }

    #[test]
    fn sub_cgroups_of_a_container_belong_to_it() {
        let path = format!("/kubepods/pod0f6a8b3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c/{ID}/init.scope");
        assert_eq!(parse(&path).container_id, Some(ID));
    }

    #[test]
    fn pod_and_qos_level_cgroups_have_no_container() {
        let pod = parse(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f6a8b3c_1d2e_4f5a_8b9c_0d1e2f3a4b5c.slice",
        );
        assert_eq!(pod.container_id, None);
        assert!(pod.pod_uid.is_some());
        let qos = parse("/kubepods.slice/kubepods-besteffort.slice");
        assert_eq!(
            qos,
            Identity {
                qos_class: Some(QosClass::BestEffort),
                ..Identity::default()
            }
        );
        assert_eq!(parse("/kubepods.slice"), Identity::default());
    }

    #[test]
    fn plain_docker_and_systemd_units() {
        assert_eq!(parse(&format!("/docker/{ID}")).container_id, Some(ID));
        assert_eq!(
            parse(&format!("/system.slice/docker-{ID}.scope")).container_id,
            Some(ID)
        );
        let unit = parse("/system.slice/containerd.service");
        assert_eq!(unit.systemd_unit, Some("containerd.service"));
        assert_eq!(unit.container_id, None);
        let user = parse("/user.slice/user-1000.slice/session-3.scope");
        assert_eq!(user.systemd_unit, Some("session-3.scope"));
    }

    #[test]
    fn malformed_paths_get_no_container_labels() {
        for path in [
            "",
            "/",
            "//",
            "/kubepods",
            "/kubepods/burstable/podnot-a-uid/abc",
            "/kubepods/burstable/pod0f6a8b3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c/not-hex-not-64",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod.slice/cri-containerd-.scope",
            "/docker/abc",
            "/system.slice/docker-.scope",
            "/system.slice/docker-xyz.scope",
            "/\u{e9}\u{e9}/kubepods/\u{1F600}",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f6a8b3c_1d2e_4f5a_8b9c_0d1e2f3a4b5c.slice/cri-containerd-4e1f8a2c9b7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1.scope",
        ] {
            assert_eq!(parse(path).container_id, None, "{path:?}");
        }
        let conmon = format!(
            "/kubepods.slice/kubepods-pod0f6a8b3c_1d2e_4f5a_8b9c_0d1e2f3a4b5c.slice/crio-conmon-{ID}.scope"
        );
        assert_eq!(parse(&conmon).container_id, None);
    }
}
