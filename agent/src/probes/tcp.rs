//! TCP latency and network traffic: the userspace half of
//! `agent-ebpf/src/probes/tcp.rs`. Attaches the `cgroup_skb` and `sock_ops`
//! programs to the cgroup2 root and the reset tracepoints, and reads the
//! per-cgroup series when scraped.

use std::{fs::File, path::Path};

use agent_ebpf::{
    CgroupId,
    tcp::{SERIES_MAP, TRAFFIC_MAP, TcpSeries, Traffic},
};
use aya::{
    Ebpf,
    maps::{HashMap, MapData, MapError, PerCpuHashMap},
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramError, SockOps},
};

use super::{LoadError, error_chain, take_map};

pub const PROBE: &str = "tcp";

/// (program, attach type) of the packet counters.
const SKB_PROGRAMS: [(&str, CgroupSkbAttachType); 2] = [
    ("net_egress", CgroupSkbAttachType::Egress),
    ("net_ingress", CgroupSkbAttachType::Ingress),
];
const SOCK_OPS_PROGRAM: &str = "tcp_sock_ops";
/// (program, raw tracepoint) of the reset counters.
const RESET_PROGRAMS: [(&str, &str); 2] = [
    ("tcp_receive_reset", "tcp_receive_reset"),
    ("tcp_send_reset", "tcp_send_reset"),
];

/// Attaches everything, or nothing: half of it would count traffic without
/// latency, or latency of sockets whose cgroup cannot be learnt.
///
/// The cgroup programs are attached as links (`bpf_link_create`), which the
/// kernel always lets other programs share, so they neither displace nor
/// block the node's own cgroup programs (systemd's, a CNI's); they go away
/// with the agent.
pub fn attach(ebpf: &mut Ebpf, cgroup2_root: &Path) -> Result<(), String> {
    let attached = attach_cgroup_programs(ebpf, cgroup2_root)
        .and_then(|()| super::attach_raw_all(ebpf, &RESET_PROGRAMS));
    if attached.is_err() {
        super::unload_all::<CgroupSkb>(ebpf, SKB_PROGRAMS.iter().map(|(program, _)| *program));
        super::unload_all::<SockOps>(ebpf, [SOCK_OPS_PROGRAM]);
    }
    attached
}

fn attach_cgroup_programs(ebpf: &mut Ebpf, cgroup2_root: &Path) -> Result<(), String> {
    let root = File::open(cgroup2_root)
        .map_err(|e| format!("opening the cgroup2 root {}: {e}", cgroup2_root.display()))?;
    let on_root = |program: &str, e: ProgramError| {
        format!(
            "program {program} on cgroup {}: {}",
            cgroup2_root.display(),
            error_chain(&e)
        )
    };
    for (program, attach_type) in SKB_PROGRAMS {
        let prog: &mut CgroupSkb = super::loaded(ebpf, program)?;
        prog.attach(&root, attach_type, CgroupAttachMode::Single)
            .map_err(|e| on_root(program, e))?;
    }
    let prog: &mut SockOps = super::loaded(ebpf, SOCK_OPS_PROGRAM)?;
    prog.attach(&root, CgroupAttachMode::Single)
        .map_err(|e| on_root(SOCK_OPS_PROGRAM, e))?;
    Ok(())
}

/// One scrape's TCP and traffic series, as read from the kernel (buffers
/// reused).
#[derive(Debug, Default)]
pub struct TcpRead {
    pub series: Vec<(CgroupId, TcpSeries)>,
    /// Summed over CPUs.
    pub traffic: Vec<(CgroupId, Traffic)>,
}

impl TcpRead {
    pub fn clear(&mut self) {
        self.series.clear();
        self.traffic.clear();
    }

    /// The cgroups with a series (may repeat).
    pub fn cgroups(&self) -> impl Iterator<Item = CgroupId> + '_ {
        self.series
            .iter()
            .map(|(id, _)| *id)
            .chain(self.traffic.iter().map(|(id, _)| *id))
    }

    pub fn retain_cgroups(&mut self, keep: impl Fn(CgroupId) -> bool) {
        self.series.retain(|(id, _)| keep(*id));
        self.traffic.retain(|(id, _)| keep(*id));
    }
}

pub struct TcpMaps {
    series: HashMap<MapData, CgroupId, TcpSeries>,
    traffic: PerCpuHashMap<MapData, CgroupId, Traffic>,
}

impl TcpMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, LoadError> {
        Ok(Self {
            series: take_map(ebpf, SERIES_MAP)?,
            traffic: take_map(ebpf, TRAFFIC_MAP)?,
        })
    }

    /// Appends every series to `out`.
    pub fn read_into(&self, out: &mut TcpRead) -> Result<(), MapError> {
        super::read_entries(&self.series, &mut out.series)?;
        for entry in self.traffic.iter() {
            let (cgroup, per_cpu) = match entry {
                Ok(entry) => entry,
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(e),
            };
            out.traffic.push((cgroup, sum(per_cpu.iter())));
        }
        Ok(())
    }

    /// Drops the series of a cgroup that no longer exists.
    pub fn forget(&mut self, cgroup: CgroupId) -> Result<(), MapError> {
        super::remove_entry(&mut self.series, &cgroup)?;
        match self.traffic.remove(&cgroup) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The CPUs' counters added up; wrapping, as kernel counters do.
fn sum<'a>(per_cpu: impl Iterator<Item = &'a Traffic>) -> Traffic {
    per_cpu.fold(Traffic::default(), |acc, t| Traffic {
        tx_bytes: acc.tx_bytes.wrapping_add(t.tx_bytes),
        tx_packets: acc.tx_packets.wrapping_add(t.tx_packets),
        rx_bytes: acc.rx_bytes.wrapping_add(t.rx_bytes),
        rx_packets: acc.rx_packets.wrapping_add(t.rx_packets),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_is_summed_over_cpus() {
        let cpus = [
            Traffic {
                tx_bytes: 100,
                tx_packets: 2,
                rx_bytes: 0,
                rx_packets: 0,
            },
            Traffic {
                tx_bytes: 50,
                tx_packets: 1,
                rx_bytes: 60,
                rx_packets: 1,
            },
        ];
        assert_eq!(
            sum(cpus.iter()),
            Traffic {
                tx_bytes: 150,
                tx_packets: 3,
                rx_bytes: 60,
                rx_packets: 1,
            }
        );
    }

    #[test]
    fn counters_wrap_instead_of_panicking() {
        let cpus = [
            Traffic {
                tx_bytes: u64::MAX,
                ..Traffic::default()
            },
            Traffic {
                tx_bytes: 2,
                ..Traffic::default()
            },
        ];
        assert_eq!(sum(cpus.iter()).tx_bytes, 1);
    }
}
