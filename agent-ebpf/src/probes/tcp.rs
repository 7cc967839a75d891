//! TCP latency and network traffic per cgroup.
//!
//! Most TCP events happen in softirq context, where `current` has nothing to
//! do with the socket, so everything here is attributed by the socket's own
//! cgroup (a socket belongs to the cgroup of the task that created it; an
//! accepted socket to its listener's). Three kinds of program, all of which
//! the kernel calls with the socket at hand and none of which needs a kernel
//! struct offset:
//!
//! - `cgroup_skb`, ingress and egress, attached to the cgroup2 root: the
//!   kernel runs it for every IP packet a socket of any descendant cgroup
//!   sends or receives, and `bpf_skb_cgroup_id` names the socket's cgroup.
//!   It counts bytes and packets per cgroup in a per-CPU hash map: one helper
//!   and one lookup per packet, the cheapest per-packet attribution there is.
//! - `sock_ops`, attached to the cgroup2 root: TCP itself calls it at
//!   connect, at establishment and, once enabled per socket with
//!   `bpf_sock_ops_cb_flags_set`, on every RTT update, retransmit and state
//!   change, with the UAPI `bpf_sock_ops` fields and arguments. It may not
//!   ask a socket's cgroup (`bpf_sk_cgroup_id` is refused there, and
//!   `bpf_get_current_cgroup_id` before Linux 6.x), so each socket's cgroup
//!   is learnt once from a packet and kept in `TCP_SOCKETS` (keyed by the
//!   socket's address) until the socket closes. The `cgroup_skb` programs
//!   leave the cgroup, address and port of the socket of the last packet on
//!   their CPU in a per-CPU slot, and TCP runs the callbacks right after the
//!   packet that causes them, on the same CPU:
//!   - an active open: `TCP_CONNECT_CB` marks the socket as connecting on
//!     its CPU, and the egress program, seeing that socket's SYN next, fills
//!     in its cgroup. Should the task have moved CPU in between, the SYN-ACK
//!     (at `ACTIVE_ESTABLISHED_CB`) or the reset that refuses it does;
//!   - an accepted socket at `PASSIVE_ESTABLISHED_CB`, which runs while TCP
//!     handles the handshake's last ACK, right after the ingress program saw
//!     that ACK delivered to the listener, whose cgroup an accepted socket
//!     inherits: taken from the slot when the listener's port is the socket's.
//! - raw tracepoints `tcp_receive_reset` and `tcp_send_reset`, whose first
//!   argument is the socket: looked up in `TCP_SOCKETS`.
//!
//! Tracepoints alone (`inet_sock_set_state`, `tcp_probe`, …) would need the
//! same socket map, field offsets, and a per-packet probe for the traffic
//! counters with no cgroup at hand; kprobes are not available everywhere.
//!
//! RTT is sampled, not traced: a socket's smoothed RTT is recorded at its
//! first update and then at most once per `TCP_RTT_INTERVAL_NS`, so a busy
//! flow costs one map lookup per ACK and cannot dominate the histogram.
//! Sockets opened before the agent started are not followed (their
//! callbacks are not enabled); their traffic is still counted.

use agent_ebpf::{
    map_full::MapId,
    tcp::{
        CB_FLAGS, DEFAULT_MAX_SOCKETS, DEFAULT_RTT_INTERVAL_MS, OP_ACTIVE_ESTABLISHED,
        OP_PASSIVE_ESTABLISHED, OP_RETRANS, OP_RTT, OP_STATE, OP_TCP_CONNECT, PacketSlot,
        SocketState, TCP_CLOSE, TCP_LISTEN, TCP_SYN_SENT, TcpSeries, Traffic, packets, srtt_ns,
    },
};
use aya_ebpf::{
    bindings::{__sk_buff, BPF_ANY, BPF_F_NO_PREALLOC},
    helpers::{bpf_ktime_get_ns, bpf_skb_cgroup_id},
    macros::{cgroup_skb, map, raw_tracepoint, sock_ops},
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
    programs::{RawTracePointContext, SkBuffContext, SockOpsContext},
};

use crate::{hist, map_full};

/// Least time between two RTT samples of one socket, set by the loader.
#[unsafe(no_mangle)]
static TCP_RTT_INTERVAL_NS: u64 = DEFAULT_RTT_INTERVAL_MS * 1_000_000;

