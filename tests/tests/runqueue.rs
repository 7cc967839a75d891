//! Run-queue latency, end to end: two CPU hogs sharing one CPU must wait for
//! whole time slices, and the agent must say so for their cgroup — and not
//! for an idle sibling.

use std::{
    thread,
    time::{Duration, Instant},
};

use stallwatch_tests::{Agent, Bpftrace, TestCgroup, Workload, privileged};

const METRIC: &str = "stallwatch_cpu_runqueue_latency_seconds";
/// 2^20 ns, the bucket bound nearest above 1 ms.
const ABOUT_ONE_MS: f64 = 0.001048576;

#[test]
fn two_hogs_on_one_cpu_queue_for_milliseconds_while_an_idle_sibling_does_not_raw() {
    if privileged("runqueue end to end, raw tracepoints, sched_info") {
        hogs_queue_and_idle_sibling_does_not("raw", "sched-info");
    }
}

#[test]
fn two_hogs_on_one_cpu_queue_for_milliseconds_while_an_idle_sibling_does_not_classic() {
    if privileged("runqueue end to end, classic tracepoints, sched_info") {
        hogs_queue_and_idle_sibling_does_not("tracepoint", "sched-info");
    }
}

#[test]
fn two_hogs_on_one_cpu_queue_for_milliseconds_while_an_idle_sibling_does_not_raw_timestamps() {
    if privileged("runqueue end to end, raw tracepoints, timestamps") {
        hogs_queue_and_idle_sibling_does_not("raw", "timestamps");
    }
}

#[test]
fn two_hogs_on_one_cpu_queue_for_milliseconds_while_an_idle_sibling_does_not_classic_timestamps() {
    if privileged("runqueue end to end, classic tracepoints, timestamps") {
        hogs_queue_and_idle_sibling_does_not("tracepoint", "timestamps");
    }
}

fn hogs_queue_and_idle_sibling_does_not(attach: &str, source: &str) {
    let agent = Agent::start(&["--runqueue-attach", attach, "--runqueue-source", source]);
    let attached = format!("attach=\"{attach}\" source=\"{source}\"");
    assert!(
        agent.log().contains(&attached),
        "the agent did not attach with {attached}:
{}",
        agent.log()
    );
    let attach = format!("{attach}-{source}");
    let busy = TestCgroup::create(&format!("busy-{attach}"));
    let idle = TestCgroup::create(&format!("idle-{attach}"));
    let hogs = [
        Workload::cpu_hog().pin_to_cpu(0),
        Workload::cpu_hog().pin_to_cpu(0),
    ];
    for hog in &hogs {
        busy.add(hog.pid());
    }
    let sleeper = Workload::sleeper(20).pin_to_cpu(1);
    idle.add(sleeper.pid());

    let started = Instant::now();
    thread::sleep(Duration::from_secs(3));
    let scrape = agent.scrape();
    let elapsed = started.elapsed().as_secs_f64();
    drop(hogs);
    drop(sleeper);

    // Judged by time rather than by number of samples: any other task waking
    // on CPU 0 preempts a hog for microseconds, which adds many short
    // samples but little waiting time.
    let busy_hist = scrape
        .histogram(METRIC, &busy.label)
        .unwrap_or_else(|| panic!("no {METRIC} series for {}:\n{}", busy.label, scrape.text));
    let busy_long = busy_hist.time_above(ABOUT_ONE_MS) / busy_hist.sum;
    let idle_hist = scrape
        .histogram(METRIC, &idle.label)
        .unwrap_or_else(|| panic!("no {METRIC} series for {}:\n{}", idle.label, scrape.text));
    let idle_long = idle_hist.fraction_above(ABOUT_ONE_MS);
    eprintln!(
        "{attach}: busy: {} waits, {:.2} s waited in {elapsed:.2} s, {:.0} % of it in waits > 1 ms; \
         idle: {} waits, {:.4} s waited, {:.0} % of waits > 1 ms",
        busy_hist.count,
        busy_hist.sum,
        busy_long * 100.0,
        idle_hist.count,
        idle_hist.sum,
        idle_long * 100.0
    );

    assert!(
        busy_hist.count > 100,
        "too few samples for the hogs: {busy_hist:?}"
    );
    // Two hogs on one CPU: while one runs, the other waits.
    assert!(
        busy_hist.sum > 0.5 * elapsed,
        "the hogs waited {} s in {elapsed} s: {busy_hist:?}",
        busy_hist.sum
    );
    assert!(
        busy_long > 0.5,
        "hogs sharing a CPU should mostly wait whole time slices (> 1 ms), but only {:.0} % of their waiting was in such waits: {busy_hist:?}",
        busy_long * 100.0
    );
    assert!(
        idle_hist.count > 10,
        "the sleeper woke up 150 times: {idle_hist:?}"
    );
    // Far less waiting than the hogs (emulated VMs make every wakeup slow,
    // so the bound is relative, not absolute).
    assert!(
        idle_hist.sum < busy_hist.sum / 4.0,
        "an idle sibling waited {} s, the hogs {} s: {idle_hist:?}",
        idle_hist.sum,
        busy_hist.sum
    );
    assert!(
        idle_long < 0.2,
        "an idle sibling should rarely wait > 1 ms, but {:.0} % of its waits did: {idle_hist:?}",
        idle_long * 100.0
    );
}

