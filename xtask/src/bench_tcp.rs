//! The TCP part of `cargo xtask bench`: what the agent costs network-bound
//! loads on loopback, where nothing but the CPU limits them, so every
//! per-packet cost shows.
//!
//! - `iperf3` streams: throughput, few large packets; the bits loopback
//!   received in a window, from its interface counters.
//! - `wrk` sends small HTTP requests over 16 keep-alive connections to a
//!   minimal server in this process: requests per second, one small packet
//!   each way per request, and an RTT update per ACK; the responses the
//!   server sent in a window.
//!
//! Each runs without a break while the agent, with its TCP probes alone or
//! whole, is switched on and off around it ([`crate::bench_arms`]).

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{
    bench::{BenchArgs, Started, scraped_sum},
    bench_arms::{self, Arm, Load, Tracer},
};

/// As in [`crate::bench_disk`]: without the agent, with this signal's
/// probes, with the whole agent, and the control; and for reference
/// bpftrace keeping the run-queue histogram per cgroup, the part of the
/// whole agent that wrk's context switches cost most.
const ARMS: [Arm; 5] = [
    ("no-tracing", Tracer::None),
    ("tcp probes", Tracer::Agent(&["--probes", "tcp"])),
    ("whole agent", Tracer::Agent(&[])),
    bench_arms::CONTROL,
    ("bt runqlat", Tracer::Bpftrace(crate::bench::RUNQLAT_BT)),
];

/// Issue #6's bar: the agent costs at most 5 % of either load.
const GOAL: f64 = 0.95;

/// Bytes the loopback interface has received.
const LO_RX_BYTES: &str = "/sys/class/net/lo/statistics/rx_bytes";

/// Loopback ports of the loads' servers, beside the agent's.
const IPERF_PORT: u16 = 19751;

pub fn run(agent: &std::path::Path, args: &BenchArgs) -> anyhow::Result<()> {
    let _iperf = start_iperf_server()?;
    let http = TcpListener::bind("127.0.0.1:0").context("binding the HTTP server")?;
    let http_port = http.local_addr().context("the HTTP server's port")?.port();
    let responses = Arc::new(AtomicU64::new(0));
    let served = Arc::clone(&responses);
    thread::spawn(move || serve_http(http, &served));

    let mut loads = vec![
        Load {
            name: "iperf3 stream",
            unit: "bit/s",
            goal: GOAL,
            start: Box::new(|| bench_arms::start_load(iperf3_command(24 * 3600), "iperf3 -c")),
            done: Box::new(|| {
                bench_arms::first_number(Path::new(LO_RX_BYTES)).map(|bytes| bytes * 8.0)
            }),
        },
        Load {
            name: "wrk requests",
            unit: "requests/s",
            goal: GOAL,
            start: Box::new(move || {
                bench_arms::start_load(wrk_command(http_port, 24 * 3600), "wrk")
            }),
            done: Box::new(|| Ok(responses.load(Ordering::Relaxed) as f64)),
        },
    ];
    println!(
        "tcp loads: iperf3 -c 127.0.0.1 (bits/s received by lo) and wrk -t2 -c16 on a keep-alive HTTP server \
         (responses/s), {} ms windows",
        args.window_ms
    );
    bench_arms::compare("tcp", agent, args, &ARMS, &mut loads, |port| {
        if scraped_sum(port, "stallwatch_network_packets_total")? == 0 {
            bail!("the agent counted no packets during the benchmark");
        }
        Ok(())
    })?;
    probe_time(agent, args)?;
    println!();
    Ok(())
}