#[map(name = "TCP_SERIES")]
static TCP_SERIES: HashMap<u64, TcpSeries> =
    HashMap::with_max_entries(agent_ebpf::runqueue::DEFAULT_MAX_CGROUPS, 0);

/// A zeroed series to insert from (too large for the BPF stack).
#[map(name = "TCP_SERIES_ZERO")]
static TCP_SERIES_ZERO: Array<TcpSeries> = Array::with_max_entries(1, 0);

#[map(name = "NET_TRAFFIC")]
static NET_TRAFFIC: PerCpuHashMap<u64, Traffic> =
    PerCpuHashMap::with_max_entries(agent_ebpf::runqueue::DEFAULT_MAX_CGROUPS, 0);

/// Allocated as sockets open rather than all at start: most nodes follow
/// far fewer sockets than the bound.
#[map(name = "TCP_SOCKETS")]
static TCP_SOCKETS: HashMap<u64, SocketState> =
    HashMap::with_max_entries(DEFAULT_MAX_SOCKETS, BPF_F_NO_PREALLOC);

#[map(name = "TCP_PACKET_SLOT")]
static TCP_PACKET_SLOT: PerCpuArray<PacketSlot> = PerCpuArray::with_max_entries(1, 0);

/// Returns 1: the packet may pass. These programs only count.
const PASS: i32 = 1;

#[cgroup_skb]
pub fn net_egress(ctx: SkBuffContext) -> i32 {
    on_packet(&ctx, false);
    PASS
}

#[cgroup_skb]
pub fn net_ingress(ctx: SkBuffContext) -> i32 {
    on_packet(&ctx, true);
    PASS
}

#[inline(always)]
fn on_packet(ctx: &SkBuffContext, ingress: bool) {
    let skb = ctx.skb.skb;
    // SAFETY: `skb` is the kernel's context pointer; the helper takes it.
    let cgroup = unsafe { bpf_skb_cgroup_id(skb) };
    let Some(slot) = TCP_PACKET_SLOT.get_ptr_mut(0) else {
        count(ctx, skb, cgroup, ingress);
        return;
    };
    // SAFETY: `skb` is the context, whose `sk` the kernel sets for these
    // programs (checked for null before it is read through); `slot` is this
    // CPU's array value. A softirq may interrupt an egress program here and
    // overwrite the slot: the worst outcome is a socket whose cgroup is
    // learnt from a later packet.
    unsafe {
        let sk_ptr = (*skb).__bindgen_anon_2.sk;
        let sk = sk_ptr as u64;
        let (address, len, hash) = (skb as u64, (*skb).len, (*skb).hash);
        let at_listener = ingress && !sk_ptr.is_null() && (*sk_ptr).state == TCP_LISTEN;
        // When a handshake's last ACK races data on two CPUs, TCP hands the
        // data first to the listener, then (the accepted socket having
        // appeared) to that socket, and each runs this program: the same
        // packet, right after itself on this CPU. Counted once.
        let again = ingress
            && (*slot).at_listener != 0
            && (*slot).skb == address
            && (*slot).len == len
            && (*slot).hash == hash
            && (*slot).sk != sk;
        if !again {
            count(ctx, skb, cgroup, ingress);
        }
        (*slot).cgroup = cgroup;
        (*slot).sk = sk;
        (*slot).local_port = (*skb).local_port;
        (*slot).skb = address;
        (*slot).len = len;
        (*slot).hash = hash;
        (*slot).at_listener = u32::from(at_listener);
        if !ingress && sk != 0 && (*slot).connecting == sk {
            // The SYN of the socket whose connect() began on this CPU.
            (*slot).connecting = 0;
            if let Some(state) = TCP_SOCKETS.get_ptr_mut(sk)
                && (*state).cgroup == 0
            {
                (*state).cgroup = cgroup;
            }
        }
    }
}

