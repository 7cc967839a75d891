//! The daemon as an operator meets it: endpoints, formats, readiness,
//! shutdown, and what happens when a probe cannot attach.

use std::time::Duration;

use stallwatch_tests::{Agent, privileged, promtool_check};

#[test]
fn serves_health_readiness_and_self_metrics() {
    if !privileged("daemon endpoints") {
        return;
    }
    let agent = Agent::start(&[]);
    assert_eq!(agent.get("/healthz"), Ok((200, "ok\n".to_owned())));
    assert_eq!(agent.get("/readyz"), Ok((200, "ready\n".to_owned())));

    let scrape = agent.scrape();
    for probe in ["runqueue", "reclaim", "disk", "tcp"] {
        assert_eq!(
            scrape.value("stallwatch_probe_up", &[("probe", probe)]),
            Some(1.0),
            "{probe}"
        );
    }
    assert_eq!(
        scrape.value("stallwatch_map_full_total", &[("map", "RUNQ_TASKS")]),
        Some(0.0)
    );
    assert!(scrape.value("stallwatch_build_info", &[]).is_some());
    assert!(
        scrape
            .value("stallwatch_scrape_duration_seconds", &[])
            .is_some()
    );
    assert!(
        scrape
            .value("stallwatch_tracked_cgroups", &[])
            .is_some_and(|n| n >= 1.0)
    );
    assert!(!scrape.text.contains("# EOF"));
}

#[test]
fn exposition_passes_promtool() {
    if !privileged("promtool check metrics") {
        return;
    }
    let agent = Agent::start(&[]);
    let scrape = agent.scrape();
    if let Err(complaint) = promtool_check(&scrape.text) {
        panic!(
            "promtool check metrics failed:\n{complaint}\non:\n{}",
            scrape.text
        );
    }
}

#[test]
fn speaks_openmetrics_when_asked() {
    if !privileged("openmetrics negotiation") {
        return;
    }
    let agent = Agent::start(&[]);
    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let (status, body) = agent.get_with("/metrics", Some(accept)).expect("scrape");
    assert_eq!(status, 200);
    assert!(body.ends_with("# EOF\n"), "OpenMetrics must end with # EOF");
    assert!(body.contains("# TYPE stallwatch_map_full counter\n"));
    assert!(body.contains("# UNIT stallwatch_cpu_runqueue_latency_seconds seconds\n"));
}

#[test]
fn sigterm_detaches_and_exits_zero_within_two_seconds() {
    if !privileged("shutdown") {
        return;
    }
    let mut agent = Agent::start(&[]);
    let (status, took) = agent.terminate();
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        agent.log()
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(agent.log().contains("probes detached"), "{}", agent.log());
}

#[test]
fn a_probe_that_cannot_attach_is_reported_not_fatal() {
    if !privileged("missing tracepoints") {
        return;
    }
    // Classic tracepoints on a tracefs without the sched and block events:
    // the run-queue and disk probes must be down, the agent must still
    // serve, and say why.
    let fake = tempfile_dir();
    std::fs::create_dir_all(fake.join("events")).expect("mkdir");
    let agent = Agent::spawn(&[
        "--tracefs",
        fake.to_str().expect("utf-8"),
        "--runqueue-attach",
        "tracepoint",
        "--disk-attach",
        "tracepoint",
    ]);
    agent.wait_for("/healthz", 200, Duration::from_secs(30));
    let (status, body) = agent.get("/readyz").expect("readyz");
    assert_eq!(status, 503);
    assert!(
        body.contains("runqueue: down: tracepoint sched:sched_switch does not exist"),
        "{body}"
    );
    assert!(
        body.contains("disk: down: tracepoint block:block_rq_insert does not exist"),
        "{body}"
    );
    let scrape = agent.scrape();
    for probe in ["runqueue", "disk"] {
        assert_eq!(
            scrape.value("stallwatch_probe_up", &[("probe", probe)]),
            Some(0.0),
            "{probe}"
        );
    }
    for probe in ["reclaim", "tcp"] {
        assert_eq!(
            scrape.value("stallwatch_probe_up", &[("probe", probe)]),
            Some(1.0),
            "{probe}: raw tracepoints and cgroup programs need no tracefs"
        );
    }
    let _ = std::fs::remove_dir_all(&fake);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("stallwatch-fake-tracefs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn the_json_api_has_what_the_metrics_have() {
    if !privileged("the JSON API") {
        return;
    }
    let agent = Agent::start(&[]);
    let root_cpu = |scrape: &stallwatch_tests::Scrape| {
        scrape
            .value("stallwatch_cpu_usage_seconds_total", &[("cgroup", "/")])
            .unwrap_or_else(|| panic!("no CPU usage of the root cgroup:\n{}", scrape.text))
    };
    let before = root_cpu(&agent.scrape());
    let (status, body) = agent
        .get("/api/v1/containers")
        .unwrap_or_else(|e| panic!("{e}"));
    let after = root_cpu(&agent.scrape());
    assert_eq!(status, 200, "{body}");
    let doc: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));

    assert_eq!(doc["api_version"], 1);
    let probes: Vec<(&str, bool)> = doc["agent"]["probes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["signal"].as_str()?, p["up"].as_bool()?)))
        .collect();
    assert_eq!(
        probes,
        [
            ("runqueue", true),
            ("reclaim", true),
            ("disk", true),
            ("tcp", true)
        ]
    );
    assert!(
        doc["node"]["cpus"].as_u64().is_some_and(|n| n >= 1),
        "{:#}",
        doc["node"]
    );
    assert!(
        doc["bucket_bounds_seconds"]
            .as_array()
            .is_some_and(|b| b.len() > 10)
    );
    let root = doc["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["cgroup"] == "/")
        .unwrap_or_else(|| panic!("no root cgroup in {body}"));
    let usage = root["cpu"]["usage_seconds"].as_f64().unwrap_or(-1.0);
    assert!(
        before <= usage && usage <= after,
        "the API's root CPU usage {usage} is not between two scrapes' {before} and {after}"
    );
}
