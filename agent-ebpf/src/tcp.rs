//! TCP latency and network traffic: the ABI of the `tcp` probes. See
//! `src/probes/tcp.rs` for how sockets are attributed to cgroups.

use crate::{CgroupId, histogram::Histogram};

/// Per-cgroup [`TcpSeries`]: connect latency, RTT, and TCP event counters.
pub const SERIES_MAP: &str = "TCP_SERIES";
/// Per-cgroup [`Traffic`], one value per CPU.
pub const TRAFFIC_MAP: &str = "NET_TRAFFIC";
/// Open TCP sockets the probes follow: [`SocketState`] keyed by the kernel
/// address of the socket.
pub const SOCKETS_MAP: &str = "TCP_SOCKETS";
/// The global that carries the least time between two RTT samples of one
/// socket, in nanoseconds.
pub const RTT_INTERVAL_GLOBAL: &str = "TCP_RTT_INTERVAL_NS";

/// Default bound of [`SOCKETS_MAP`]: TCP sockets opened since the agent
/// started and still open, node-wide.
pub const DEFAULT_MAX_SOCKETS: u32 = 65_536;
/// Default least time between two RTT samples of one socket.
pub const DEFAULT_RTT_INTERVAL_MS: u64 = 1_000;

/// The `direction` label of [`Traffic`]'s and the resets' two halves.
pub const DIRECTION_TX: &str = "tx";
pub const DIRECTION_RX: &str = "rx";

/// `BPF_SOCK_OPS_*` operations (UAPI, `include/uapi/linux/bpf.h`).
pub const OP_TCP_CONNECT: u32 = 3;
pub const OP_ACTIVE_ESTABLISHED: u32 = 4;
pub const OP_PASSIVE_ESTABLISHED: u32 = 5;
pub const OP_RETRANS: u32 = 9;
pub const OP_STATE: u32 = 10;
pub const OP_RTT: u32 = 12;

/// `BPF_SOCK_OPS_*_CB_FLAG`s the probes enable on the sockets they follow:
/// retransmits, state changes and RTT updates.
pub const CB_FLAGS: i32 = 2 | 4 | 8;

/// TCP states (`include/net/tcp_states.h`), as in `BPF_SOCK_OPS_STATE_CB`.
pub const TCP_SYN_SENT: u32 = 2;
pub const TCP_CLOSE: u32 = 7;
pub const TCP_LISTEN: u32 = 10;

/// What the probes keep per cgroup about its TCP sockets.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSeries {
    /// Active opens: `connect()` (SYN sent) → ESTABLISHED.
    pub connect: Histogram,
    /// Smoothed RTT samples, at most one per socket per RTT interval.
    pub rtt: Histogram,
    /// Active opens that went from SYN_SENT to CLOSE: refused (a reset),
    /// timed out, or given up by the application.
    pub connect_failures: u64,
    /// Segments retransmitted.
    pub retransmits: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
}

impl TcpSeries {
    pub const ZERO: Self = Self {
        connect: Histogram::ZERO,
        rtt: Histogram::ZERO,
        connect_failures: 0,
        retransmits: 0,
        resets_sent: 0,
        resets_received: 0,
    };
}

/// IP traffic of a cgroup's sockets, as its `cgroup_skb` programs see it:
/// bytes at the IP layer (headers included) and packets (segments of a
/// GSO packet counted one by one).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub rx_packets: u64,
}

/// A followed socket: its cgroup, learnt once, and its pending events.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketState {
    pub cgroup: CgroupId,
    /// When `connect()` sent the SYN; 0 once established, or for an
    /// accepted socket.
    pub connect_ns: u64,
    /// When the socket's last RTT sample was taken; 0 before the first.
    pub rtt_sampled_ns: u64,
}

/// What the `cgroup_skb` programs leave on their CPU about the packet they
/// saw last, for a `sock_ops` callback or tracepoint that runs next on the
/// same CPU for the same packet and needs the socket's cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketSlot {
    /// The cgroup of the packet's socket.
    pub cgroup: CgroupId,
    /// The kernel address of the packet's socket.
    pub sk: u64,
    /// A socket whose `connect()` began on this CPU and whose SYN has not
    /// been seen yet (set by `TCP_CONNECT_CB`, taken by the egress program).
    pub connecting: u64,
    /// The local port of the packet's socket.
    pub local_port: u32,
    /// 1 if the packet was delivered to a listening socket.
    pub at_listener: u32,
    /// The packet's kernel address, length and flow hash: with
    /// `at_listener`, how a packet handed to two sockets one after the
    /// other is recognised.
    pub skb: u64,
    pub len: u32,
    pub hash: u32,
}

/// The smoothed RTT in nanoseconds from the kernel's `srtt_us` (the second
/// argument of `BPF_SOCK_OPS_RTT_CB`): microseconds scaled by 8.
#[inline(always)]
pub const fn srtt_ns(srtt_us_x8: u32) -> u64 {
    (srtt_us_x8 as u64 >> 3) * 1_000
}

/// Packets in a `__sk_buff` of `gso_segs` segments (0 when not GSO).
#[inline(always)]
pub const fn packets(gso_segs: u32) -> u64 {
    if gso_segs == 0 { 1 } else { gso_segs as u64 }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]`, histograms and u64s only: no padding, any bits valid.
    unsafe impl aya::Pod for super::TcpSeries {}
    // SAFETY: `#[repr(C)]`, four u64s.
    unsafe impl aya::Pod for super::Traffic {}
    // SAFETY: `#[repr(C)]`, three u64s.
    unsafe impl aya::Pod for super::SocketState {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srtt_is_unscaled_to_nanoseconds() {
        // 40 µs, as the kernel stores it: 40 << 3.
        assert_eq!(srtt_ns(40 << 3), 40_000);
        // The fractional eighths are dropped.
        assert_eq!(srtt_ns((40 << 3) | 7), 40_000);
        assert_eq!(srtt_ns(u32::MAX), u64::from(u32::MAX >> 3) * 1_000);
    }

    #[test]
    fn a_packet_that_is_not_gso_is_one_packet() {
        assert_eq!(packets(0), 1);
        assert_eq!(packets(1), 1);
        assert_eq!(packets(44), 44);
    }

    #[test]
    fn the_flags_enable_retransmit_state_and_rtt_callbacks() {
        const RETRANS_CB_FLAG: i32 = 1 << 1;
        const STATE_CB_FLAG: i32 = 1 << 2;
        const RTT_CB_FLAG: i32 = 1 << 3;
        assert_eq!(CB_FLAGS, RETRANS_CB_FLAG | STATE_CB_FLAG | RTT_CB_FLAG);
    }
}
