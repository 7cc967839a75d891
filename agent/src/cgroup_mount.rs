//! Where cgroup2 is mounted, found from `/proc/self/mountinfo`.
//!
//! Pure cgroup v2 nodes mount it at `/sys/fs/cgroup`; hybrid ones at
//! `/sys/fs/cgroup/unified` (ids only, controllers stay on v1). The probes'
//! cgroup ids are inode numbers of directories in this mount.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

const MOUNTINFO: &str = "/proc/self/mountinfo";

#[derive(Debug, thiserror::Error)]
pub enum CgroupMountError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "no cgroup2 filesystem is mounted (per {path}); mount one with \
         `mount -t cgroup2 none /sys/fs/cgroup/unified`, or pass --cgroup-root"
    )]
    NoCgroup2 { path: PathBuf },
    #[error("{path} is not a cgroup2 directory (it has no cgroup.procs)")]
    NotCgroup2 { path: PathBuf },
}

/// The cgroup2 root: given explicitly, or the mount point found in mountinfo.
pub fn cgroup2_root(explicit: Option<&Path>) -> Result<PathBuf, CgroupMountError> {
    let root = match explicit {
        Some(path) => path.to_owned(),
        None => {
            let path = PathBuf::from(MOUNTINFO);
            let text = fs::read_to_string(&path).map_err(|source| CgroupMountError::Read {
                path: path.clone(),
                source,
            })?;
            find_cgroup2(&text).ok_or(CgroupMountError::NoCgroup2 { path })?
        }
    };
    if root.join("cgroup.procs").is_file() {
        return Ok(root);
    }
    // A hybrid node's /sys/fs/cgroup (e.g. mounted into a DaemonSet pod) is
    // the v1 tmpfs; its cgroup2 mount is `unified` inside.
    let unified = root.join("unified");
    if unified.join("cgroup.procs").is_file() {
        return Ok(unified);
    }
    Err(CgroupMountError::NotCgroup2 { path: root })
}

/// The mount point of the cgroup2 mount whose root is the hierarchy's root,
/// preferring `/sys/fs/cgroup` if several exist. Lines that do not parse are
/// skipped.
pub fn find_cgroup2(mountinfo: &str) -> Option<PathBuf> {
    let mut found: Option<PathBuf> = None;
    for line in mountinfo.lines() {
        // id parent major:minor root mount-point options [optional...] - fstype source super-options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() != Some("cgroup2") {
            continue;
        }
        let mut fields = left.split_whitespace();
        let (Some(root), Some(mount_point)) = (fields.nth(3), fields.next()) else {
            continue;
        };
        if root != "/" {
            // A bind mount of a sub-tree: ids would resolve to wrong paths.
            continue;
        }
        let mount_point = PathBuf::from(unescape_octal(mount_point));
        if mount_point == Path::new("/sys/fs/cgroup") {
            return Some(mount_point);
        }
        found.get_or_insert(mount_point);
    }
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 31 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
27 25 0:25 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
28 27 0:26 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
29 27 0:27 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
33 27 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu,cpuacct
";
    const PURE_V2: &str = "\
24 29 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 24 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn finds_the_unified_mount_of_a_hybrid_node() {
        assert_eq!(
            find_cgroup2(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn finds_the_root_mount_of_a_pure_v2_node() {
        assert_eq!(find_cgroup2(PURE_V2), Some(PathBuf::from("/sys/fs/cgroup")));
    }

    #[test]
    fn prefers_sys_fs_cgroup_and_skips_subtree_bind_mounts() {
        let text = "\
40 1 0:50 / /host/cgroup rw - cgroup2 cgroup2 rw
41 1 0:50 /kubepods /var/lib/x rw - cgroup2 cgroup2 rw
42 1 0:50 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
";
        assert_eq!(find_cgroup2(text), Some(PathBuf::from("/sys/fs/cgroup")));
        let only_subtree = "41 1 0:50 /kubepods /var/lib/x rw - cgroup2 cgroup2 rw\n";
        assert_eq!(find_cgroup2(only_subtree), None);
    }

    #[test]
    fn malformed_lines_and_escapes() {
        let text = "garbage\n\n1 2 3\n40 1 0:50 / /mnt/my\\040cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(find_cgroup2(text), Some(PathBuf::from("/mnt/my cgroup")));
        assert_eq!(find_cgroup2("no cgroups here - tmpfs x y\n"), None);
    }

    #[test]
    fn an_explicit_hybrid_root_means_its_unified_mount() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("unified")).expect("mkdir");
        std::fs::write(dir.path().join("unified/cgroup.procs"), "").expect("write");
        assert_eq!(
            cgroup2_root(Some(dir.path())).ok(),
            Some(dir.path().join("unified"))
        );
    }

    #[test]
    fn an_explicit_root_that_is_not_cgroup2_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = cgroup2_root(Some(dir.path())).expect_err("not a cgroup");
        assert!(
            err.to_string().contains("is not a cgroup2 directory"),
            "{err}"
        );
    }
}
