//! From the command line's [`CollectArgs`] to a running [`Collector`]:
//! locate cgroup2 and tracefs, load and attach the probes, scan the cgroup
//! tree. Shared by `agent run` and `agent top --standalone`.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;

use crate::{
    cgroup_tree::CgroupTree,
    cgroupfs::{Hierarchies, StatsReader},
    cli::CollectArgs,
    collector::Collector,
    probes::{ProbeOptions, ProbeState, Probes},
    tracefs::Tracefs,
};

/// An unknown cgroup id triggers a rescan at most this often.
const MIN_RESCAN: Duration = Duration::from_secs(1);

/// The probes' log records (aya-log), to be forwarded or dropped.
pub type ProbeLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

pub struct Started {
    pub collector: Collector,
    pub logger: Option<ProbeLogger>,
    pub cgroup_root: PathBuf,
    pub tracefs: Option<Tracefs>,
}

/// Loads what `args` asks for. A probe that fails to attach is logged and
/// reported as down, not fatal; missing privileges and a missing cgroup2
/// mount are.
pub fn collector(args: &CollectArgs) -> anyhow::Result<Started> {
    crate::privileges::check()?;
    let cgroup_root = crate::cgroup_mount::cgroup2_root(args.cgroup_root.as_deref())?;
    let tracefs = match Tracefs::locate(args.tracefs.as_deref()) {
        Ok(tracefs) => Some(tracefs),
        Err(e) => {
            tracing::error!("{e}; probes that need tracepoints will be down");
            None
        }
    };

    let options = ProbeOptions {
        max_tasks: args.max_tasks,
        max_cgroups: args.max_cgroups,
        max_disk_inflight: args.max_disk_inflight,
        max_tcp_sockets: args.max_tcp_sockets,
        tcp_rtt_interval: args.tcp_rtt_interval,
        runqueue_attach: args.runqueue_attach,
        runqueue_source: args.runqueue_source,
        disk_attach: args.disk_attach,
    };
    let mut probes = Probes::load(tracefs.as_ref(), &cgroup_root, &args.probes, options)?;
    release_freed_memory();
    for status in &probes.status {
        match &status.state {
            ProbeState::Up => {}
            ProbeState::Down(why) => {
                tracing::error!(probe = status.signal.name(), "probe is down: {why}")
            }
        }
    }
    let logger = probes.logger.take();

    let tree = CgroupTree::new(cgroup_root.clone(), MIN_RESCAN, args.cgroup_rescan_interval);
    let reader = StatsReader::new(Hierarchies::discover(&cgroup_root));
    tracing::info!(hierarchies = ?reader.hierarchies(), "cgroup files");
    let collector = Collector::new(probes, tree, reader)
        .with_context(|| format!("scanning the cgroup2 tree at {}", cgroup_root.display()))?;
    Ok(Started {
        collector,
        logger,
        cgroup_root,
        tracefs,
    })
}

/// Loading the probes reads the kernel's BTF three times over (the probes'
/// offsets, aya's loader, and aya's copy for the BTF tracepoints: 5 MiB
/// each, with aya's parsed copies) and frees it all, but glibc keeps the
/// freed heap pages: the agent stayed at 16–22 MiB resident after start-up
/// instead of 9. Give them back.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own arenas; it has no
    // preconditions and may be called at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
