//! TCP latency and traffic per container, end to end: a server in one test
//! cgroup, a client in another, on loopback. The agent must give each side
//! its own connects, RTT samples and bytes, although the kernel handles most
//! of it in softirq context on behalf of neither.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use stallwatch_tests::{Agent, Scrape, TestCgroup, Workload, helper_bin, privileged};

const CONNECT: &str = "stallwatch_tcp_connect_latency_seconds";
const RTT: &str = "stallwatch_tcp_rtt_seconds";
const FAILURES: &str = "stallwatch_tcp_connect_failures_total";
const RESETS: &str = "stallwatch_tcp_resets_total";
const BYTES: &str = "stallwatch_network_bytes_total";
const PACKETS: &str = "stallwatch_network_packets_total";

/// Connections the client opens, one after another, and what each sends
/// (and gets echoed back).
const CONNECTIONS: usize = 20;
const PAYLOAD: usize = 64 * 1024;

fn tcp_peer() -> PathBuf {
    helper_bin("tcp-peer", env!("CARGO_BIN_EXE_tcp-peer"))
}

/// `tcp-peer ARGS` started inside `cgroup`, so its sockets are the cgroup's.
fn peer_in(cgroup: &TestCgroup, args: &str) -> Workload {
    Workload::in_cgroups(
        &[cgroup.path.join("cgroup.procs")],
        &format!("exec '{}' {args}", tcp_peer().display()),
    )
}

/// A `tcp-peer serve` in `cgroup` on `ip`, and the port it listens on.
fn server_in(cgroup: &TestCgroup, ip: &str, port_file: &Path) -> (Workload, u16) {
    let server = peer_in(
        cgroup,
        &format!("serve '{}' '{}'", socket(ip, 0), port_file.display()),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(port_file) {
            let port = text
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("port file {}: {e}", port_file.display()));
            return (server, port);
        }
        assert!(
            Instant::now() < deadline,
            "the server did not listen within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn socket(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// A file name for the server's port, removed when dropped.
struct PortFile(PathBuf);

impl PortFile {
    fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!(
            "stallwatch-test-{}-{name}.port",
            std::process::id()
        )))
    }
}

impl Drop for PortFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn count(scrape: &Scrape, name: &str, cgroup: &TestCgroup) -> u64 {
    scrape
        .histogram_where(name, &[("cgroup", cgroup.label.as_str())])
        .map_or(0, |h| h.count)
}

fn traffic(scrape: &Scrape, name: &str, cgroup: &TestCgroup, direction: &str) -> f64 {
    scrape.sum(
        name,
        &[("cgroup", cgroup.label.as_str()), ("direction", direction)],
    )
}

