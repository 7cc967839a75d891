//! Disk I/O latency per container, end to end: a process in a test cgroup
//! reads and writes with `O_DIRECT`, so every block reaches the device; the
//! agent must attribute exactly those requests to that cgroup, and count as
//! many completions on the device as bpftrace does.

use std::time::Duration;

use stallwatch_tests::{Agent, Bpftrace, Scrape, Scratch, TestCgroup, Workload, privileged};

const LATENCY: &str = "stallwatch_disk_io_latency_seconds";
const QUEUE: &str = "stallwatch_disk_io_queue_seconds";
const REQUESTS: &str = "stallwatch_disk_io_requests_total";
const BYTES: &str = "stallwatch_disk_io_bytes_total";
const UNMATCHED: &str = "stallwatch_disk_io_unmatched_total";
/// 2^30 ns, the bucket bound nearest above 1 s.
const ABOUT_ONE_S: f64 = 1.073741824;

/// Direct I/Os of each kind the workload issues, one 4 KiB block at a time.
const BLOCKS: usize = 300;

/// `dd` writing then reading `BLOCKS` blocks of `path` with `O_DIRECT`, one
/// synchronous request at a time (so none can be merged with another).
fn direct_io_script(path: &str) -> String {
    format!(
        "dd if=/dev/zero of={path} bs=4096 count={BLOCKS} oflag=direct conv=notrunc 2>/dev/null \
         && dd if={path} of=/dev/null bs=4096 count={BLOCKS} iflag=direct 2>/dev/null"
    )
}

#[test]
fn direct_io_is_attributed_to_the_cgroup_that_issued_it_raw() {
    if privileged("disk I/O attribution, raw tracepoints") {
        direct_io_is_attributed("raw");
    }
}

#[test]
fn direct_io_is_attributed_to_the_cgroup_that_issued_it_classic() {
    if privileged("disk I/O attribution, classic tracepoints") {
        direct_io_is_attributed("tracepoint");
    }
}

/// The agent with the disk probes attached as `attach` asks, checked in its log.
fn agent_attached(attach: &str, flags: &[&str]) -> Agent {
    let agent = Agent::start(&[&["--disk-attach", attach], flags].concat());
    let attached = format!("probe=\"disk\" attach=\"{attach}\"");
    assert!(
        agent.log().contains(&attached),
        "the agent did not attach with {attached}:\n{}",
        agent.log()
    );
    agent
}

