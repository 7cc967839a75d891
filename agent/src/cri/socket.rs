//! Finding the container runtime's CRI socket, in the order people expect:
//! the `--cri-socket` flag (or `STALLWATCH_CRI_SOCKET`), then containerd
//! (plain, k3s, microk8s), CRI-O, cri-dockerd.

use std::{
    os::unix::fs::FileTypeExt as _,
    path::{Path, PathBuf},
};

/// Where runtimes put their CRI socket, most common first.
pub const WELL_KNOWN: [&str; 6] = [
    "/run/containerd/containerd.sock",
    "/run/k3s/containerd/containerd.sock",
    "/var/snap/microk8s/common/run/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/crio/crio.sock",
    "/run/cri-dockerd.sock",
];

/// The first of `candidates`, below `root` (`/`, or where the host's
/// filesystem is mounted in a pod), that is a socket.
pub fn discover(root: &Path, candidates: &[&str]) -> Option<PathBuf> {
    candidates
        .iter()
        .map(|c| root.join(c.trim_start_matches('/')))
        .find(|path| {
            std::fs::metadata(path)
                .map(|m| m.file_type().is_socket())
                .unwrap_or(false)
        })
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    #[test]
    fn the_first_socket_in_order_wins_and_plain_files_do_not_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        assert_eq!(discover(root, &WELL_KNOWN), None);

        std::fs::create_dir_all(root.join("run/crio")).expect("mkdir");
        let _crio = UnixListener::bind(root.join("run/crio/crio.sock")).expect("bind");
        std::fs::create_dir_all(root.join("run/containerd")).expect("mkdir");
        std::fs::write(root.join("run/containerd/containerd.sock"), "not a socket").expect("write");
        assert_eq!(
            discover(root, &WELL_KNOWN),
            Some(root.join("run/crio/crio.sock"))
        );

        std::fs::remove_file(root.join("run/containerd/containerd.sock")).expect("rm");
        let _containerd =
            UnixListener::bind(root.join("run/containerd/containerd.sock")).expect("bind");
        assert_eq!(
            discover(root, &WELL_KNOWN),
            Some(root.join("run/containerd/containerd.sock"))
        );
    }
}