#[inline(always)]
fn count(ctx: &SkBuffContext, skb: *mut __sk_buff, cgroup: u64, ingress: bool) {
    let traffic = match NET_TRAFFIC.get_ptr_mut(cgroup) {
        Some(traffic) => traffic,
        None => {
            // An insert racing another CPU's sets only this CPU's value,
            // which nothing else writes: no count is lost.
            if let Err(err) = NET_TRAFFIC.insert(cgroup, Traffic::default(), u64::from(BPF_ANY)) {
                map_full::record(ctx, MapId::NetTraffic, err);
                return;
            }
            let Some(traffic) = NET_TRAFFIC.get_ptr_mut(cgroup) else {
                return;
            };
            traffic
        }
    };
    // SAFETY: `skb` is the context; `traffic` is this CPU's value in a live
    // map entry. The adds are atomic because a softirq on this CPU may
    // interrupt a program in process context.
    unsafe {
        let (len, segs) = ((*skb).len, (*skb).gso_segs);
        let (bytes, count) = if ingress {
            (&mut (*traffic).rx_bytes, &mut (*traffic).rx_packets)
        } else {
            (&mut (*traffic).tx_bytes, &mut (*traffic).tx_packets)
        };
        crate::atomic_add(bytes, u64::from(len));
        crate::atomic_add(count, packets(segs));
    }
}

#[sock_ops]
pub fn tcp_sock_ops(ctx: SockOpsContext) -> u32 {
    // SAFETY: `ctx.ops` is the kernel's context; `sk` is a UAPI field.
    let sk = unsafe { (*ctx.ops).__bindgen_anon_2.sk } as u64;
    if sk != 0 {
        match ctx.op() {
            OP_TCP_CONNECT => {
                // SAFETY: a kernel helper without preconditions.
                let now = unsafe { bpf_ktime_get_ns() };
                if follow(&ctx, sk, 0, now)
                    && let Some(slot) = TCP_PACKET_SLOT.get_ptr_mut(0)
                {
                    // SAFETY: this CPU's array value.
                    unsafe { (*slot).connecting = sk };
                }
            }
            OP_PASSIVE_ESTABLISHED => {
                if let Some(slot) = TCP_PACKET_SLOT.get(0)
                    && slot.local_port == ctx.local_port()
                    && slot.cgroup != 0
                {
                    follow(&ctx, sk, slot.cgroup, 0);
                }
            }
            OP_ACTIVE_ESTABLISHED => established(&ctx, sk),
            OP_RTT => rtt(&ctx, sk),
            // args: first sequence number, segments, error. Counted
            // whatever the error, as the kernel's own RetransSegs does: it
            // counts a retransmit before handing it to the device, so one
            // the local qdisc drops (a positive error) still counts.
            OP_RETRANS => {
                add_to(&ctx, sk, |s| &mut s.retransmits, u64::from(ctx.arg(1)));
            }
            // args: old state, new state (called before the change).
            OP_STATE if ctx.arg(1) == TCP_CLOSE => {
                if ctx.arg(0) == TCP_SYN_SENT {
                    add_to(&ctx, sk, |s| &mut s.connect_failures, 1);
                }
                let _ = TCP_SOCKETS.remove(sk);
            }
            _ => {}
        }
    }
    1
}

#[raw_tracepoint(tracepoint = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: RawTracePointContext) -> i32 {
    let sk = ctx.arg::<u64>(0);
    add_to(&ctx, sk, |s| &mut s.resets_received, 1);
    0
}

#[raw_tracepoint(tracepoint = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: RawTracePointContext) -> i32 {
    // A reset sent for no socket (a closed port) belongs to no cgroup.
    let sk = ctx.arg::<u64>(0);
    if sk != 0 {
        add_to(&ctx, sk, |s| &mut s.resets_sent, 1);
    }
    0
}

/// Starts following socket `sk` of `cgroup` (0: not known yet), whose
/// `connect()` began at `connect_ns` (0 for an accepted socket).
#[inline(always)]
fn follow(ctx: &SockOpsContext, sk: u64, cgroup: u64, connect_ns: u64) -> bool {
    let state = SocketState {
        cgroup,
        connect_ns,
        rtt_sampled_ns: 0,
    };
    match TCP_SOCKETS.insert(sk, state, u64::from(BPF_ANY)) {
        Ok(()) => {
            let _ = ctx.set_cb_flags(CB_FLAGS);
            true
        }
        Err(err) => {
            map_full::record(ctx, MapId::TcpSockets, err);
            false
        }
    }
}

