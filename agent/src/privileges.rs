//! Checking, before anything else, that the agent may load eBPF programs.

use std::{fs, io, path::PathBuf};

const STATUS: &str = "/proc/self/status";
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} has no readable CapEff line")]
    Malformed { path: PathBuf },
    #[error(
        "the agent needs root, or the capabilities CAP_BPF and CAP_PERFMON, to load its probes \
         (effective capabilities: {effective:#x}); run it as root, or in Kubernetes add BPF and \
         PERFMON to the container's securityContext.capabilities"
    )]
    Missing { effective: u64 },
}

/// Fails with a clear message unless the process can load tracing programs.
pub fn check() -> Result<(), PrivilegeError> {
    let path = PathBuf::from(STATUS);
    let text = fs::read_to_string(&path).map_err(|source| PrivilegeError::Read {
        path: path.clone(),
        source,
    })?;
    let effective = effective_caps(&text).ok_or(PrivilegeError::Malformed { path })?;
    if can_trace(effective) {
        Ok(())
    } else {
        Err(PrivilegeError::Missing { effective })
    }
}

fn effective_caps(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

fn can_trace(caps: u64) -> bool {
    let has = |cap: u32| caps & (1 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_bpf_and_perfmon_suffice_and_nothing_else_does() {
        assert_eq!(
            effective_caps("Name:\tagent\nCapEff:\t000001ffffffffff\n"),
            Some(0x1ff_ffff_ffff)
        );
        assert!(can_trace(0x1ff_ffff_ffff));
        assert!(can_trace((1 << CAP_BPF) | (1 << CAP_PERFMON)));
        assert!(!can_trace(1 << CAP_BPF));
        assert!(!can_trace(0));
        assert_eq!(effective_caps("CapEff:\tzz\n"), None);
        assert_eq!(effective_caps(""), None);
    }
}