#[test]
fn a_container_in_the_kubelet_layout_gets_its_container_labels() {
    if !privileged("runqueue container labels") {
        return;
    }
    let agent = Agent::start(&[]);
    let uid = "0f6a8b3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c";
    let id = "4e1f8a2c9b7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f";
    let pod_slice = format!("kubepods-burstable-pod{}.slice", uid.replace('-', "_"));
    let container = TestCgroup::create_nested(
        "k8s",
        &[
            "kubepods.slice",
            "kubepods-burstable.slice",
            &pod_slice,
            &format!("cri-containerd-{id}.scope"),
        ],
    );
    let workload = Workload::sleeper(10);
    container.add(workload.pid());
    thread::sleep(Duration::from_secs(1));
    let scrape = agent.scrape();
    drop(workload);

    let count = format!("{METRIC}_count");
    let labels = [
        ("cgroup", container.label.as_str()),
        ("container_id", id),
        ("pod_uid", uid),
        ("qos_class", "burstable"),
    ];
    let samples = scrape
        .value(&count, &labels)
        .unwrap_or_else(|| panic!("no series with {labels:?}:\n{}", scrape.text));
    assert!(samples > 10.0, "{samples} samples");
}

#[test]
fn a_removed_cgroup_disappears_from_the_scrape() {
    if !privileged("runqueue forgets removed cgroups") {
        return;
    }
    let agent = Agent::start(&["--cgroup-rescan-interval", "500ms"]);
    let label;
    {
        let cgroup = TestCgroup::create("short-lived");
        label = cgroup.label.clone();
        let sleeper = Workload::sleeper(10);
        cgroup.add(sleeper.pid());
        thread::sleep(Duration::from_secs(1));
        assert!(
            agent.scrape().histogram(METRIC, &label).is_some(),
            "the cgroup was never exported"
        );
    }
    // Removed now; a rescan (at most 500 ms later) forgets it.
    thread::sleep(Duration::from_millis(1200));
    let _ = agent.scrape();
    let scrape = agent.scrape();
    assert!(
        scrape.histogram(METRIC, &label).is_none(),
        "{label} is still exported:\n{}",
        scrape.text
    );
}

/// The agent and a bpftrace script measuring the same thing on the same
/// tracepoints, at the same time, must count the same waits: the kernel's
/// own accounting and the agent's timestamps alike.
#[test]
fn agrees_with_bpftrace_on_the_same_workload() {
    if privileged("runqueue cross-check with bpftrace, sched_info") {
        agrees_with_bpftrace("sched-info");
    }
}

#[test]
fn agrees_with_bpftrace_on_the_same_workload_timestamps() {
    if privileged("runqueue cross-check with bpftrace, timestamps") {
        agrees_with_bpftrace("timestamps");
    }
}

fn agrees_with_bpftrace(source: &str) {
    let agent = Agent::start(&["--runqueue-source", source]);
    assert!(
        agent.log().contains(&format!("source=\"{source}\"")),
        "the agent did not measure with {source}:\n{}",
        agent.log()
    );
    let cgroup = TestCgroup::create(&format!("xcheck-{source}"));
    let script = BPFTRACE_PENDING_WAITS.replace("CGROUP_ID", &cgroup.id().to_string());
    let bpftrace = Bpftrace::start(&script);
    let hogs = [
        Workload::cpu_hog().pin_to_cpu(0),
        Workload::cpu_hog().pin_to_cpu(0),
    ];
    for hog in &hogs {
        cgroup.add(hog.pid());
    }
    thread::sleep(Duration::from_secs(3));
    // Killed hogs are switched out one last time, which adds their last
    // waits in both tools; then bpftrace prints its totals.
    drop(hogs);
    thread::sleep(Duration::from_millis(200));
    let reference = bpftrace.stop();
    let hist = agent
        .scrape()
        .histogram(METRIC, &cgroup.label)
        .unwrap_or_else(|| panic!("no {METRIC} series for {}", cgroup.label));
    let (count, sum_ns) = (reference.get("@n"), reference.get("@sum"));
    eprintln!(
        "{source}: agent: {} waits, {:.6} s; bpftrace: {count} waits, {:.6} s",
        hist.count,
        hist.sum,
        sum_ns as f64 / 1e9
    );
    assert!(count > 100, "bpftrace saw only {count} waits");
    let count_diff = (hist.count as f64 - count as f64).abs() / count as f64;
    let sum_diff = (hist.sum - sum_ns as f64 / 1e9).abs() / (sum_ns as f64 / 1e9);
    assert!(
        count_diff < 0.02,
        "counts differ by {:.1} %",
        count_diff * 100.0
    );
    assert!(sum_diff < 0.02, "sums differ by {:.1} %", sum_diff * 100.0);
}

/// Run-queue waits of one cgroup, attributed at switch-out as the agent does.
const BPFTRACE_PENDING_WAITS: &str = r#"
tracepoint:sched:sched_wakeup, tracepoint:sched:sched_wakeup_new { @since[args->pid] = nsecs; }
tracepoint:sched:sched_switch {
    if ((args->prev_state & 0xff) == 0) { @since[args->prev_pid] = nsecs; }
    $since = @since[args->next_pid];
    if ($since) { @pending[args->next_pid] = nsecs - $since; }
    delete(@since[args->next_pid]);
    $wait = @pending[args->prev_pid];
    if ($wait && cgroup == CGROUP_ID) { @n = count(); @sum = sum($wait); }
    delete(@pending[args->prev_pid]);
}
END { clear(@since); clear(@pending); }
"#;
