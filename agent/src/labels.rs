//! The label set of every per-cgroup series, in one place.
//!
//! Built once per cgroup when it is discovered, then encoded on every scrape
//! without allocating. Later sources of identity (the container runtime) add
//! their labels here.

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};

use crate::identity::{self, QosClass};

/// Labels of one cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLabels {
    /// The path below the cgroup2 root, `/` for the root itself.
    pub cgroup: String,
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
    pub qos_class: Option<QosClass>,
    pub systemd_unit: Option<String>,
}

impl CgroupLabels {
    /// Labels for the cgroup at `path` (relative to the cgroup2 root).
    pub fn from_path(path: &str) -> Self {
        let identity::Identity {
            container_id,
            pod_uid,
            qos_class,
            systemd_unit,
        } = identity::parse(path);
        Self {
            cgroup: if path.is_empty() {
                "/".to_owned()
            } else {
                path.to_owned()
            },
            container_id: container_id.map(str::to_owned),
            pod_uid: pod_uid.map(|u| u.to_string()),
            qos_class,
            systemd_unit: systemd_unit.map(str::to_owned),
        }
    }
}

impl CgroupLabels {
    /// Whether the cgroup's files are read at scrape time: the node's root,
    /// and what people size and alert on (containers, pods, systemd units),
    /// not every intermediate slice.
    pub fn has_file_stats(&self) -> bool {
        self.cgroup == "/"
            || self.container_id.is_some()
            || self.pod_uid.is_some()
            || self.systemd_unit.is_some()
    }
}

/// A cgroup's labels plus series-specific ones (`event`, `device`, …).
pub struct With<'a, const N: usize>(pub &'a CgroupLabels, pub [(&'a str, &'a str); N]);

impl<const N: usize> EncodeLabelSet for With<'_, N> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelSet::encode(self.0, encoder)?;
        for pair in &self.1 {
            EncodeOne::encode(pair, encoder)?;
        }
        Ok(())
    }
}

impl EncodeLabelSet for CgroupLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Self {
            cgroup,
            container_id,
            pod_uid,
            qos_class,
            systemd_unit,
        } = self;
        // Absent labels are left out: Prometheus treats "" and absent alike.
        ("cgroup", cgroup.as_str()).encode(encoder)?;
        if let Some(v) = container_id {
            ("container_id", v.as_str()).encode(encoder)?;
        }
        if let Some(v) = pod_uid {
            ("pod_uid", v.as_str()).encode(encoder)?;
        }
        if let Some(v) = qos_class {
            ("qos_class", v.as_str()).encode(encoder)?;
        }
        if let Some(v) = systemd_unit {
            ("systemd_unit", v.as_str()).encode(encoder)?;
        }
        Ok(())
    }
}

/// Encodes one `(name, value)` label through the set encoder.
trait EncodeOne {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error>;
}

impl EncodeOne for (&str, &str) {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        prometheus_client::encoding::EncodeLabel::encode(self, encoder.encode_label())
    }
}
