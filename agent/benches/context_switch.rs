//! A context-switch-heavy load: a pipe ping-pong between two threads pinned
//! to the same CPU, so every round trip is two wakeups and two switches —
//! the events the run-queue probes handle. `cargo xtask bench` runs this with
//! no agent, with the agent, and with an equivalent bpftrace script, in
//! alternation, and reports the slowdowns as ratios.

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    thread,
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};

fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
    // sched_setaffinity only read and write that local set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Times `iters` round trips of one byte between two threads on CPU 0.
fn ping_pong(iters: u64) -> Duration {
    let (mut here, mut there) = match UnixStream::pair() {
        Ok(pair) => pair,
        Err(e) => panic!("socketpair: {e}"),
    };
    let echo = thread::spawn(move || {
        pin_to_cpu0();
        let mut byte = [0u8; 1];
        while there.read_exact(&mut byte).is_ok() {
            if there.write_all(&byte).is_err() {
                break;
            }
        }
    });
    pin_to_cpu0();
    let mut byte = [0u8; 1];
    let start = Instant::now();
    for _ in 0..iters {
        if here.write_all(&byte).is_err() || here.read_exact(&mut byte).is_err() {
            panic!("the echo thread went away");
        }
    }
    let elapsed = start.elapsed();
    drop(here);
    let _ = echo.join();
    elapsed
}

fn context_switch(c: &mut Criterion) {
    c.bench_function("pipe_ping_pong_round_trip", |b| b.iter_custom(ping_pong));
}

criterion_group!(benches, context_switch);
criterion_main!(benches);
