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
    (server, wait_for_port(port_file))
}

/// The port a `tcp-peer serve` wrote to `port_file`, once it listens.
fn wait_for_port(port_file: &Path) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(port_file) {
            return text
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("port file {}: {e}", port_file.display()));
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

/// Two network namespaces joined by a veth pair, `10.231.0.1` (server side)
/// and `10.231.0.2` (client side); both deleted when dropped, which
/// removes the pair.
struct NetnsPair {
    server: String,
    client: String,
}

impl NetnsPair {
    const SERVER_IP: &'static str = "10.231.0.1";
    const CLIENT_IP: &'static str = "10.231.0.2";
    const CLIENT_DEV: &'static str = "swclient";

    fn create() -> Self {
        let pid = std::process::id();
        let pair = Self {
            server: format!("stallwatch-test-{pid}-srv"),
            client: format!("stallwatch-test-{pid}-cli"),
        };
        for ns in [&pair.server, &pair.client] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&[
            "-n",
            &pair.server,
            "link",
            "add",
            "swserver",
            "type",
            "veth",
            "peer",
            "name",
            Self::CLIENT_DEV,
            "netns",
            &pair.client,
        ]);
        for (ns, dev, addr) in [
            (&pair.server, "swserver", Self::SERVER_IP),
            (&pair.client, Self::CLIENT_DEV, Self::CLIENT_IP),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        pair
    }

    /// Limits what the client side sends to `rate` with a token bucket,
    /// whose queue is bounded by `bound`: `["latency", "200ms"]` lets packets
    /// queue (the RTT grows), `["limit", "6kb"]` drops what does not fit
    /// (connections retransmit).
    fn shape_client_side(&self, rate: &str, bound: [&str; 2]) {
        let [bound, value] = bound;
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.client,
                "tc",
                "qdisc",
                "add",
                "dev",
                Self::CLIENT_DEV,
                "root",
                "tbf",
                "rate",
                rate,
                "burst",
                "2kb",
                bound,
                value,
            ],
        );
    }

    /// `tcp-peer ARGS` in `cgroup` and in the server's or the client's
    /// namespace.
    fn peer(&self, server_side: bool, cgroup: &TestCgroup, args: &str) -> Workload {
        let ns = if server_side {
            &self.server
        } else {
            &self.client
        };
        Workload::in_cgroups(
            &[cgroup.path.join("cgroup.procs")],
            &format!("exec ip netns exec {ns} '{}' {args}", tcp_peer().display()),
        )
    }

    /// A server in `cgroup` on the server side, and the port it listens on.
    fn serve(&self, cgroup: &TestCgroup, port_file: &PortFile) -> (Workload, u16) {
        let server = self.peer(
            true,
            cgroup,
            &format!(
                "serve '{}' '{}'",
                socket(Self::SERVER_IP, 0),
                port_file.0.display()
            ),
        );
        (server, wait_for_port(&port_file.0))
    }

    /// A client in a new cgroup `name` on the client side, run to its end:
    /// `n` connections to `port` of `bytes` each.
    fn connect(&self, name: &str, port: u16, n: usize, bytes: usize) -> TestCgroup {
        let cgroup = TestCgroup::create(name);
        let mut client = self.peer(
            false,
            &cgroup,
            &format!("connect '{}' {n} {bytes}", socket(Self::SERVER_IP, port)),
        );
        client.wait(Duration::from_secs(120));
        cgroup
    }

    /// A counter of the client's network namespace, as the kernel keeps it
    /// in `file` (`/proc/net/snmp`, `/proc/net/netstat`) under `table`.
    fn client_counter(&self, file: &str, table: &str, name: &str) -> u64 {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.client, "cat", file])
            .output()
            .unwrap_or_else(|e| panic!("reading {file} in {}: {e}", self.client));
        let text = String::from_utf8_lossy(&out.stdout);
        let prefix = format!("{table}:");
        let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
            panic!("no {table} table in {file}:\n{text}");
        };
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("no {table} {name} in {file}:\n{text}"))
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.server, &self.client] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
    }
}

fn ip(args: &[&str]) {
    run("ip", args);
}

