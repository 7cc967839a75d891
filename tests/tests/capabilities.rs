//! The least privilege the agent works with, as the DaemonSet grants it
//! (drop ALL, add back): each capability it needs is shown necessary here,
//! and the README lists the call that needs it.

use std::time::Duration;

use stallwatch_tests::{Agent, privileged};

/// `kernel.perf_event_paranoid` set to 3 while a test runs, restored after.
/// Debian's kernels default to 3, where `perf_event_open(2)` of a classic
/// tracepoint needs CAP_SYS_ADMIN, not CAP_PERFMON: every probe must come up
/// without it, on raw tracepoints.
struct Paranoid(Option<String>);

const PARANOID: &str = "/proc/sys/kernel/perf_event_paranoid";

impl Paranoid {
    fn at_debians_default() -> Self {
        let before = std::fs::read_to_string(PARANOID).unwrap_or_default();
        if before.trim() != "3" {
            std::fs::write(PARANOID, "3").unwrap_or_else(|e| panic!("writing {PARANOID}: {e}"));
            return Self(Some(before));
        }
        Self(None)
    }
}

impl Drop for Paranoid {
    fn drop(&mut self) {
        if let Some(before) = &self.0 {
            let _ = std::fs::write(PARANOID, before.trim());
        }
    }
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn probe_up(agent: &Agent) -> Vec<(String, f64)> {
    let scrape = agent.scrape();
    ["runqueue", "reclaim", "disk", "tcp"]
        .into_iter()
        .map(|p| {
            let up = scrape
                .value("stallwatch_probe_up", &[("probe", p)])
                .unwrap_or(-1.0);
            (p.to_owned(), up)
        })
        .collect()
}

#[test]
fn bpf_perfmon_and_net_admin_are_all_it_needs() {
    if !privileged("capabilities") {
        return;
    }
    Agent::ensure_tracefs();
    let _paranoid = Paranoid::at_debians_default();
    let agent = Agent::spawn_with_capabilities(&[], &[CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN]);
    agent.wait_for("/readyz", 200, Duration::from_secs(30));
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid().unwrap_or(0)))
        .unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        effective,
        format!(
            "{:016x}",
            (1u64 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_NET_ADMIN)
        )
    );
    assert!(
        probe_up(&agent).iter().all(|(_, up)| *up == 1.0),
        "{:?}",
        probe_up(&agent)
    );
    assert!(
        agent
            .scrape()
            .has("stallwatch_cpu_usage_seconds_total", &[("cgroup", "/")])
    );
}

#[test]
fn without_net_admin_the_tcp_probes_cannot_load_and_say_why() {
    if !privileged("capabilities") {
        return;
    }
    Agent::ensure_tracefs();
    let _paranoid = Paranoid::at_debians_default();
    let agent = Agent::spawn_with_capabilities(&[], &[CAP_BPF, CAP_PERFMON]);
    agent.wait_for("/healthz", 200, Duration::from_secs(30));
    let up = probe_up(&agent);
    assert!(
        up.iter().all(|(p, up)| (*up == 0.0) == (p == "tcp")),
        "{up:?}; log:\n{}",
        agent.log()
    );
    let (status, body) = agent.get("/readyz").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 503);
    assert!(body.contains("tcp"), "{body}");
}

#[test]
fn without_bpf_it_refuses_to_start_and_names_the_capabilities() {
    if !privileged("capabilities") {
        return;
    }
    let mut agent = Agent::spawn_with_capabilities(&[], &[CAP_PERFMON, CAP_NET_ADMIN]);
    let status = agent.wait_exit(Duration::from_secs(10));
    let log = agent.log();
    assert!(
        status.is_some_and(|s| s.code() == Some(1)),
        "{status:?}: {log}"
    );
    assert!(log.contains("CAP_BPF and CAP_PERFMON"), "{log}");
}
