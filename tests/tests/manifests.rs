//! The deployment files agree with Kubernetes and with the agent: kinds and
//! API versions a current cluster serves, a DaemonSet whose env, ports,
//! mounts and capabilities match what `agent run --help` accepts and what
//! the capability tests prove necessary, and HPAs that scale on metrics the
//! prometheus-adapter config serves from rules that exist. A flag renamed in
//! code breaks this test.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use serde_yaml::Value;
use stallwatch_tests::agent_bin;

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every YAML document of every `.yaml` file below `dir`.
fn documents(dir: &Path) -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(documents(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value = <Value as serde::Deserialize>::deserialize(doc)
                    .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
                if !value.is_null() {
                    out.push((path.clone(), value));
                }
            }
        }
    }
    out
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut at = v;
    for key in path {
        at = &at[*key];
    }
    at.as_str().unwrap_or_default()
}

/// (apiVersion, kind, namespaced) that Kubernetes 1.25 and later serve
/// (HorizontalPodAutoscaler autoscaling/v2 is GA since 1.23), plus the
/// prometheus-operator's and kustomize's.
const KNOWN: [(&str, &str, bool); 7] = [
    ("v1", "Namespace", false),
    ("v1", "ServiceAccount", true),
    ("v1", "Service", true),
    ("apps/v1", "DaemonSet", true),
    ("autoscaling/v2", "HorizontalPodAutoscaler", true),
    ("monitoring.coreos.com/v1", "PodMonitor", true),
    ("kustomize.config.k8s.io/v1beta1", "Kustomization", false),
];

#[test]
fn every_manifest_is_a_kubernetes_kind_it_knows() {
    let docs: Vec<_> = [deploy().join("kubernetes"), deploy().join("hpa")]
        .iter()
        .flat_map(|d| documents(d))
        .collect();
    assert!(docs.len() >= 8, "{} documents", docs.len());
    for (path, doc) in &docs {
        let (api, kind) = (text(doc, &["apiVersion"]), text(doc, &["kind"]));
        let Some((_, _, namespaced)) = KNOWN.iter().find(|(a, k, _)| *a == api && *k == kind)
        else {
            panic!(
                "{}: {api} {kind} is not a kind these manifests may use",
                path.display()
            );
        };
        if kind == "Kustomization" {
            for resource in doc["resources"].as_sequence().into_iter().flatten() {
                let resource = path
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join(resource.as_str().unwrap_or_default());
                assert!(
                    resource.exists(),
                    "{}: no {}",
                    path.display(),
                    resource.display()
                );
            }
            continue;
        }
        assert!(
            !text(doc, &["metadata", "name"]).is_empty(),
            "{}: no name",
            path.display()
        );
        assert_eq!(
            !text(doc, &["metadata", "namespace"]).is_empty(),
            *namespaced,
            "{}: {kind} namespace",
            path.display()
        );
    }
}

/// `doc` read as Kubernetes type `T` (generated from the Kubernetes 1.33
/// OpenAPI schema by k8s-openapi) and written back: a wrongly typed field
/// fails to read, an unknown or misplaced one does not come back.
fn through_schema<T>(doc: &Value) -> Result<Value, String>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let typed: T = serde_yaml::from_value(doc.clone()).map_err(|e| e.to_string())?;
    serde_yaml::to_value(&typed).map_err(|e| e.to_string())
}

/// The paths of `original`'s fields that `round_trip` lacks or changed.
fn lost(original: &Value, round_trip: &Value, at: &str, out: &mut Vec<String>) {
    match (original, round_trip) {
        (Value::Mapping(a), Value::Mapping(b)) => {
            for (key, value) in a {
                let name = key.as_str().unwrap_or("?");
                match b.get(key) {
                    Some(other) => lost(value, other, &format!("{at}.{name}"), out),
                    None if value.is_null() => {}
                    None => out.push(format!("{at}.{name}")),
                }
            }
        }
        (Value::Sequence(a), Value::Sequence(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                lost(x, y, &format!("{at}[{i}]"), out);
            }
        }
        // Numbers written as strings (quantities, ports by name) are kept as written.
        (a, b) if a == b => {}
        (Value::Number(a), Value::String(b)) if a.to_string() == *b => {}
        _ => out.push(format!("{at} ({original:?} became {round_trip:?})")),
    }
}