fn run(program: &str, args: &[&str]) {
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("running {program} {args:?}: {e}"));
    assert!(status.success(), "{program} {args:?}: {status}");
}

/// Mean of a cgroup's RTT samples, in seconds.
fn mean_rtt(scrape: &Scrape, cgroup: &TestCgroup) -> f64 {
    let rtt = scrape
        .histogram_where(RTT, &[("cgroup", cgroup.label.as_str())])
        .filter(|h| h.count > 0)
        .unwrap_or_else(|| panic!("no RTT samples for {}:\n{}", cgroup.label, scrape.text));
    rtt.sum / rtt.count as f64
}

#[test]
fn rtt_grows_when_the_link_is_slowed() {
    if !privileged("RTT over a shaped veth link") {
        return;
    }
    // Sample every RTT update (at most one per ms), so the samples taken
    // while data queues are in, not just the handshake's.
    let agent = Agent::start(&[
        "--probes",
        "tcp",
        "--tcp-rtt-interval",
        "1ms",
        "--cgroup-rescan-interval",
        "1s",
    ]);
    let link = NetnsPair::create();
    let server_cgroup = TestCgroup::create("tcp-shaped-server");
    let port_file = PortFile::new("tcp-shaped-server");
    let (_server, port) = link.serve(&server_cgroup, &port_file);

    let fast = link.connect("tcp-fast-client", port, 5, 16_384);
    link.shape_client_side("2mbit", ["latency", "200ms"]);
    let slow = link.connect("tcp-slow-client", port, 5, 16_384);

    let scrape = agent.scrape_until(Duration::from_secs(10), |s| {
        count(s, RTT, &fast) > 0 && count(s, RTT, &slow) > 0
    });
    let (fast_rtt, slow_rtt) = (mean_rtt(&scrape, &fast), mean_rtt(&scrape, &slow));
    eprintln!(
        "mean RTT: {:.0} µs on the veth link, {:.0} µs with the client side at 2 Mbit/s",
        fast_rtt * 1e6,
        slow_rtt * 1e6
    );
    assert!(
        slow_rtt > 1e-3 && slow_rtt > 5.0 * fast_rtt,
        "the RTT did not follow the slowed link: {fast_rtt} s before, {slow_rtt} s after"
    );
}

#[test]
fn retransmits_agree_with_the_kernel_s_own_count() {
    if !privileged("TCP retransmits over a lossy veth link") {
        return;
    }
    let agent = Agent::start(&["--probes", "tcp", "--cgroup-rescan-interval", "1s"]);
    let link = NetnsPair::create();
    let server_cgroup = TestCgroup::create("tcp-lossy-server");
    let port_file = PortFile::new("tcp-lossy-server");
    let (_server, port) = link.serve(&server_cgroup, &port_file);
    link.shape_client_side("4mbit", ["limit", "6kb"]);
    let retransmitted = || link.client_counter("/proc/net/snmp", "Tcp", "RetransSegs");
    let before = retransmitted();
    let client_cgroup = link.connect("tcp-lossy-client", port, 3, 131_072);
    // Everything the client's namespace sent came from the client's
    // sockets: the kernel's own count for the namespace is theirs.
    let kernel = retransmitted() - before;
    assert!(
        kernel > 0,
        "the shaped link lost nothing: the test did not test anything"
    );

    let of = [("cgroup", client_cgroup.label.as_str())];
    let scrape = agent.scrape_until(Duration::from_secs(10), |s| {
        s.value("stallwatch_tcp_retransmits_total", &of)
            .is_some_and(|v| v >= kernel as f64)
    });
    let agent_count = scrape
        .value("stallwatch_tcp_retransmits_total", &of)
        .unwrap_or_else(|| panic!("no retransmits for the client:\n{}", scrape.text));
    eprintln!("retransmitted segments: agent {agent_count}, kernel {kernel}");
    assert_eq!(
        agent_count, kernel as f64,
        "retransmitted segments of the client: the agent's count, the kernel's RetransSegs"
    );
    assert_eq!(
        scrape.value(
            "stallwatch_tcp_retransmits_total",
            &[("cgroup", server_cgroup.label.as_str())]
        ),
        Some(0.0),
        "the server's side of the link loses nothing"
    );
}
