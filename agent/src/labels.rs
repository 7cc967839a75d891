//! The label set of every per-cgroup series, in one place.
//!
//! Built once per cgroup when it is discovered, then encoded on every scrape
//! without allocating. Later sources of identity (the container runtime) add
//! their labels here.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};

use crate::{
    cri::KubeNames,
    identity::{self, QosClass},
};

/// Labels of one cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLabels {
    /// The path below the cgroup2 root, `/` for the root itself.
    pub cgroup: String,
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
    pub qos_class: Option<QosClass>,
    pub systemd_unit: Option<String>,
    /// `namespace`, `pod` and `container`, from the container runtime.
    pub kube: Option<Arc<KubeNames>>,
    /// Leave the `cgroup` label out (`--drop-cgroup-label`, names known).
    pub omit_cgroup: bool,
    /// Export nothing for this cgroup (a namespace filtered out, or a
    /// sandbox with `--cri-sandboxes drop`).
    pub hidden: bool,
}

/// What the container runtime's names do to labels (`--drop-cgroup-label`,
/// `--cri-sandboxes`, `--namespaces`, `--exclude-namespaces`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamePolicy {
    pub drop_cgroup_label: bool,
    pub drop_sandboxes: bool,
    /// Only these namespaces, if any are given.
    pub namespaces: Vec<String>,
    pub exclude_namespaces: Vec<String>,
}

impl NamePolicy {
    /// Gives `labels` the runtime's `names` (or none) under this policy.
    pub fn apply(&self, labels: &mut CgroupLabels, names: Option<Arc<KubeNames>>) {
        labels.omit_cgroup = self.drop_cgroup_label && names.is_some();
        labels.hidden = names.as_deref().is_some_and(|n| {
            (self.drop_sandboxes && n.sandbox)
                || (!self.namespaces.is_empty() && !self.namespaces.contains(&n.namespace))
                || self.exclude_namespaces.contains(&n.namespace)
        });
        labels.kube = names;
    }
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
            kube: None,
            omit_cgroup: false,
            hidden: false,
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
            kube,
            omit_cgroup,
            hidden: _,
        } = self;
        // Absent labels are left out: Prometheus treats "" and absent alike.
        if !omit_cgroup {
            ("cgroup", cgroup.as_str()).encode(encoder)?;
        }
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
        if let Some(names) = kube {
            ("namespace", names.namespace.as_str()).encode(encoder)?;
            ("pod", names.pod.as_str()).encode(encoder)?;
            if let Some(container) = &names.container {
                ("container", container.as_str()).encode(encoder)?;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(namespace: &str, container: &str, sandbox: bool) -> Option<Arc<KubeNames>> {
        Some(Arc::new(KubeNames {
            namespace: namespace.into(),
            pod: "web-0".into(),
            container: Some(container.into()),
            image: None,
            runtime: "containerd".into(),
            sandbox,
        }))
    }

    fn encoded(labels: &CgroupLabels) -> String {
        use prometheus_client::{
            collector::Collector, encoding::DescriptorEncoder, metrics::MetricType,
        };
        #[derive(Debug)]
        struct One(CgroupLabels);
        impl Collector for One {
            fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
                let mut metric = encoder.encode_descriptor("x", "x", None, MetricType::Gauge)?;
                metric.encode_family(&self.0)?.encode_gauge(&1i64)
            }
        }
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(One(labels.clone())));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap_or_default();
        out.lines()
            .find(|l| l.starts_with("x{"))
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn kubernetes_names_are_labels_and_the_cgroup_label_can_go() {
        let mut labels =
            CgroupLabels::from_path("/kubepods/besteffort/pod0a1b2c3d-4e5f-4a5b-8c9d-0e1f2a3b4c5d");
        NamePolicy::default().apply(&mut labels, names("shop", "nginx", false));
        let line = encoded(&labels);
        assert!(
            line.contains(r#"namespace="shop",pod="web-0",container="nginx""#),
            "{line}"
        );
        assert!(line.contains("cgroup="), "{line}");

        let policy = NamePolicy {
            drop_cgroup_label: true,
            ..NamePolicy::default()
        };
        policy.apply(&mut labels, names("shop", "nginx", false));
        assert!(!encoded(&labels).contains("cgroup="));
        // Without names the path is all there is: it stays.
        policy.apply(&mut labels, None);
        assert!(encoded(&labels).contains("cgroup="));
    }

    #[test]
    fn namespaces_and_sandboxes_can_be_left_out() {
        let mut labels = CgroupLabels::from_path("/a");
        let only_shop = NamePolicy {
            namespaces: vec!["shop".into()],
            ..NamePolicy::default()
        };
        only_shop.apply(&mut labels, names("shop", "nginx", false));
        assert!(!labels.hidden);
        only_shop.apply(&mut labels, names("kube-system", "dns", false));
        assert!(labels.hidden);
        only_shop.apply(&mut labels, None);
        assert!(!labels.hidden, "cgroups without names are not filtered");

        let no_system = NamePolicy {
            exclude_namespaces: vec!["kube-system".into()],
            drop_sandboxes: true,
            ..NamePolicy::default()
        };
        no_system.apply(&mut labels, names("kube-system", "dns", false));
        assert!(labels.hidden);
        no_system.apply(&mut labels, names("shop", "POD", true));
        assert!(labels.hidden);
        no_system.apply(&mut labels, names("shop", "nginx", false));
        assert!(!labels.hidden);
    }
}
