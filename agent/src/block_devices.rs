//! Block device names: `MAJ:MIN` → the kernel's name (`vda`, `nvme0n1`,
//! `dm-0`, a partition's own `sda1`), from the symlinks in
//! `/sys/dev/block/`. Names are cached and re-resolved after
//! [`REFRESH_AFTER`], since a device number can be reused by another disk.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

/// How long a resolved name is trusted.
pub const REFRESH_AFTER: Duration = Duration::from_secs(60);

/// (major, minor) of the kernel's internal `dev_t`, as the block tracepoints
/// report it: 12 bits of major above 20 bits of minor (unlike the userspace
/// `dev_t` of `stat(2)`).
pub const fn kernel_dev(dev: u32) -> (u32, u32) {
    (dev >> 20, dev & 0xf_ffff)
}

#[derive(Debug)]
struct Resolved {
    name: String,
    /// `MAJ:MIN`.
    number: String,
    at: Instant,
}

/// The cache of names; `resolve` fills it, `get` reads it.
#[derive(Debug)]
pub struct DeviceNames {
    /// The sysfs mount (`/sys`; a fixture tree in tests).
    sys: PathBuf,
    names: HashMap<(u32, u32), Resolved>,
}

impl DeviceNames {
    pub fn new(sys: impl Into<PathBuf>) -> Self {
        Self {
            sys: sys.into(),
            names: HashMap::new(),
        }
    }

    /// Makes sure `get(major, minor)` answers, reading sysfs if the device is
    /// new or its name is older than [`REFRESH_AFTER`].
    pub fn resolve(&mut self, major: u32, minor: u32, now: Instant) {
        let fresh = self
            .names
            .get(&(major, minor))
            .is_some_and(|r| now.saturating_duration_since(r.at) < REFRESH_AFTER);
        if fresh {
            return;
        }
        let name = self.read_name(major, minor);
        let number = format!("{major}:{minor}");
        self.names.insert(
            (major, minor),
            Resolved {
                name,
                number,
                at: now,
            },
        );
    }

    /// (name, `MAJ:MIN`) of a resolved device.
    pub fn get(&self, major: u32, minor: u32) -> Option<(&str, &str)> {
        self.names
            .get(&(major, minor))
            .map(|r| (r.name.as_str(), r.number.as_str()))
    }

    /// The last component of the `/sys/dev/block/MAJ:MIN` link's target, or
    /// `MAJ:MIN` itself for a device sysfs does not know (removed since).
    fn read_name(&self, major: u32, minor: u32) -> String {
        let link = self.sys.join(format!("dev/block/{major}:{minor}"));
        std::fs::read_link(&link)
            .ok()
            .and_then(|target| {
                target
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| format!("{major}:{minor}"))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A sysfs with a virtio disk and its partition, and an NVMe namespace,
    /// linked the way the kernel links them.
    fn fixture_sysfs() -> tempfile::TempDir {
        let sys = tempfile::tempdir().expect("tempdir");
        let block = sys.path().join("dev/block");
        std::fs::create_dir_all(&block).expect("mkdir");
        for (number, target) in [
            (
                "254:0",
                "../../devices/pci0000:00/0000:00:04.0/virtio2/block/vda",
            ),
            (
                "254:1",
                "../../devices/pci0000:00/0000:00:04.0/virtio2/block/vda/vda1",
            ),
            (
                "259:0",
                "../../devices/pci0000:00/0000:00:1d.0/nvme/nvme0/nvme0n1",
            ),
        ] {
            symlink(target, block.join(number)).expect("symlink");
        }
        sys
    }

    #[test]
    fn kernel_dev_t_splits_12_bits_of_major_from_20_of_minor() {
        assert_eq!(kernel_dev(0x0fe0_0000), (254, 0));
        assert_eq!(kernel_dev((259 << 20) | 3), (259, 3));
        assert_eq!(kernel_dev((8 << 20) | 0x1_0010), (8, 0x1_0010));
    }

    #[test]
    fn disks_and_partitions_get_their_own_names() {
        let sys = fixture_sysfs();
        let mut names = DeviceNames::new(sys.path());
        let now = Instant::now();
        for (major, minor) in [(254, 0), (254, 1), (259, 0)] {
            names.resolve(major, minor, now);
        }
        assert_eq!(names.get(254, 0), Some(("vda", "254:0")));
        assert_eq!(names.get(254, 1), Some(("vda1", "254:1")));
        assert_eq!(names.get(259, 0), Some(("nvme0n1", "259:0")));
    }

    #[test]
    fn an_unknown_device_is_named_by_its_number() {
        let sys = fixture_sysfs();
        let mut names = DeviceNames::new(sys.path());
        names.resolve(8, 16, Instant::now());
        assert_eq!(names.get(8, 16), Some(("8:16", "8:16")));
        assert_eq!(names.get(8, 32), None, "not resolved");
    }

    #[test]
    fn a_reused_device_number_is_renamed_after_the_refresh_interval() {
        let sys = fixture_sysfs();
        let mut names = DeviceNames::new(sys.path());
        let start = Instant::now();
        names.resolve(259, 0, start);
        let link = sys.path().join("dev/block/259:0");
        std::fs::remove_file(&link).expect("unlink");
        symlink("../../devices/virtual/block/nvme1n1", &link).expect("symlink");
        names.resolve(259, 0, start + Duration::from_secs(1));
        assert_eq!(names.get(259, 0), Some(("nvme0n1", "259:0")), "cached");
        names.resolve(259, 0, start + REFRESH_AFTER);
        assert_eq!(names.get(259, 0), Some(("nvme1n1", "259:0")));
    }
}
