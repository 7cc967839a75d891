//! cgroup id → cgroup path, by walking the cgroup2 tree.
//!
//! A cgroup v2 id, as the probes see it, is the inode number of the cgroup's
//! directory. The walk is cached; the collector rescans when it meets an id
//! it does not know (at most once per `min_rescan`) and at least every
//! `max_age`, and forgets cgroups that are gone, so memory stays flat under
//! container churn. Cgroup ids are never reused, so a forgotten id can be
//! deleted from the kernel maps for good.

use std::{
    collections::HashMap,
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use agent_ebpf::CgroupId;

use crate::labels::CgroupLabels;

#[derive(Debug, thiserror::Error)]
pub enum CgroupTreeError {
    #[error("reading cgroup directory {path}: {source}")]
    ReadDir { path: PathBuf, source: io::Error },
}

/// The known cgroups of one cgroup2 hierarchy.
#[derive(Debug)]
pub struct CgroupTree {
    root: PathBuf,
    by_id: HashMap<CgroupId, CgroupLabels>,
    last_scan: Option<Instant>,
    min_rescan: Duration,
    max_age: Duration,
}

impl CgroupTree {
    pub fn new(root: PathBuf, min_rescan: Duration, max_age: Duration) -> Self {
        Self {
            root,
            by_id: HashMap::new(),
            last_scan: None,
            min_rescan,
            max_age,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The labels of cgroup `id`, if the last scan saw it.
    pub fn get(&self, id: CgroupId) -> Option<&CgroupLabels> {
        self.by_id.get(&id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Every known cgroup.
    pub fn iter(&self) -> impl Iterator<Item = (CgroupId, &CgroupLabels)> {
        self.by_id.iter().map(|(id, labels)| (*id, labels))
    }

    /// Every known cgroup's labels, to add names to.
    pub fn labels_mut(&mut self) -> impl Iterator<Item = &mut CgroupLabels> {
        self.by_id.values_mut()
    }

    /// When the last completed scan started.
    pub fn last_scan(&self) -> Option<Instant> {
        self.last_scan
    }

    /// Whether a scan should run now: `missed` says an id was not found.
    pub fn scan_due(&self, now: Instant, missed: bool) -> bool {
        match self.last_scan {
            None => true,
            Some(last) => {
                let age = now.saturating_duration_since(last);
                age >= self.max_age || (missed && age >= self.min_rescan)
            }
        }
    }

    /// Walks the whole tree again. Labels of cgroups already known are kept
    /// (their path cannot change: a renamed cgroup directory is refused by
    /// the kernel), new ones are parsed once, vanished ones are dropped.
    pub fn scan(&mut self, now: Instant) -> Result<(), CgroupTreeError> {
        let mut found: HashMap<CgroupId, CgroupLabels> = HashMap::with_capacity(self.by_id.len());
        let mut stack = vec![(self.root.clone(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                // Removed while we walked: it is gone, so is its subtree.
                Err(e) if e.kind() == io::ErrorKind::NotFound && dir != self.root => continue,
                Err(source) => return Err(CgroupTreeError::ReadDir { path: dir, source }),
            };
            let id = match fs::metadata(&dir) {
                Ok(meta) => meta.ino(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(CgroupTreeError::ReadDir { path: dir, source }),
            };
            let labels = match self.by_id.remove(&id) {
                Some(known) => known,
                None => CgroupLabels::from_path(if rel.is_empty() { "/" } else { &rel }),
            };
            found.insert(id, labels);
            for entry in entries.flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    // Not UTF-8: cannot be a label value; skip the subtree.
                    continue;
                };
                stack.push((entry.path(), format!("{rel}/{name}")));
            }
        }
        self.by_id = found;
        self.last_scan = Some(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ino(path: &Path) -> u64 {
        fs::metadata(path).map(|m| m.ino()).unwrap_or(0)
    }

    #[test]
    fn resolves_ids_to_paths_and_forgets_vanished_cgroups() {
        let root = tempfile::tempdir().expect("tempdir");
        let pod = root
            .path()
            .join("kubepods/burstable/pod0f6a8b3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c");
        let container = pod.join("a".repeat(64));
        fs::create_dir_all(&container).expect("mkdir");
        let mut tree = CgroupTree::new(
            root.path().to_owned(),
            Duration::from_secs(1),
            Duration::from_secs(10),
        );
        let t0 = Instant::now();
        assert!(tree.scan_due(t0, false));
        tree.scan(t0).expect("scan");

        assert_eq!(
            tree.get(ino(root.path())).map(|l| l.cgroup.as_str()),
            Some("/")
        );
        let labels = tree.get(ino(&container)).expect("container known");
        assert_eq!(
            labels.cgroup,
            format!(
                "/kubepods/burstable/pod0f6a8b3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c/{}",
                "a".repeat(64)
            )
        );
        assert_eq!(
            labels.container_id.as_deref(),
            Some("a".repeat(64).as_str())
        );
        assert_eq!(tree.len(), 5);

        let gone = ino(&container);
        fs::remove_dir(&container).expect("rmdir");
        tree.scan(t0).expect("rescan");
        assert!(tree.get(gone).is_none());
        assert_eq!(tree.len(), 4);
    }

    #[test]
    fn rescans_on_a_miss_at_most_once_per_interval_and_always_when_old() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut tree = CgroupTree::new(
            root.path().to_owned(),
            Duration::from_secs(1),
            Duration::from_secs(10),
        );
        let t0 = Instant::now();
        tree.scan(t0).expect("scan");
        assert!(!tree.scan_due(t0 + Duration::from_millis(500), true));
        assert!(tree.scan_due(t0 + Duration::from_millis(1500), true));
        assert!(!tree.scan_due(t0 + Duration::from_secs(5), false));
        assert!(tree.scan_due(t0 + Duration::from_secs(11), false));
    }

    #[test]
    fn a_missing_root_is_an_error_naming_it() {
        let mut tree = CgroupTree::new(
            PathBuf::from("/nonexistent/cgroup"),
            Duration::ZERO,
            Duration::ZERO,
        );
        let err = tree.scan(Instant::now()).expect_err("no root");
        assert!(
            err.to_string()
                .starts_with("reading cgroup directory /nonexistent/cgroup"),
            "{err}"
        );
    }
}