/// The cgroup of followed socket `sk`, whose state is `*state`; learnt from
/// this CPU's last packet if it was the socket's and the cgroup is not known
/// yet.
///
/// # Safety
/// `state` must point into a live `TCP_SOCKETS` value.
#[inline(always)]
unsafe fn cgroup_of(state: *mut SocketState, sk: u64) -> Option<u64> {
    // SAFETY: per the function's contract.
    unsafe {
        let cgroup = (*state).cgroup;
        if cgroup != 0 {
            return Some(cgroup);
        }
        let slot = TCP_PACKET_SLOT.get(0)?;
        if slot.sk != sk || slot.cgroup == 0 {
            return None;
        }
        (*state).cgroup = slot.cgroup;
        Some(slot.cgroup)
    }
}

#[inline(always)]
fn established(ctx: &SockOpsContext, sk: u64) {
    let Some(state) = TCP_SOCKETS.get_ptr_mut(sk) else {
        return;
    };
    // SAFETY: `state` points into a live hash map value.
    let started = unsafe { (*state).connect_ns };
    if started == 0 {
        return;
    }
    // SAFETY: as above.
    let Some(cgroup) = (unsafe { cgroup_of(state, sk) }) else {
        return;
    };
    // SAFETY: as above; a kernel helper without preconditions.
    let now = unsafe {
        (*state).connect_ns = 0;
        bpf_ktime_get_ns()
    };
    if let Some(series) = series(ctx, cgroup) {
        // SAFETY: `series` points into a live hash map value, updated only
        // atomically.
        unsafe { hist::add(&mut (*series).connect, now.saturating_sub(started)) };
    }
}

#[inline(always)]
fn rtt(ctx: &SockOpsContext, sk: u64) {
    let Some(state) = TCP_SOCKETS.get_ptr_mut(sk) else {
        return;
    };
    // The callback runs just before the kernel stores the new estimate.
    // Since Linux 6.x that estimate is its second argument; before, there
    // are no arguments and the `srtt_us` field, the estimate one RTT
    // earlier, is the freshest there is (0 before the first, as at a
    // client's first sample, from the SYN-ACK: no sample then).
    let srtt_x8 = match ctx.arg(1) {
        // SAFETY: `ctx.ops` is the kernel's context.
        0 => unsafe { (*ctx.ops).srtt_us },
        updated => updated,
    };
    if srtt_x8 == 0 {
        return;
    }
    // SAFETY: a kernel helper without preconditions; a plain read of a
    // global the loader may have overridden.
    let (now, interval) = unsafe {
        (
            bpf_ktime_get_ns(),
            core::ptr::read_volatile(&TCP_RTT_INTERVAL_NS),
        )
    };
    // SAFETY: `state` points into a live hash map value. Two CPUs racing
    // here could both take a sample: harmless.
    unsafe {
        let last = (*state).rtt_sampled_ns;
        if last != 0 && now.saturating_sub(last) < interval {
            return;
        }
        (*state).rtt_sampled_ns = now;
    }
    // SAFETY: as above.
    let Some(cgroup) = (unsafe { cgroup_of(state, sk) }) else {
        return;
    };
    if let Some(series) = series(ctx, cgroup) {
        // SAFETY: as in `established`.
        unsafe { hist::add(&mut (*series).rtt, srtt_ns(srtt_x8)) };
    }
}

/// Adds `n` to the counter `field` picks in the series of followed socket
/// `sk`'s cgroup.
#[inline(always)]
fn add_to<C: aya_ebpf::EbpfContext>(
    ctx: &C,
    sk: u64,
    field: impl FnOnce(&mut TcpSeries) -> &mut u64,
    n: u64,
) {
    let Some(state) = TCP_SOCKETS.get_ptr_mut(sk) else {
        return;
    };
    // SAFETY: `state` points into a live hash map value.
    let Some(cgroup) = (unsafe { cgroup_of(state, sk) }) else {
        return;
    };
    if let Some(series) = series(ctx, cgroup) {
        // SAFETY: `series` points into a live hash map value whose counters
        // are only ever updated atomically.
        unsafe { crate::atomic_add(field(&mut *series), n) };
    }
}

#[inline(always)]
fn series<C: aya_ebpf::EbpfContext>(ctx: &C, cgroup: u64) -> Option<*mut TcpSeries> {
    let zero = TCP_SERIES_ZERO.get(0)?;
    hist::get_or_insert(ctx, &TCP_SERIES, &cgroup, zero, MapId::TcpSeries)
}
