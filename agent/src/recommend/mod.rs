//! `agent recommend`: CPU and memory requests and limits per container,
//! from what a Prometheus server recorded of the agents' series over a
//! window. Queries are in [`queries`], the rules in [`advice`].
//!
//! The current CPU request is read back from the cgroup's CPU weight
//! (`cpu.shares` on v1, `cpu.weight` on v2, which the kubelet derives from
//! the request); a memory request leaves no trace in cgroup files, so it is
//! shown as unknown.

pub mod advice;
pub mod prometheus;

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use anyhow::Context as _;
use serde::Serialize;

use crate::cli::{RecommendArgs, RecommendOutput};
use advice::{Advice, Observed, Policy, Setting};
use prometheus::{Prometheus, Sample};

/// A container: (namespace, pod, container).
type Key = (String, String, String);

#[derive(Debug, Serialize)]
pub struct Recommendation {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub node: String,
    pub observed: Observed,
    pub advice: Advice,
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

fn key(s: &Sample) -> Key {
    (
        s.label("namespace").to_owned(),
        s.label("pod").to_owned(),
        s.label("container").to_owned(),
    )
}

/// The PromQL of every per-container figure, over `window` at `step`.
struct Queries {
    selector: String,
    window: String,
    step: String,
}

impl Queries {
    fn new(args: &RecommendArgs) -> Self {
        let mut selector = String::from(r#"container!="",container!="POD""#);
        if let Some(ns) = &args.namespace {
            let _ = write!(selector, r#",namespace="{}""#, ns.replace('"', ""));
        }
        Self {
            selector,
            window: seconds(args.window),
            step: seconds(args.resolution),
        }
    }

    const BY: &'static str = "namespace, pod, container, instance";

    /// `over` (the opening of a `*_over_time(` call, closed here) of the
    /// per-container expression `inner`, sampled every step over the window.
    fn over_window(&self, over: &str, inner: &str) -> String {
        let Self { window, step, .. } = self;
        format!("{over}{inner}[{window}:{step}])")
    }

    fn usage(&self, over: &str) -> String {
        let Self { selector, step, .. } = self;
        self.over_window(
            over,
            &format!(
                "sum by ({by}) (rate(stallwatch_cpu_usage_seconds_total{{{selector}}}[{step}]))",
                by = Self::BY
            ),
        )
    }

    fn working_set(&self, over: &str) -> String {
        let Self { selector, .. } = self;
        self.over_window(
            over,
            &format!(
                "max by ({by}) (stallwatch_memory_working_set_bytes{{{selector}}})",
                by = Self::BY
            ),
        )
    }

    fn last(&self, metric: &str) -> String {
        let Self {
            selector, window, ..
        } = self;
        format!(
            "max by ({by}) (last_over_time({metric}{{{selector}}}[{window}]))",
            by = Self::BY
        )
    }

    fn increase(&self, metric: &str, extra: &str) -> String {
        let Self {
            selector, window, ..
        } = self;
        format!(
            "sum by ({by}) (increase({metric}{{{selector}{extra}}}[{window}]))",
            by = Self::BY
        )
    }
}

/// Every figure of every container, joined by name.
fn observe(
    prometheus: &mut Prometheus,
    args: &RecommendArgs,
) -> anyhow::Result<BTreeMap<Key, (String, Observed)>> {
    let q = Queries::new(args);
    let mut out: BTreeMap<Key, (String, Observed)> = BTreeMap::new();
    let mut fill = |query: String, set: fn(&mut Observed, f64)| -> anyhow::Result<()> {
        for sample in prometheus.query(&query)? {
            let entry = out
                .entry(key(&sample))
                .or_insert_with(|| (sample.label("instance").to_owned(), Observed::default()));
            set(&mut entry.1, sample.value);
        }
        Ok(())
    };
    fill(q.usage("quantile_over_time(0.95, "), |o, v| {
        o.cpu_p95_cores = Some(v)
    })?;
    fill(q.usage("quantile_over_time(0.99, "), |o, v| {
        o.cpu_p99_cores = Some(v)
    })?;
    fill(q.usage("max_over_time("), |o, v| o.cpu_peak_cores = Some(v))?;
    fill(
        format!(
            "{} / ({} > 0)",
            q.increase("stallwatch_cpu_cfs_throttled_periods_total", ""),
            q.increase("stallwatch_cpu_cfs_periods_total", "")
        ),
        |o, v| o.throttled_ratio = Some(v),
    )?;
    fill(q.last("stallwatch_cpu_limit_cores"), |o, v| {
        o.cpu_limit_cores = Some(v)
    })?;
    // The kubelet writes a request of R cores as R × 1024 shares (v1), and
    // shares s as weight 1 + (s − 2) × 9999 / 262142 (v2); 2 shares is none.
    fill(q.last("stallwatch_cpu_shares"), |o, v| {
        o.cpu_request_cores = (v > 2.0).then_some(v / 1024.0)
    })?;
    fill(q.last("stallwatch_cpu_weight"), |o, v| {
        let shares = 2.0 + (v - 1.0) * 262_142.0 / 9_999.0;
        o.cpu_request_cores = (shares > 2.5).then_some(shares / 1024.0)
    })?;
    fill(q.working_set("quantile_over_time(0.95, "), |o, v| {
        o.working_set_p95_bytes = Some(v)
    })?;
    fill(q.working_set("max_over_time("), |o, v| {
        o.working_set_peak_bytes = Some(v)
    })?;
    fill(q.last("stallwatch_memory_limit_bytes"), |o, v| {
        o.memory_limit_bytes = Some(v)
    })?;
    fill(
        q.increase("stallwatch_memory_events_total", r#",event="oom_kill""#),
        |o, v| o.oom_kills = Some(v),
    )?;
    fill(
        q.increase("stallwatch_memory_reclaim_stall_seconds_count", ""),
        |o, v| o.reclaim_stalls = Some(v),
    )?;
    node_runqueue(prometheus, &q, args.throttled_threshold, &mut out)?;
    Ok(out)
}

/// Each node's run-queue p99 over the window, from every cgroup but the
/// throttled ones: a throttled task waits runnable until its next period,
/// which says nothing about whether the node has CPU to spare.
fn node_runqueue(
    prometheus: &mut Prometheus,
    q: &Queries,
    threshold: f64,
    out: &mut BTreeMap<Key, (String, Observed)>,
) -> anyhow::Result<()> {
    let buckets = prometheus.query(&format!(
        "sum by (instance, namespace, pod, container, le) (increase(stallwatch_cpu_runqueue_latency_seconds_bucket[{}]))",
        q.window
    ))?;
    let throttled: Vec<&Key> = out
        .iter()
        .filter(|(_, (_, o))| o.throttled_ratio.is_some_and(|t| t > threshold))
        .map(|(k, _)| k)
        .collect();
    // instance → le → cumulative count.
    let mut nodes: BTreeMap<String, BTreeMap<u64, (f64, f64)>> = BTreeMap::new();
    for sample in &buckets {
        if throttled.contains(&&key(sample)) {
            continue;
        }
        let le: f64 = match sample.label("le") {
            "+Inf" => f64::INFINITY,
            other => match other.parse() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        let entry = nodes
            .entry(sample.label("instance").to_owned())
            .or_default()
            .entry(le.to_bits())
            .or_insert((le, 0.0));
        entry.1 += sample.value;
    }
    for (node, observed) in out.values_mut() {
        if let Some(cumulative) = nodes.get(node.as_str()) {
            let mut points: Vec<(f64, f64)> = cumulative.values().copied().collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            observed.node_runqueue_p99_seconds = quantile(0.99, &points);
        }
    }
    Ok(())
}

/// `histogram_quantile` on cumulative (upper bound, count) points.
fn quantile(q: f64, points: &[(f64, f64)]) -> Option<f64> {
    let total = points.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in points {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let within = if count > lower.1 {
                (rank - lower.1) / (count - lower.1)
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * within);
        }
        lower = (le, count);
    }
    Some(lower.0)
}

pub fn run(args: RecommendArgs) -> anyhow::Result<()> {
    let mut prometheus = Prometheus::new(&args.prometheus)?;
    let policy = Policy {
        cpu_headroom: args.cpu_headroom,
        memory_headroom: args.memory_headroom,
        throttled_threshold: args.throttled_threshold,
        runqueue_low_seconds: args.runqueue_low.as_secs_f64(),
        remove_throttled_limits: args.remove_throttled_limits,
    };
    let observed = observe(&mut prometheus, &args)
        .with_context(|| format!("reading the agents' series from {}", prometheus.url()))?;
    if observed.is_empty() {
        anyhow::bail!(
            "Prometheus at {} has no stallwatch series with namespace, pod and container labels{} \
             in the last {}: does it scrape the agents, and do they reach the container runtime?",
            prometheus.url(),
            args.namespace
                .as_deref()
                .map(|n| format!(" in namespace {n}"))
                .unwrap_or_default(),
            seconds(args.window)
        );
    }
    let recommendations: Vec<Recommendation> = observed
        .into_iter()
        .map(
            |((namespace, pod, container), (node, observed))| Recommendation {
                advice: advice::advise(&observed, &policy),
                namespace,
                pod,
                container,
                node,
                observed,
            },
        )
        .collect();
    let text = match args.output {
        RecommendOutput::Table => table(&recommendations),
        RecommendOutput::Json => {
            let mut text = serde_json::to_string_pretty(&recommendations)
                .context("encoding the recommendations")?;
            text.push('\n');
            text
        }
        RecommendOutput::Yaml => patches(&recommendations),
    };
    print!("{text}");
    Ok(())
}

fn cores(v: Option<f64>) -> String {
    v.map_or_else(|| "?".to_owned(), |c| format!("{:.0}m", c * 1e3))
}

fn mib(v: Option<f64>) -> String {
    v.map_or_else(
        || "?".to_owned(),
        |b| format!("{:.0}Mi", b / 1024.0 / 1024.0),
    )
}

fn setting(s: Setting, unit: fn(Option<f64>) -> String) -> String {
    match s {
        Setting::Set(v) => unit(Some(v)),
        Setting::Unlimited => "none".to_owned(),
        Setting::Unknown => "?".to_owned(),
    }
}

/// One line per container: now → advised, and the evidence.
fn table(recs: &[Recommendation]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<48} {:>13} {:>13} {:>17} {:>5} {:>15} {:>15} {:>7}  REASONS",
        "NAMESPACE/POD/CONTAINER",
        "CPU REQ",
        "CPU LIM",
        "CPU p95/p99/max",
        "THR%",
        "MEM p95/max",
        "MEM LIM",
        "MEM REQ"
    );
    for r in recs {
        let o = &r.observed;
        let a = &r.advice;
        let name = format!("{}/{}/{}", r.namespace, r.pod, r.container);
        let _ = writeln!(
            out,
            "{:<48} {:>13} {:>13} {:>17} {:>5} {:>15} {:>15} {:>7}  {}",
            name,
            format!(
                "{}→{}",
                cores(o.cpu_request_cores),
                setting(a.cpu_request_cores, cores)
            ),
            format!(
                "{}→{}",
                o.cpu_limit_cores
                    .map_or_else(|| "none".to_owned(), |c| cores(Some(c))),
                setting(a.cpu_limit_cores, cores)
            ),
            format!(
                "{}/{}/{}",
                cores(o.cpu_p95_cores),
                cores(o.cpu_p99_cores),
                cores(o.cpu_peak_cores)
            ),
            o.throttled_ratio
                .map_or_else(|| "-".to_owned(), |t| format!("{:.0}", t * 100.0)),
            format!(
                "{}/{}",
                mib(o.working_set_p95_bytes),
                mib(o.working_set_peak_bytes)
            ),
            format!(
                "{}→{}",
                o.memory_limit_bytes
                    .map_or_else(|| "none".to_owned(), |b| mib(Some(b))),
                setting(a.memory_limit_bytes, mib)
            ),
            setting(a.memory_request_bytes, mib),
            a.reasons.join("; ")
        );
    }
    out
}

/// A strategic-merge patch per container, for `kubectl patch` on the pod's
/// owner (the agent knows pods, not their Deployments).
fn patches(recs: &[Recommendation]) -> String {
    let mut out = String::new();
    for r in recs {
        let a = &r.advice;
        let _ = writeln!(out, "# {}/{}/{}", r.namespace, r.pod, r.container);
        for reason in &a.reasons {
            let _ = writeln!(out, "# {reason}");
        }
        let _ = writeln!(
            out,
            "# kubectl patch -n {} <the owner of pod {}> --type strategic --patch-file <this document>",
            r.namespace, r.pod
        );
        let _ = writeln!(
            out,
            "spec:\n  template:\n    spec:\n      containers:\n        - name: {}\n          resources:",
            r.container
        );
        for (section, cpu, memory) in [
            ("requests", a.cpu_request_cores, a.memory_request_bytes),
            ("limits", a.cpu_limit_cores, a.memory_limit_bytes),
        ] {
            let mut lines = String::new();
            match cpu {
                Setting::Set(v) => {
                    let _ = writeln!(lines, "              cpu: {}", cores(Some(v)));
                }
                // `null` deletes the field in a strategic-merge patch.
                Setting::Unlimited if section == "limits" => {
                    let _ = writeln!(lines, "              cpu: null");
                }
                _ => {}
            }
            if let Setting::Set(v) = memory {
                let _ = writeln!(lines, "              memory: {}", mib(Some(v)));
            }
            if !lines.is_empty() {
                let _ = writeln!(out, "            {section}:");
                out.push_str(&lines);
            }
        }
        out.push_str("---\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_quantile_interpolates_cumulative_buckets() {
        let points = [
            (0.001, 50.0),
            (0.01, 99.0),
            (0.1, 100.0),
            (f64::INFINITY, 100.0),
        ];
        let p99 = quantile(0.99, &points).expect("samples");
        assert!((p99 - 0.01).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(0.5, &points), Some(0.001));
        assert_eq!(quantile(0.99, &[(0.1, 0.0), (f64::INFINITY, 0.0)]), None);
    }

    #[test]
    fn a_patch_sets_requests_and_removes_a_limit_with_null() {
        let rec = Recommendation {
            namespace: "shop".into(),
            pod: "web-0".into(),
            container: "app".into(),
            node: "n1".into(),
            observed: Observed::default(),
            advice: Advice {
                cpu_request_cores: Setting::Set(0.12),
                cpu_limit_cores: Setting::Unlimited,
                memory_request_bytes: Setting::Set(96.0 * 1024.0 * 1024.0),
                memory_limit_bytes: Setting::Unknown,
                reasons: vec!["throttled".into()],
            },
        };
        let yaml = patches(&[rec]);
        assert!(yaml.contains("        - name: app\n"), "{yaml}");
        assert!(
            yaml.contains(
                "            requests:\n              cpu: 120m\n              memory: 96Mi\n"
            ),
            "{yaml}"
        );
        assert!(
            yaml.contains("            limits:\n              cpu: null\n"),
            "{yaml}"
        );
        assert!(yaml.contains("# throttled\n"), "{yaml}");
    }
}
