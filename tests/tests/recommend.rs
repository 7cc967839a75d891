//! `agent recommend` against a real Prometheus that scraped a running agent
//! while two containers of a pod on a real containerd behaved as the test
//! made them: one throttled at its 0.2-core limit, one idle with a
//! half-core request.

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use stallwatch_tests::{
    Agent, agent_bin, containerd::Containerd, privileged, prometheus::Prometheus,
};

fn recommend(prometheus: &Prometheus, output: &str) -> (bool, String, String) {
    let out = Command::new(agent_bin())
        .args([
            "recommend",
            "--prometheus",
            &format!("http://127.0.0.1:{}", prometheus.port),
        ])
        .args([
            "--namespace",
            "rightsize",
            "--window",
            "1m",
            "--resolution",
            "5s",
        ])
        // This shared test machine's own run queue is noisy.
        .args(["--runqueue-low", "50ms", "--output", output])
        .output()
        .unwrap_or_else(|e| panic!("running agent recommend: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_throttled_container_gets_a_higher_limit_and_an_idle_one_a_smaller_request() {
    if !privileged("agent recommend") {
        return;
    }
    let mut containerd = Containerd::start();
    let agent = containerd.agent(&[]);
    let prometheus = Prometheus::scraping(agent.port);
    let pod = containerd.run_pod(
        "shop-0",
        "rightsize",
        "6a5b4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d",
    );
    containerd.start_container(
        &pod,
        "spinner",
        &["/bin/busybox", "sh", "-c", "while :; do :; done"],
        20_000,
        205,
    );
    containerd.start_container(&pod, "idler", &["/bin/busybox", "sleep", "600"], 0, 512);

    // Half the 1-minute window of history before the first look, so that
    // the quantiles are over steady behaviour, not the first seconds.
    thread::sleep(Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(120);
    let doc = loop {
        thread::sleep(Duration::from_secs(5));
        let (ok, stdout, stderr) = recommend(&prometheus, "json");
        let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_default();
        let has = |name: &str, figure: &str| {
            doc.as_array()
                .into_iter()
                .flatten()
                .any(|r| r["container"] == name && r["observed"][figure].is_number())
        };
        let ready = ok && has("spinner", "throttled_ratio") && has("idler", "cpu_p95_cores");
        if ready || Instant::now() > deadline {
            assert!(
                ready,
                "no advice for both containers: {stdout}{stderr}\n{}",
                prometheus.log()
            );
            break doc;
        }
    };
    eprintln!("{doc:#}");
    let of = |name: &str| {
        doc.as_array()
            .into_iter()
            .flatten()
            .find(|r| r["container"] == name)
            .unwrap_or_else(|| panic!("no advice for {name}: {doc:#}"))
    };
    let spinner = of("spinner");
    assert!(
        spinner["observed"]["throttled_ratio"]
            .as_f64()
            .is_some_and(|t| t > 0.5)
    );
    let limit = spinner["advice"]["cpu_limit_cores"]["value"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(
        limit > 0.2,
        "the throttled container's limit is raised: {spinner:#}"
    );
    assert!(
        spinner["advice"]["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("raise the limit")),
        "{spinner:#}"
    );

    let idler = of("idler");
    let was = idler["observed"]["cpu_request_cores"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(
        (was - 0.5).abs() < 0.01,
        "read back from cpu.shares: {idler:#}"
    );
    let now = idler["advice"]["cpu_request_cores"]["value"]
        .as_f64()
        .unwrap_or(1.0);
    assert!(now < was, "the idle container's request shrinks: {idler:#}");

    let (ok, table, stderr) = recommend(&prometheus, "table");
    assert!(ok, "{stderr}");
    eprintln!("{table}");
    assert!(
        table.contains("rightsize/shop-0/spinner") && table.contains("raise the limit"),
        "{table}"
    );
    let (ok, yaml, stderr) = recommend(&prometheus, "yaml");
    assert!(ok, "{stderr}");
    for doc in serde_yaml::Deserializer::from_str(&yaml) {
        let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
            .unwrap_or_else(|e| panic!("the patches are not YAML ({e}):\n{yaml}"));
        if !value.is_null() {
            assert!(
                value["spec"]["template"]["spec"]["containers"][0]["name"].is_string(),
                "{yaml}"
            );
        }
    }
}

#[test]
fn a_prometheus_without_the_agents_series_is_a_clear_error() {
    if !privileged("agent recommend") {
        return;
    }
    let agent = Agent::start(&["--probes", "runqueue"]);
    let prometheus = Prometheus::scraping(agent.port);
    let (ok, _, stderr) = recommend(&prometheus, "table");
    assert!(!ok);
    assert!(
        stderr.contains("has no stallwatch series with namespace, pod and container labels"),
        "{stderr}"
    );
    let out = Command::new(agent_bin())
        .args(["recommend", "--prometheus", "http://127.0.0.1:1"])
        .output()
        .unwrap_or_else(|e| panic!("running agent recommend: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach Prometheus at http://127.0.0.1:1"),
        "{stderr}"
    );
}