#[test]
fn every_kubernetes_object_is_valid_for_the_kubernetes_1_33_schema() {
    use k8s_openapi::api::{apps, autoscaling, core};
    let docs: Vec<_> = [deploy().join("kubernetes"), deploy().join("hpa")]
        .iter()
        .flat_map(|d| documents(d))
        .collect();
    let mut checked = 0;
    for (path, doc) in &docs {
        let round_trip = match text(doc, &["kind"]) {
            "Namespace" => through_schema::<core::v1::Namespace>(doc),
            "ServiceAccount" => through_schema::<core::v1::ServiceAccount>(doc),
            "Service" => through_schema::<core::v1::Service>(doc),
            "DaemonSet" => through_schema::<apps::v1::DaemonSet>(doc),
            "HorizontalPodAutoscaler" => {
                through_schema::<autoscaling::v2::HorizontalPodAutoscaler>(doc)
            }
            // Not Kubernetes' own: the operator's CRD and kustomize.
            "PodMonitor" | "Kustomization" => continue,
            other => panic!("{}: no schema for {other}", path.display()),
        };
        let round_trip = round_trip.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut missing = Vec::new();
        lost(doc, &round_trip, "", &mut missing);
        assert!(
            missing.is_empty(),
            "{}: not in the schema: {missing:?}",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 6, "{checked} objects checked");
}

#[test]
fn the_daemonset_matches_what_the_agent_accepts() {
    let docs = documents(&deploy().join("kubernetes"));
    let (_, ds) = docs
        .iter()
        .find(|(_, d)| text(d, &["kind"]) == "DaemonSet")
        .unwrap_or_else(|| panic!("no DaemonSet"));
    let help = Command::new(agent_bin())
        .args(["run", "--help"])
        .output()
        .unwrap_or_else(|e| panic!("running agent run --help: {e}"));
    let help = String::from_utf8_lossy(&help.stdout);

    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"], ds["spec"]["template"]["metadata"]["labels"],
        "the selector selects the pods"
    );
    for forbidden in ["hostNetwork", "hostPID", "hostIPC"] {
        assert!(
            spec[forbidden].is_null() || spec[forbidden] == Value::Bool(false),
            "{forbidden}"
        );
    }
    assert_eq!(text(spec, &["priorityClassName"]), "system-node-critical");
    let containers = spec["containers"]
        .as_sequence()
        .unwrap_or_else(|| panic!("no containers"));
    assert_eq!(containers.len(), 1);
    let agent = &containers[0];
    assert_eq!(agent["args"][0].as_str(), Some("run"));

    // Every variable is one the agent reads (a renamed flag fails here).
    let env: Vec<(&str, &str)> = agent["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|e| (text(e, &["name"]), text(e, &["value"])))
        .collect();
    for (name, _) in &env {
        assert!(
            help.contains(&format!("[env: {name}=")),
            "agent run does not read {name}:\n{help}"
        );
    }
    let var = |name: &str| {
        env.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{name} is not set"))
    };

    // The port it listens on is the port declared, probed and scraped.
    let port = var("STALLWATCH_LISTEN")
        .rsplit(':')
        .next()
        .unwrap_or_default();
    assert_eq!(
        agent["ports"][0]["containerPort"]
            .as_u64()
            .map(|p| p.to_string())
            .as_deref(),
        Some(port)
    );
    let port_name = agent["ports"][0]["name"].as_str().unwrap_or_default();
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(agent[probe]["httpGet"]["path"].as_str(), Some(path));
        assert_eq!(agent[probe]["httpGet"]["port"].as_str(), Some(port_name));
    }
    assert_eq!(
        text(
            &ds["spec"]["template"]["metadata"]["annotations"],
            &["prometheus.io/port"]
        ),
        port
    );

    // Read-only mounts of exactly the paths the env points at.
    let mounts: BTreeSet<&str> = agent["volumeMounts"]
        .as_sequence()
        .into_iter()
        .flatten()
        .inspect(|m| assert_eq!(m["readOnly"], Value::Bool(true), "{m:?} is writable"))
        .map(|m| text(m, &["mountPath"]))
        .collect();
    let host = var("STALLWATCH_HOST_ROOT");
    let wanted: BTreeSet<String> = [
        var("STALLWATCH_CGROUP_ROOT").to_owned(),
        var("STALLWATCH_TRACEFS").to_owned(),
        format!("{host}/run/containerd"),
    ]
    .into();
    assert_eq!(
        mounts,
        wanted.iter().map(String::as_str).collect(),
        "mounts"
    );

    // Capabilities: all dropped, then the three the capability tests prove
    // necessary (tests/tests/capabilities.rs), and no privilege.
    let security = &agent["securityContext"];
    assert_eq!(
        security["capabilities"]["drop"],
        serde_yaml::from_str::<Value>("[ALL]").unwrap_or_default()
    );
    assert_eq!(
        security["capabilities"]["add"],
        serde_yaml::from_str::<Value>("[BPF, PERFMON, NET_ADMIN]").unwrap_or_default()
    );
    assert!(security["privileged"].is_null() || security["privileged"] == Value::Bool(false));
    assert_eq!(security["readOnlyRootFilesystem"], Value::Bool(true));
    assert_eq!(security["allowPrivilegeEscalation"], Value::Bool(false));
    assert!(agent["resources"]["requests"]["memory"].is_string());
    assert!(agent["resources"]["limits"]["memory"].is_string());
}

