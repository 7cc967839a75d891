//! CPU throttling and memory pressure as a container's limits cause them,
//! read back from the agent against the kernel's own files. On this hybrid
//! host the limits are v1 and the ids v2; in the VMs everything is v2.

use std::{thread, time::Duration};

use stallwatch_tests::{Agent, ContainerCgroup, Workload, privileged};

#[test]
fn a_busy_loop_under_a_tenth_of_a_core_is_throttled_and_the_agent_says_so() {
    if !privileged("cpu throttling") {
        return;
    }
    let agent = Agent::start(&[]);
    let container = ContainerCgroup::create("throttle");
    container.limit_cpu(10_000, 100_000);
    let hog = Workload::in_cgroups(&container.procs_files(), "while :; do :; done");
    thread::sleep(Duration::from_secs(2));

    let limit = [("cgroup", container.label.as_str())];
    let _ = agent.scrape_until(Duration::from_secs(5), |s| {
        s.value("stallwatch_cpu_limit_cores", &limit).is_some()
    });
    let before = container.throttled();
    let scrape = agent.scrape();
    let after = container.throttled();
    drop(hog);

    let labels = [
        ("cgroup", container.label.as_str()),
        ("container_id", container.container_id.as_str()),
    ];
    let periods = scrape
        .value("stallwatch_cpu_cfs_throttled_periods_total", &labels)
        .unwrap_or_else(|| panic!("no throttled periods for {labels:?}:\n{}", scrape.text));
    let seconds = scrape
        .value("stallwatch_cpu_cfs_throttled_seconds_total", &labels)
        .unwrap_or_else(|| panic!("no throttled seconds for {labels:?}"));
    eprintln!(
        "throttled: {periods} periods, {seconds:.3} s (kernel before {before:?}, after {after:?})"
    );
    assert!(periods > 0.0 && seconds > 0.0);
    // Within one scrape's drift of the kernel's own numbers.
    assert!(
        (before.0 as f64) <= periods && periods <= after.0 as f64,
        "{periods} not in {before:?}..{after:?}"
    );
    assert!(
        before.1 - 1e-6 <= seconds && seconds <= after.1 + 1e-6,
        "{seconds} not in {before:?}..{after:?}"
    );
    assert_eq!(
        scrape.value("stallwatch_cpu_limit_cores", &labels),
        Some(0.1)
    );
}

#[test]
fn a_container_over_its_memory_limit_is_oom_killed_and_stalls_in_reclaim() {
    if !privileged("memory limit") {
        return;
    }
    let agent = Agent::start(&[]);
    let container = ContainerCgroup::create("memory");
    container.limit_memory(64 << 20);
    // tail keeps everything it reads from /dev/zero, waiting for a newline:
    // it grows until the limit's OOM killer ends it, and is started again.
    let hog = Workload::in_cgroups(
        &container.procs_files(),
        "{ while :; do tail /dev/zero; done; } 2>/dev/null",
    );
    let mut kills = 0;
    for _ in 0..100 {
        thread::sleep(Duration::from_millis(100));
        kills = container.oom_kills();
        if kills >= 2 {
            break;
        }
    }
    let oom_kill = [("cgroup", container.label.as_str()), ("event", "oom_kill")];
    let scrape = agent.scrape_until(Duration::from_secs(5), |s| {
        s.value("stallwatch_memory_events_total", &oom_kill)
            .is_some_and(|v| v > 0.0)
    });
    drop(hog);
    assert!(kills > 0, "the kernel reports no OOM kill in the container");

    let labels = [("cgroup", container.label.as_str()), ("event", "oom_kill")];
    let exported = scrape
        .value("stallwatch_memory_events_total", &labels)
        .unwrap_or_else(|| panic!("no oom_kill events for {labels:?}:\n{}", scrape.text));
    assert!(
        exported >= 1.0,
        "exported {exported} OOM kills, the kernel {kills}"
    );
    assert_eq!(
        scrape.value(
            "stallwatch_memory_limit_bytes",
            &[("cgroup", container.label.as_str())]
        ),
        Some((64u64 << 20) as f64)
    );

    let stalls = scrape
        .histogram("stallwatch_memory_reclaim_stall_seconds", &container.label)
        .unwrap_or_else(|| {
            panic!(
                "no reclaim stall histogram for {}:\n{}",
                container.label, scrape.text
            )
        });
    eprintln!(
        "oom kills: kernel {kills}, exported {exported}; reclaim stalls: {} totalling {:.3} s",
        stalls.count, stalls.sum
    );
    assert!(stalls.count > 0, "{stalls:?}");

    // Its tasks stalled on memory: the cgroup's own memory.pressure says so.
    let pressure = [
        ("cgroup", container.label.as_str()),
        ("resource", "memory"),
        ("kind", "some"),
    ];
    let stalled = scrape
        .value("stallwatch_pressure_stalled_seconds_total", &pressure)
        .unwrap_or_else(|| panic!("no memory pressure for {}", container.label));
    eprintln!("memory pressure (some): {stalled} s");
    assert!(stalled > 0.0);
}
