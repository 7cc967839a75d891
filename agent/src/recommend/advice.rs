//! The right-sizing rules, on plain numbers: what a container used and
//! suffered over the window in, a recommendation and its reasons out.
//!
//! - CPU request: p95 usage × (1 + CPU headroom), at least 10m.
//! - CPU limit: kept unless throttled in more than the threshold share of
//!   periods. Then, if the node's run queue (the other containers' p99 wait)
//!   is under the "low" bound, the node has CPU to give: the limit is raised
//!   to the larger of peak usage × (1 + headroom) and 1.5 × the limit (or
//!   removed, with `--remove-throttled-limits`). If the node is busy, the
//!   limit stays and the reason says so: more limit would take CPU from
//!   neighbours that are already waiting.
//! - Memory request: p95 working set × (1 + memory headroom).
//! - Memory limit: peak working set × (1 + headroom), and after OOM kills at
//!   least 1.5 × the limit that killed; never below the request.
//! - Reclaim stalls and OOM kills are flagged.

use serde::Serialize;

/// What the window shows of one container. `None`: not known.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Observed {
    pub cpu_request_cores: Option<f64>,
    pub cpu_limit_cores: Option<f64>,
    pub cpu_p95_cores: Option<f64>,
    pub cpu_p99_cores: Option<f64>,
    pub cpu_peak_cores: Option<f64>,
    pub throttled_ratio: Option<f64>,
    pub memory_limit_bytes: Option<f64>,
    pub working_set_p95_bytes: Option<f64>,
    pub working_set_peak_bytes: Option<f64>,
    pub oom_kills: Option<f64>,
    pub reclaim_stalls: Option<f64>,
    /// p99 run-queue wait of the node's other containers.
    pub node_runqueue_p99_seconds: Option<f64>,
}

/// The thresholds, from the command line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub cpu_headroom: f64,
    pub memory_headroom: f64,
    pub throttled_threshold: f64,
    pub runqueue_low_seconds: f64,
    pub remove_throttled_limits: bool,
}

/// A recommended value: a quantity, none (no limit), or no advice.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Setting {
    Set(f64),
    Unlimited,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Advice {
    pub cpu_request_cores: Setting,
    pub cpu_limit_cores: Setting,
    pub memory_request_bytes: Setting,
    pub memory_limit_bytes: Setting,
    pub reasons: Vec<String>,
}

const MIN_CPU: f64 = 0.01;
const MIB: f64 = 1024.0 * 1024.0;

/// Below this, a product like 0.2 × 1.5 is taken as exact, not rounded up.
const EPSILON: f64 = 1e-9;

/// Rounds cores up to the next 5 millicores.
fn cpu(cores: f64) -> f64 {
    (cores.max(MIN_CPU) * 200.0 - EPSILON).ceil() / 200.0
}

/// Rounds bytes up to the next MiB.
fn memory(bytes: f64) -> f64 {
    (bytes / MIB - EPSILON).ceil().max(1.0) * MIB
}

