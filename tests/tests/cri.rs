//! Kubernetes names from a real container runtime: Debian's containerd and
//! runc, driven over CRI the way the kubelet drives them.

use std::time::Duration;

use stallwatch_tests::{
    Agent, Scrape,
    containerd::{Containerd, IMAGE},
    privileged,
};

const NAMESPACE: &str = "stallwatch-test";
const POD: &str = "burner-7d9f8c6b5-x2x4q";
const UID: &str = "5b1c0e3a-8f2d-4c6e-9a7b-1d3f5e7a9c2b";

fn agent_for(containerd: &Containerd) -> Agent {
    containerd.agent(&["--cri-grace", "2s"])
}

fn named(container: &str) -> [(&'static str, &str); 3] {
    [
        ("namespace", NAMESPACE),
        ("pod", POD),
        ("container", container),
    ]
}

fn has_cpu_of(scrape: &Scrape, container: &str) -> bool {
    scrape.has("stallwatch_cpu_usage_seconds_total", &named(container))
        && scrape.has(
            "stallwatch_cpu_runqueue_latency_seconds_count",
            &named(container),
        )
}

#[test]
fn a_pods_series_carry_its_kubernetes_names_until_it_is_removed() {
    if !privileged("containerd") {
        return;
    }
    let mut containerd = Containerd::start();
    let agent = agent_for(&containerd);
    let pod = containerd.run_pod(POD, NAMESPACE, UID);
    let burner = containerd.start_container(
        &pod,
        "burner",
        &["/bin/busybox", "sh", "-c", "while :; do :; done"],
        20_000,
        0,
    );

    let scrape = agent.scrape_until(Duration::from_secs(30), |s| has_cpu_of(s, "burner"));
    assert!(
        has_cpu_of(&scrape, "burner"),
        "no named series for the container; agent log:\n{}\nscrape:\n{}",
        agent.log(),
        scrape.text
    );
    let labels = [
        ("namespace", NAMESPACE),
        ("pod", POD),
        ("container", "burner"),
        ("container_id", burner.as_str()),
        ("pod_uid", UID),
        ("image", IMAGE),
        ("runtime", "containerd"),
    ];
    assert_eq!(
        scrape.value("stallwatch_container_info", &labels),
        Some(1.0),
        "{}",
        scrape.text
    );
    assert_eq!(
        scrape.value("stallwatch_cpu_limit_cores", &named("burner")),
        Some(0.2)
    );
    // The sandbox is container="POD", as cAdvisor names it.
    assert!(
        scrape.has("stallwatch_container_info", &named("POD")),
        "{}",
        scrape.text
    );
    assert_eq!(scrape.value("stallwatch_cri_up", &[]), Some(1.0));

    // agent top names it namespace/pod/container and filters by namespace.
    let out = std::process::Command::new(stallwatch_tests::agent_bin())
        .args(["top", "--url", &format!("http://127.0.0.1:{}", agent.port)])
        .args([
            "--once",
            "--output",
            "json",
            "--interval",
            "500ms",
            "--filter",
            NAMESPACE,
        ])
        .output()
        .expect("running agent top");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("top's JSON");
    let names: Vec<&str> = doc["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(
        names.contains(&format!("{NAMESPACE}/{POD}/burner").as_str())
            && names.contains(&format!("{NAMESPACE}/{POD}").as_str())
            && names.iter().all(|n| n.starts_with(NAMESPACE)),
        "{names:?}"
    );

    containerd.remove_pod(&pod.sandbox_id);
    let scrape = agent.scrape_until(Duration::from_secs(30), |s| {
        !s.text
            .lines()
            .any(|l| l.contains(&format!("pod=\"{POD}\"")))
    });
    let left: Vec<&str> = scrape
        .text
        .lines()
        .filter(|l| l.contains(&format!("pod=\"{POD}\"")))
        .collect();
    assert!(
        left.is_empty(),
        "series left after the pod was removed:\n{}",
        left.join("\n")
    );
}

#[test]
fn a_runtime_that_goes_away_keeps_the_labels_and_is_reconnected() {
    if !privileged("containerd") {
        return;
    }
    let mut containerd = Containerd::start();
    let agent = agent_for(&containerd);
    let pod = containerd.run_pod(POD, NAMESPACE, UID);
    containerd.start_container(&pod, "sleeper", &["/bin/busybox", "sleep", "600"], 0, 0);
    let named_sleeper = |s: &Scrape| s.has("stallwatch_container_info", &named("sleeper"));
    assert!(named_sleeper(
        &agent.scrape_until(Duration::from_secs(30), named_sleeper)
    ));

    containerd.kill();
    let scrape = agent.scrape_until(Duration::from_secs(20), |s| {
        s.value("stallwatch_cri_up", &[]) == Some(0.0)
    });
    assert_eq!(
        scrape.value("stallwatch_cri_up", &[]),
        Some(0.0),
        "{}",
        agent.log()
    );
    assert!(
        scrape
            .value("stallwatch_cri_errors_total", &[])
            .is_some_and(|n| n >= 1.0)
    );
    assert!(named_sleeper(&scrape), "the last known names are kept");

    containerd.restart();
    let scrape = agent.scrape_until(Duration::from_secs(20), |s| {
        s.value("stallwatch_cri_up", &[]) == Some(1.0)
    });
    assert_eq!(
        scrape.value("stallwatch_cri_up", &[]),
        Some(1.0),
        "{}",
        agent.log()
    );
    assert!(named_sleeper(&scrape));
}

#[test]
fn without_a_runtime_the_agent_says_so_once_and_runs_on_paths() {
    if !privileged("no container runtime") {
        return;
    }
    let nowhere =
        std::env::temp_dir().join(format!("stallwatch-no-runtime-{}", std::process::id()));
    std::fs::create_dir_all(&nowhere).expect("a temporary directory");
    let agent = Agent::start(&[
        "--host-root",
        &nowhere.display().to_string(),
        "--cri-refresh-interval",
        "200ms",
    ]);
    std::thread::sleep(Duration::from_secs(1));
    let scrape = agent.scrape();
    let _ = std::fs::remove_dir(&nowhere);
    assert_eq!(scrape.value("stallwatch_cri_up", &[]), None);
    assert_eq!(scrape.value("stallwatch_cri_errors_total", &[]), Some(0.0));
    assert_eq!(
        agent
            .log()
            .matches("no container runtime socket found")
            .count(),
        1,
        "{}",
        agent.log()
    );
}