fn direct_io_is_attributed(attach: &str) {
    // The idle sibling's one process is started (and its binary read, should
    // that reach the disk) before the agent is: from then on it does nothing.
    let idle = TestCgroup::create(&format!("disk-idle-{attach}"));
    let _idle = Workload::in_cgroups(&[idle.path.join("cgroup.procs")], "exec sleep 3600");
    std::thread::sleep(Duration::from_millis(300));
    let agent = agent_attached(attach, &["--cgroup-rescan-interval", "1s"]);
    let scratch = Scratch::create(BLOCKS * 4096);
    let busy = TestCgroup::create(&format!("disk-busy-{attach}"));
    let mut io = Workload::in_cgroups(
        &[busy.path.join("cgroup.procs")],
        &direct_io_script(&scratch.path.display().to_string()),
    );
    io.wait(Duration::from_secs(120));

    let of = |op| {
        [
            ("cgroup", busy.label.as_str()),
            ("device", scratch.disk.as_str()),
            ("op", op),
        ]
    };
    let scheduler = scratch.scheduler();
    let scrape = agent.scrape_until(Duration::from_secs(10), |s| {
        s.histogram_where(LATENCY, &of("read"))
            .is_some_and(|h| h.count >= BLOCKS as u64)
    });
    for op in ["write", "read"] {
        let hist = scrape
            .histogram_where(LATENCY, &of(op))
            .unwrap_or_else(|| panic!("no {op} latency for {}:\n{}", busy.label, scrape.text));
        eprintln!(
            "{op}: {} requests on {}, mean {:.1} µs",
            hist.count,
            scratch.disk,
            hist.sum / hist.count as f64 * 1e6
        );
        // Exactly the direct I/Os, give or take a few reads of dd's own
        // files should they not be cached.
        assert!(
            hist.count >= BLOCKS as u64 && hist.count <= BLOCKS as u64 * 11 / 10 + 8,
            "{op}: {} requests for {BLOCKS} direct I/Os",
            hist.count
        );
        assert_eq!(
            scrape.value(REQUESTS, &of(op)),
            Some(hist.count as f64),
            "every {op} has a latency"
        );
        if op == "write" {
            assert_eq!(
                scrape.value(BYTES, &of(op)),
                Some((hist.count * 4096) as f64),
                "4 KiB per write"
            );
        }
        assert_eq!(
            hist.fraction_above(0.000001024),
            1.0,
            "{op}: a request took at most 1 µs: {hist:?}"
        );
        assert_eq!(
            hist.fraction_above(ABOUT_ONE_S),
            0.0,
            "{op}: a request took over 1 s: {hist:?}"
        );

        let queued = scrape.histogram_where(QUEUE, &of(op));
        let queued_count = queued.as_ref().map_or(0, |q| q.count);
        eprintln!("{op}: {queued_count} queue samples ({scheduler})");
        if scheduler == "none" {
            // Requests may be issued directly: no sample, not a zero one.
            assert!(
                queued_count <= hist.count,
                "{op}: {queued_count} queue samples for {} requests",
                hist.count
            );
        } else {
            // An I/O scheduler queues every request before it is issued.
            assert_eq!(
                queued_count, hist.count,
                "{op}: with {scheduler}, every request has a queue time"
            );
        }
        if let Some(queued) = queued {
            assert_eq!(
                queued.fraction_above(ABOUT_ONE_S),
                0.0,
                "{op}: a request waited over 1 s in the queue: {queued:?}"
            );
        }
    }
    let idle_series: Vec<&str> = scrape
        .text
        .lines()
        .filter(|l| l.starts_with("stallwatch_disk_io") && l.contains(idle.label.as_str()))
        .filter(|l| !l.contains("_bucket"))
        .collect();
    assert!(
        idle_series.is_empty(),
        "the idle sibling has disk series:\n{}",
        idle_series.join("\n")
    );

    // The cgroup's series go with it.
    let label = busy.label.clone();
    drop(io);
    drop(busy);
    let gone = agent.scrape_until(Duration::from_secs(10), |s| {
        !s.has("stallwatch_disk_io", &[("cgroup", label.as_str())])
    });
    assert!(
        !gone.has("stallwatch_disk_io", &[("cgroup", label.as_str())]),
        "{label} is still exported"
    );
}

/// Every completion on the device is either some cgroup's request or
/// unmatched: together they must agree with bpftrace counting
/// `block_rq_complete` on that device over the same time.
#[test]
fn device_totals_agree_with_bpftrace_raw() {
    if privileged("disk I/O cross-check with bpftrace, raw tracepoints") {
        device_totals_agree_with_bpftrace("raw");
    }
}

#[test]
fn device_totals_agree_with_bpftrace_classic() {
    if privileged("disk I/O cross-check with bpftrace, classic tracepoints") {
        device_totals_agree_with_bpftrace("tracepoint");
    }
}

fn device_totals_agree_with_bpftrace(attach: &str) {
    let agent = agent_attached(attach, &[]);
    let scratch = Scratch::create(BLOCKS * 4096);
    let busy = TestCgroup::create(&format!("disk-xcheck-{attach}"));
    let on_disk = [("device", scratch.disk.as_str())];
    let device_total = |s: &Scrape| s.sum(REQUESTS, &on_disk) + s.sum(UNMATCHED, &on_disk);
    let bpftrace = Bpftrace::start(&format!(
        "tracepoint:block:block_rq_complete /args->dev == {}/ {{ @n = count(); }}",
        scratch.kernel_dev
    ));
    let before = device_total(&agent.scrape());
    let mut io = Workload::in_cgroups(
        &[busy.path.join("cgroup.procs")],
        &direct_io_script(&scratch.path.display().to_string()),
    );
    io.wait(Duration::from_secs(120));
    let after = device_total(&agent.scrape_until(Duration::from_secs(10), |s| {
        device_total(s) >= before + 1.9 * BLOCKS as f64
    }));
    let reference = bpftrace.stop().get("@n") as f64;
    let counted = after - before;
    eprintln!(
        "{}: agent {counted} completions, bpftrace {reference}",
        scratch.disk
    );
    assert!(
        reference >= 1.9 * BLOCKS as f64,
        "bpftrace saw only {reference} completions"
    );
    let diff = (counted - reference).abs() / reference;
    assert!(diff <= 0.10, "totals differ by {:.1} %", diff * 100.0);
}