pub fn advise(o: &Observed, p: &Policy) -> Advice {
    let mut reasons = Vec::new();
    let cpu_request = match o.cpu_p95_cores {
        Some(p95) => Setting::Set(cpu(p95 * (1.0 + p.cpu_headroom))),
        None => {
            reasons.push("no CPU usage in the window: no CPU advice".to_owned());
            Setting::Unknown
        }
    };
    let cpu_limit = match (o.cpu_limit_cores, o.throttled_ratio) {
        (None, _) => Setting::Unlimited,
        (Some(limit), Some(throttled)) if throttled > p.throttled_threshold => {
            match o.node_runqueue_p99_seconds {
                Some(wait) if wait < p.runqueue_low_seconds => {
                    let why = format!(
                        "throttled in {:.0}% of periods while the node's run queue p99 is {:.1} ms: the node has CPU to give",
                        throttled * 100.0,
                        wait * 1e3
                    );
                    if p.remove_throttled_limits {
                        reasons.push(format!("{why}; remove the limit"));
                        Setting::Unlimited
                    } else {
                        let peak = o.cpu_peak_cores.unwrap_or(limit);
                        reasons.push(format!("{why}; raise the limit"));
                        Setting::Set(cpu((peak * (1.0 + p.cpu_headroom)).max(limit * 1.5)))
                    }
                }
                Some(wait) => {
                    reasons.push(format!(
                        "throttled in {:.0}% of periods, but the node's run queue p99 is {:.1} ms: more limit would take CPU from waiting neighbours; keep it",
                        throttled * 100.0,
                        wait * 1e3
                    ));
                    Setting::Set(limit)
                }
                None => {
                    reasons.push(format!(
                        "throttled in {:.0}% of periods; the node's run queue is unknown, so the limit is kept",
                        throttled * 100.0
                    ));
                    Setting::Set(limit)
                }
            }
        }
        (Some(limit), _) => Setting::Set(limit),
    };
    // A limit below the request is refused by the API server.
    let cpu_limit = match (cpu_limit, cpu_request) {
        (Setting::Set(limit), Setting::Set(request)) if limit < request => Setting::Set(request),
        (other, _) => other,
    };

    let memory_request = match o.working_set_p95_bytes {
        Some(p95) => Setting::Set(memory(p95 * (1.0 + p.memory_headroom))),
        None => Setting::Unknown,
    };
    let mut memory_limit = match (o.memory_limit_bytes, o.working_set_peak_bytes) {
        (None, _) => Setting::Unlimited,
        (Some(_), Some(peak)) => Setting::Set(memory(peak * (1.0 + p.memory_headroom))),
        (Some(limit), None) => Setting::Set(limit),
    };
    let oom = o.oom_kills.unwrap_or(0.0).round();
    if oom > 0.0 {
        reasons.push(format!("OOM killed {oom:.0} times in the window"));
        if let (Setting::Set(new), Some(limit)) = (memory_limit, o.memory_limit_bytes) {
            memory_limit = Setting::Set(memory(new.max(limit * 1.5)));
        }
    }
    if let (Setting::Set(limit), Setting::Set(request)) = (memory_limit, memory_request)
        && limit < request
    {
        memory_limit = Setting::Set(request);
    }
    let stalls = o.reclaim_stalls.unwrap_or(0.0).round();
    if stalls > 0.0 {
        reasons.push(format!(
            "{stalls:.0} memory reclaim stalls in the window: memory is tight"
        ));
    }
    Advice {
        cpu_request_cores: cpu_request,
        cpu_limit_cores: cpu_limit,
        memory_request_bytes: memory_request,
        memory_limit_bytes: memory_limit,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        cpu_headroom: 0.15,
        memory_headroom: 0.2,
        throttled_threshold: 0.1,
        runqueue_low_seconds: 0.01,
        remove_throttled_limits: false,
    };

    fn throttled() -> Observed {
        Observed {
            cpu_request_cores: Some(0.2),
            cpu_limit_cores: Some(0.2),
            cpu_p95_cores: Some(0.2),
            cpu_p99_cores: Some(0.2),
            cpu_peak_cores: Some(0.2),
            throttled_ratio: Some(0.9),
            node_runqueue_p99_seconds: Some(0.002),
            ..Observed::default()
        }
    }

    #[test]
    fn a_throttled_container_on_an_idle_node_gets_a_higher_limit() {
        let advice = advise(&throttled(), &POLICY);
        assert_eq!(advice.cpu_limit_cores, Setting::Set(0.3));
        assert_eq!(advice.cpu_request_cores, Setting::Set(0.23));
        assert!(advice.reasons[0].contains("raise the limit"), "{advice:?}");
        let removed = advise(
            &throttled(),
            &Policy {
                remove_throttled_limits: true,
                ..POLICY
            },
        );
        assert_eq!(removed.cpu_limit_cores, Setting::Unlimited);
    }

    #[test]
    fn a_throttled_container_on_a_busy_node_keeps_its_limit_and_says_why() {
        let busy = Observed {
            node_runqueue_p99_seconds: Some(0.05),
            ..throttled()
        };
        let advice = advise(&busy, &POLICY);
        assert_eq!(
            advice.cpu_limit_cores,
            Setting::Set(0.23),
            "raised to the request only"
        );
        assert!(
            advice.reasons[0].contains("waiting neighbours"),
            "{advice:?}"
        );
    }

    #[test]
    fn an_idle_container_gets_a_smaller_request_and_memory_from_its_working_set() {
        let idle = Observed {
            cpu_request_cores: Some(0.5),
            cpu_p95_cores: Some(0.001),
            working_set_p95_bytes: Some(40.0 * MIB),
            working_set_peak_bytes: Some(50.0 * MIB),
            memory_limit_bytes: Some(512.0 * MIB),
            ..Observed::default()
        };
        let advice = advise(&idle, &POLICY);
        assert_eq!(advice.cpu_request_cores, Setting::Set(0.01));
        assert_eq!(advice.cpu_limit_cores, Setting::Unlimited);
        assert_eq!(advice.memory_request_bytes, Setting::Set(48.0 * MIB));
        assert_eq!(advice.memory_limit_bytes, Setting::Set(60.0 * MIB));
        assert!(advice.reasons.is_empty());
    }

    #[test]
    fn oom_kills_raise_the_memory_limit_and_are_flagged_with_reclaim_stalls() {
        let killed = Observed {
            working_set_p95_bytes: Some(90.0 * MIB),
            working_set_peak_bytes: Some(100.0 * MIB),
            memory_limit_bytes: Some(100.0 * MIB),
            oom_kills: Some(3.0),
            reclaim_stalls: Some(120.0),
            ..Observed::default()
        };
        let advice = advise(&killed, &POLICY);
        assert_eq!(advice.memory_limit_bytes, Setting::Set(150.0 * MIB));
        assert!(
            advice
                .reasons
                .iter()
                .any(|r| r.contains("OOM killed 3 times"))
        );
        assert!(
            advice
                .reasons
                .iter()
                .any(|r| r.contains("120 memory reclaim stalls"))
        );
        assert_eq!(advice.cpu_request_cores, Setting::Unknown);
    }
}
