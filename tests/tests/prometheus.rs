//! The Prometheus side: stallwatch's rules pass promtool's checks and unit
//! tests, and, end to end, a real Prometheus scraping the agent records a
//! throttled pod's throttled ratio from a real container runtime.

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use stallwatch_tests::{
    containerd::Containerd,
    privileged,
    prometheus::{Prometheus, rules_dir},
};

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(rules_dir())
        .output()
        .unwrap_or_else(|e| panic!("running promtool (cargo xtask setup installs it): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_rules_pass_promtool_and_their_unit_tests() {
    let checked = promtool(&["check", "rules", "stallwatch-rules.yaml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "stallwatch-rules_test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn prometheus_records_the_throttled_ratio_of_a_throttled_pod() {
    if !privileged("prometheus end to end") {
        return;
    }
    let mut containerd = Containerd::start();
    let agent = containerd.agent(&[]);
    let prometheus = Prometheus::scraping(agent.port);
    let pod = containerd.run_pod("spinner-0", "e2e", "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0");
    containerd.start_container(
        &pod,
        "spinner",
        &["/bin/busybox", "sh", "-c", "while :; do :; done"],
        20_000,
        0,
    );

    // The per-container rule first, then the per-pod one, which reads it
    // (rule groups are evaluated one after the other).
    let container = above_half(
        &prometheus,
        r#"namespace_pod_container:stallwatch_cpu_throttled_periods:ratio_rate5m{namespace="e2e",pod="spinner-0",container="spinner"}"#,
        &agent,
    );
    eprintln!("recorded throttled ratio: {container}");
    assert!(container <= 1.0);
    let pod = above_half(
        &prometheus,
        r#"namespace_pod:stallwatch_cpu_throttled_periods:ratio_rate5m{namespace="e2e",pod="spinner-0"}"#,
        &agent,
    );
    assert!(pod <= 1.0);
}

/// The value of `query` once it is above 0.5; panics after 90 s.
fn above_half(prometheus: &Prometheus, query: &str, agent: &stallwatch_tests::Agent) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let result = prometheus.query(query);
        if let Some((_, v)) = result.first()
            && *v > 0.5
        {
            return *v;
        }
        if Instant::now() > deadline {
            panic!(
                "{query} is not above 0.5 (last: {result:?});\nprometheus log:\n{}\nagent log:\n{}",
                prometheus.log(),
                agent.log()
            );
        }
        thread::sleep(Duration::from_secs(1));
    }
}
