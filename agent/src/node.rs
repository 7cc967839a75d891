//! Node-wide CPU and memory totals from `/proc/stat` and `/proc/meminfo`,
//! for the header of `agent top` (node_exporter exports these for
//! Prometheus; the agent does not duplicate them there).
//!
//! Both files are node-wide even inside a container's PID namespace. A
//! missing or malformed file leaves its fields unknown; the error names it.

use std::{fs, io, path::PathBuf};

/// What the node has and uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeTotals {
    pub cpus: Option<u32>,
    /// user + nice + system + irq + softirq + steal, summed over CPUs.
    pub cpu_busy_seconds: Option<f64>,
    pub memory_total_bytes: Option<u64>,
    pub memory_available_bytes: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: no `{what}` line")]
    Malformed { path: PathBuf, what: &'static str },
}

/// Reads the node's totals from `proc` (normally `/proc`); what cannot be
/// read is left unknown and its error returned alongside.
pub fn read(proc: &std::path::Path) -> (NodeTotals, Vec<NodeError>) {
    let mut totals = NodeTotals::default();
    let mut errors = Vec::new();
    let user_hz = crate::cgroupfs::user_hz();
    match read_file(&proc.join("stat")) {
        Ok(text) => match cpu(&text, user_hz) {
            Some((cpus, busy)) => {
                totals.cpus = Some(cpus);
                totals.cpu_busy_seconds = Some(busy);
            }
            None => errors.push(NodeError::Malformed {
                path: proc.join("stat"),
                what: "cpu",
            }),
        },
        Err(e) => errors.push(e),
    }
    match read_file(&proc.join("meminfo")) {
        Ok(text) => {
            totals.memory_total_bytes = meminfo(&text, "MemTotal:");
            totals.memory_available_bytes = meminfo(&text, "MemAvailable:");
            if totals.memory_total_bytes.is_none() {
                errors.push(NodeError::Malformed {
                    path: proc.join("meminfo"),
                    what: "MemTotal",
                });
            }
        }
        Err(e) => errors.push(e),
    }
    (totals, errors)
}

fn read_file(path: &std::path::Path) -> Result<String, NodeError> {
    fs::read_to_string(path).map_err(|source| NodeError::Read {
        path: path.to_owned(),
        source,
    })
}

/// (CPUs, busy seconds) from `/proc/stat`: the `cpu` line's user, nice,
/// system, irq, softirq and steal ticks, and the number of `cpuN` lines.
fn cpu(stat: &str, user_hz: u64) -> Option<(u32, f64)> {
    let mut busy = None;
    let mut cpus = 0u32;
    for line in stat.lines() {
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("cpu") => {
                let ticks: Vec<u64> = fields.map_while(|f| f.parse().ok()).collect();
                let [user, nice, system, _idle, _iowait, irq, softirq, steal, ..] = ticks[..]
                else {
                    return None;
                };
                let sum = user + nice + system + irq + softirq + steal;
                busy = Some(sum as f64 / user_hz as f64);
            }
            Some(name) if name.starts_with("cpu") => cpus += 1,
            _ => {}
        }
    }
    Some((cpus, busy?)).filter(|(cpus, _)| *cpus > 0)
}

/// A `Key:   N kB` line of `/proc/meminfo`, in bytes.
fn meminfo(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let mut fields = line[key.len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 20 30 1000 50 5 5 40 0 0\n\
                        cpu0 50 10 15 500 25 3 2 20 0 0\n\
                        cpu1 50 10 15 500 25 2 3 20 0 0\n\
                        intr 12345\nctxt 999\n";

    #[test]
    fn busy_time_leaves_out_idle_and_iowait() {
        let (cpus, busy) = cpu(STAT, 100).expect("parses");
        assert_eq!(cpus, 2);
        assert!((busy - 2.0).abs() < 1e-9, "{busy}");
    }

    #[test]
    fn a_truncated_cpu_line_is_malformed_not_zero() {
        assert_eq!(cpu("cpu 1 2 3\ncpu0 1 2 3\n", 100), None);
        assert_eq!(cpu("intr 1\n", 100), None);
    }

    #[test]
    fn meminfo_is_in_bytes() {
        let text = "MemTotal:       8000 kB\nMemFree:  100 kB\nMemAvailable:   4000 kB\nHugePages_Total: 0\n";
        assert_eq!(meminfo(text, "MemTotal:"), Some(8_192_000));
        assert_eq!(meminfo(text, "MemAvailable:"), Some(4_096_000));
        assert_eq!(meminfo(text, "HugePages_Total:"), Some(0));
        assert_eq!(meminfo(text, "Missing:"), None);
    }

    #[test]
    fn missing_files_are_named_in_the_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (totals, errors) = read(dir.path());
        assert_eq!(totals, NodeTotals::default());
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(text.iter().any(|e| e.contains("stat")), "{text:?}");
        assert!(text.iter().any(|e| e.contains("meminfo")), "{text:?}");
    }

    #[test]
    fn this_node_has_cpus_and_memory() {
        let (totals, errors) = read(std::path::Path::new("/proc"));
        assert!(errors.is_empty(), "{errors:?}");
        assert!(totals.cpus.unwrap_or(0) >= 1);
        assert!(totals.memory_total_bytes.unwrap_or(0) > 0);
    }
}