#[test]
fn the_hpas_scale_on_metrics_the_adapter_serves_from_recorded_rules() {
    let adapter = &documents(&deploy().join("prometheus-adapter"))[0].1;
    let rules = &documents(&deploy().join("prometheus"))
        .into_iter()
        .find(|(p, _)| p.ends_with("stallwatch-rules.yaml"))
        .unwrap_or_else(|| panic!("no rules file"))
        .1;
    let recorded: BTreeSet<&str> = rules["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().into_iter().flatten())
        .filter_map(|r| r["record"].as_str())
        .collect();
    let mut served = BTreeSet::new();
    for rule in adapter["rules"].as_sequence().into_iter().flatten() {
        let series = text(rule, &["seriesQuery"]);
        let metric = series
            .split('{')
            .next()
            .unwrap_or_default()
            .trim_matches('\'');
        assert!(
            recorded.contains(metric),
            "the adapter reads {metric}, which no rule records"
        );
        assert!(text(rule, &["metricsQuery"]).contains(metric));
        served.insert(text(rule, &["name", "as"]));
    }
    for (path, hpa) in documents(&deploy().join("hpa")) {
        for metric in hpa["spec"]["metrics"].as_sequence().into_iter().flatten() {
            let name = text(metric, &["pods", "metric", "name"]);
            assert!(
                served.contains(name),
                "{}: the adapter serves no {name}",
                path.display()
            );
        }
        let behavior = &hpa["spec"]["behavior"];
        let up = behavior["scaleUp"]["stabilizationWindowSeconds"]
            .as_u64()
            .unwrap_or(u64::MAX);
        let down = behavior["scaleDown"]["stabilizationWindowSeconds"]
            .as_u64()
            .unwrap_or(0);
        assert!(up < down, "{}: scale up faster than down", path.display());
    }
}

#[test]
fn the_image_ships_the_binary_xtask_dist_builds_at_the_daemonsets_version() {
    let containerfile = fs::read_to_string(deploy().join("Containerfile"))
        .unwrap_or_else(|e| panic!("reading deploy/Containerfile: {e}"));
    assert!(
        containerfile.contains("COPY target/dist/agent /usr/local/bin/agent"),
        "{containerfile}"
    );
    assert!(containerfile.contains(r#"ENTRYPOINT ["/usr/local/bin/agent"]"#));
    let version = Command::new(agent_bin())
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("running agent --version: {e}"));
    let version = String::from_utf8_lossy(&version.stdout);
    let version = version.split_whitespace().last().unwrap_or_default();
    let docs = documents(&deploy().join("kubernetes"));
    let (_, ds) = docs
        .iter()
        .find(|(_, d)| text(d, &["kind"]) == "DaemonSet")
        .unwrap_or_else(|| panic!("no DaemonSet"));
    let image = text(&ds["spec"]["template"]["spec"]["containers"][0], &["image"]);
    assert_eq!(image, format!("stallwatch/agent:{version}"));
    assert!(containerfile.contains(&format!("stallwatch/agent:{version}")));
}