/// The TCP probes' own run time, as the kernel counts it, over one iperf3
/// run: per packet for the `cgroup_skb` programs (each packet runs egress
/// on the sender and ingress on the receiver) and per callback for
/// `sock_ops`, and as a share of the time the load ran.
fn probe_time(agent: &std::path::Path, args: &BenchArgs) -> anyhow::Result<()> {
    const CGROUP_SKB: u32 = 8;
    const SOCK_OPS: u32 = 13;
    let secs = args.measurement_secs;
    let (bits, programs, started) =
        bench_arms::with_bpf_stats(agent, args, &["--probes", "tcp"], || iperf3(secs))?;
    drop(started);
    let of_type = |t: u32| {
        programs
            .iter()
            .filter(|p| p.prog_type == t)
            .fold((0u64, 0u64), |(runs, ns), p| (runs + p.runs, ns + p.run_ns))
    };
    let (skb_runs, skb_ns) = of_type(CGROUP_SKB);
    let (ops_runs, ops_ns) = of_type(SOCK_OPS);
    if skb_runs == 0 || ops_runs == 0 {
        bail!("the agent's TCP probes did not run during the measurement");
    }
    let total_ns: u64 = programs.iter().map(|p| p.run_ns).sum();
    println!(
        "tcp probes' run time (kernel.bpf_stats_enabled), iperf3 at {:.1} Gbit/s: cgroup_skb {:.0} ns per packet \
         ({skb_runs} runs), sock_ops {:.0} ns per callback ({ops_runs} runs); all programs {:.1} ms per second of load",
        bits / 1e9,
        skb_ns as f64 / skb_runs as f64,
        ops_ns as f64 / ops_runs as f64,
        total_ns as f64 / 1e6 / f64::from(secs),
    );
    Ok(())
}

fn start_iperf_server() -> anyhow::Result<Started> {
    let child = Command::new("iperf3")
        .args(["-s", "-B", "127.0.0.1", "-p", &IPERF_PORT.to_string()])
        // It reports each test's end as an error on stderr; the client
        // reports what matters.
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -s (cargo xtask setup installs it)")?;
    let started = Started::new(child, libc::SIGTERM);
    for _ in 0..100 {
        if listening(IPERF_PORT) {
            return Ok(started);
        }
        thread::sleep(Duration::from_millis(50));
    }
    bail!("iperf3 -s did not listen on 127.0.0.1:{IPERF_PORT} within 5 s")
}

/// Whether a socket listens on 127.0.0.1:`port`, from `/proc/net/tcp`
/// (connecting to find out would count as a test run to iperf3).
fn listening(port: u16) -> bool {
    const LISTEN: &str = "0A";
    let local = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp").is_ok_and(|table| {
        table.lines().skip(1).any(|line| {
            let mut fields = line.split_whitespace().skip(1);
            fields.next() == Some(local.as_str()) && fields.nth(1) == Some(LISTEN)
        })
    })
}

/// One iperf3 stream for `secs` seconds: the bits per second received.
fn iperf3(secs: u32) -> anyhow::Result<f64> {
    let mut iperf3 = iperf3_command(secs);
    iperf3.arg("-J");
    bench_arms::json_number(
        &mut iperf3,
        "iperf3 -c",
        "/end/sum_received/bits_per_second",
    )
}

/// An iperf3 stream to the server of [`start_iperf_server`] for `secs`.
fn iperf3_command(secs: u32) -> Command {
    let mut iperf3 = Command::new("iperf3");
    iperf3
        .args(["-c", "127.0.0.1", "-p", &IPERF_PORT.to_string()])
        .args(["-t", &secs.to_string()]);
    iperf3
}

/// wrk on the HTTP server on `port` for `secs` seconds.
fn wrk_command(port: u16, secs: u32) -> Command {
    let mut wrk = Command::new("wrk");
    wrk.args(["-t2", "-c16", &format!("-d{secs}s")])
        .arg(format!("http://127.0.0.1:{port}/"));
    wrk
}

/// A minimal HTTP/1.1 keep-alive server: a thread per connection, the same
/// short response to every request, counted in `responses`.
fn serve_http(listener: TcpListener, responses: &Arc<AtomicU64>) {
    for stream in listener.incoming().flatten() {
        let responses = Arc::clone(responses);
        thread::spawn(move || answer(stream, &responses));
    }
}

fn answer(mut stream: TcpStream, responses: &AtomicU64) {
    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
    let mut buf = [0u8; 4096];
    let mut filled = 0;
    loop {
        let Ok(n) = stream.read(&mut buf[filled..]) else {
            return;
        };
        if n == 0 {
            return;
        }
        filled += n;
        // Answer each complete request head (wrk sends no bodies).
        while let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            if stream.write_all(RESPONSE).is_err() {
                return;
            }
            responses.fetch_add(1, Ordering::Relaxed);
            buf.copy_within(end + 4..filled, 0);
            filled -= end + 4;
        }
        if filled == buf.len() {
            // A request head larger than the buffer: not wrk's.
            return;
        }
    }
}