/// Server in A, client in B opening `CONNECTIONS` connections to it on `ip`.
fn each_side_gets_its_own_connects_rtt_and_traffic(ip: &str) {
    // The idle cgroup's one process starts before the agent and never
    // touches the network.
    let idle = TestCgroup::create("tcp-idle");
    let _idle = Workload::in_cgroups(&[idle.path.join("cgroup.procs")], "exec sleep 3600");
    let agent = Agent::start(&["--probes", "tcp", "--cgroup-rescan-interval", "1s"]);

    let server_cgroup = TestCgroup::create("tcp-server");
    let client_cgroup = TestCgroup::create("tcp-client");
    let port_file = PortFile::new("tcp-server");
    let (_server, port) = server_in(&server_cgroup, ip, &port_file.0);
    let mut client = peer_in(
        &client_cgroup,
        &format!("connect '{}' {CONNECTIONS} {PAYLOAD}", socket(ip, port)),
    );
    client.wait(Duration::from_secs(60));

    let scrape = agent.scrape_until(Duration::from_secs(10), |s| {
        count(s, CONNECT, &client_cgroup) >= CONNECTIONS as u64 && count(s, RTT, &server_cgroup) > 0
    });
    let connects = scrape
        .histogram_where(CONNECT, &[("cgroup", client_cgroup.label.as_str())])
        .unwrap_or_else(|| panic!("no connect latency for the client:\n{}", scrape.text));
    assert_eq!(
        connects.count, CONNECTIONS as u64,
        "one connect latency per connection the client opened"
    );
    let mean = connects.sum / connects.count as f64;
    assert!(
        mean > 1e-6 && mean < 1.0,
        "a loopback connect takes between 1 µs and 1 s, not {mean} s"
    );
    assert_eq!(
        count(&scrape, CONNECT, &server_cgroup),
        0,
        "the server opened no connection"
    );
    for side in [&client_cgroup, &server_cgroup] {
        let rtt = scrape
            .histogram_where(RTT, &[("cgroup", side.label.as_str())])
            .filter(|h| h.count > 0)
            .unwrap_or_else(|| panic!("no RTT samples for {}:\n{}", side.label, scrape.text));
        assert!(
            rtt.count <= 2 * CONNECTIONS as u64,
            "{}: {} RTT samples from {CONNECTIONS} short connections: sampling is not bounded",
            side.label,
            rtt.count
        );
        let mean = rtt.sum / rtt.count as f64;
        assert!(
            mean > 0.0 && mean < 0.1,
            "{}: a loopback RTT of {mean} s",
            side.label
        );
    }

    // Every packet the client sends, the server receives, and the other
    // way round: loopback loses none.
    let sent = traffic(&scrape, BYTES, &client_cgroup, "tx");
    let received = traffic(&scrape, BYTES, &server_cgroup, "rx");
    let payload = (CONNECTIONS * PAYLOAD) as f64;
    assert!(
        sent >= payload && sent < payload * 1.1,
        "the client sent {sent} bytes for {payload} bytes of payload"
    );
    assert!(
        (sent - received).abs() <= sent * 0.01,
        "the client sent {sent} bytes, the server received {received}"
    );
    let echoed = traffic(&scrape, BYTES, &server_cgroup, "tx");
    assert!(
        echoed >= payload && echoed < payload * 1.1,
        "the server echoed {echoed} bytes for {payload} bytes of payload"
    );
    let packets_sent = traffic(&scrape, PACKETS, &client_cgroup, "tx");
    let packets_received = traffic(&scrape, PACKETS, &server_cgroup, "rx");
    assert!(
        packets_sent >= CONNECTIONS as f64 * 3.0 && packets_sent == packets_received,
        "the client sent {packets_sent} packets, the server received {packets_received}"
    );

    eprintln!(
        "{ip}: {} connects, mean {:.1} µs; RTT samples client {} server {}; \
         bytes client tx {sent} server rx {received} server tx {echoed}; packets {packets_sent}",
        connects.count,
        mean * 1e6,
        count(&scrape, RTT, &client_cgroup),
        count(&scrape, RTT, &server_cgroup),
    );
    for name in [CONNECT, RTT, FAILURES, RESETS, BYTES, PACKETS] {
        assert!(
            !scrape.has(name, &[("cgroup", idle.label.as_str())]),
            "the idle cgroup has {name}:\n{}",
            scrape.text
        );
    }
}

#[test]
fn ipv4_connects_rtt_and_traffic_go_to_each_side_s_cgroup() {
    if !privileged("TCP attribution over IPv4") {
        return;
    }
    each_side_gets_its_own_connects_rtt_and_traffic("127.0.0.1");
}

#[test]
fn ipv6_connects_rtt_and_traffic_go_to_each_side_s_cgroup() {
    if !privileged("TCP attribution over IPv6") {
        return;
    }
    each_side_gets_its_own_connects_rtt_and_traffic("::1");
}

#[test]
fn a_refused_connect_is_a_failure_and_a_received_reset() {
    if !privileged("refused TCP connects") {
        return;
    }
    const ATTEMPTS: usize = 7;
    let agent = Agent::start(&["--probes", "tcp", "--cgroup-rescan-interval", "1s"]);
    let client_cgroup = TestCgroup::create("tcp-refused");
    // A port nothing listens on: bound, then closed again.
    let port = stallwatch_tests::free_port();
    let mut client = peer_in(
        &client_cgroup,
        &format!("refused '{}' {ATTEMPTS}", socket("127.0.0.1", port)),
    );
    client.wait(Duration::from_secs(30));

    let of = [("cgroup", client_cgroup.label.as_str())];
    let scrape = agent.scrape_until(Duration::from_secs(10), |s| {
        s.value(FAILURES, &of).is_some_and(|v| v >= ATTEMPTS as f64)
    });
    assert_eq!(
        scrape.value(FAILURES, &of),
        Some(ATTEMPTS as f64),
        "one failure per refused connect:\n{}",
        scrape.text
    );
    let received = [
        ("cgroup", client_cgroup.label.as_str()),
        ("direction", "received"),
    ];
    assert_eq!(
        scrape.value(RESETS, &received),
        Some(ATTEMPTS as f64),
        "each refusal is a reset the client received"
    );
    assert_eq!(
        count(&scrape, CONNECT, &client_cgroup),
        0,
        "no connect was established, so there is no latency"
    );
}
