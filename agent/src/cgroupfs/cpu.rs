//! CPU: usage, CFS throttling and bursts, limit and weight.
//!
//! v2: `cpu.stat`, `cpu.max`, `cpu.weight`. v1: `cpu.stat` (times in ns),
//! `cpu.cfs_quota_us`, `cpu.cfs_period_us`, `cpu.shares`, `cpuacct.usage`
//! (ns) and `cpuacct.stat` (USER_HZ ticks).

use super::{Errors, parse};

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuStats {
    pub usage_seconds: Option<f64>,
    pub user_seconds: Option<f64>,
    pub system_seconds: Option<f64>,
    pub periods: Option<u64>,
    pub throttled_periods: Option<u64>,
    pub throttled_seconds: Option<f64>,
    pub burst_periods: Option<u64>,
    pub burst_seconds: Option<f64>,
    /// quota / period; `None` when unlimited.
    pub limit_cores: Option<f64>,
    /// v2 `cpu.weight` (1–10000).
    pub weight: Option<u64>,
    /// v1 `cpu.shares`.
    pub shares: Option<u64>,
}

/// v2 `cpu.stat`.
pub fn stat_v2(text: &str, stats: &mut CpuStats, errors: &mut Errors) {
    for entry in parse::keyed(text) {
        let Ok((key, v)) = entry else {
            errors.malformed("cpu.stat");
            continue;
        };
        let us = v as f64 / 1e6;
        match key {
            "usage_usec" => stats.usage_seconds = Some(us),
            "user_usec" => stats.user_seconds = Some(us),
            "system_usec" => stats.system_seconds = Some(us),
            "nr_periods" => stats.periods = Some(v),
            "nr_throttled" => stats.throttled_periods = Some(v),
            "throttled_usec" => stats.throttled_seconds = Some(us),
            "nr_bursts" => stats.burst_periods = Some(v),
            "burst_usec" => stats.burst_seconds = Some(us),
            _ => {}
        }
    }
}

/// v2 `cpu.max`: `$MAX $PERIOD`, `$MAX` being a number or `max`.
pub fn max_v2(text: &str, stats: &mut CpuStats, errors: &mut Errors) {
    let mut fields = text.split_whitespace();
    match (
        fields.next(),
        fields.next().and_then(|p| p.parse::<u64>().ok()),
    ) {
        (Some("max"), Some(_)) => stats.limit_cores = None,
        (Some(quota), Some(period)) if period > 0 => match quota.parse::<u64>() {
            Ok(quota) => stats.limit_cores = Some(quota as f64 / period as f64),
            Err(_) => errors.malformed("cpu.max"),
        },
        _ => errors.malformed("cpu.max"),
    }
}

/// v1 `cpu.stat`: like v2's but `throttled_time` and `burst_time` in ns.
pub fn stat_v1(text: &str, stats: &mut CpuStats, errors: &mut Errors) {
    for entry in parse::keyed(text) {
        let Ok((key, v)) = entry else {
            errors.malformed("cpu.stat");
            continue;
        };
        match key {
            "nr_periods" => stats.periods = Some(v),
            "nr_throttled" => stats.throttled_periods = Some(v),
            "throttled_time" => stats.throttled_seconds = Some(v as f64 / 1e9),
            "nr_bursts" => stats.burst_periods = Some(v),
            "burst_time" => stats.burst_seconds = Some(v as f64 / 1e9),
            _ => {}
        }
    }
}

/// v1 `cpu.cfs_quota_us` (`-1` for unlimited) and `cpu.cfs_period_us`.
pub fn limit_v1(quota: &str, period: &str, stats: &mut CpuStats, errors: &mut Errors) {
    let period = parse::single(period);
    match (quota.trim().parse::<i64>(), period) {
        (Ok(q), Some(_)) if q < 0 => stats.limit_cores = None,
        (Ok(q), Some(p)) if p > 0 => stats.limit_cores = Some(q as f64 / p as f64),
        (Err(_), _) => errors.malformed("cpu.cfs_quota_us"),
        _ => errors.malformed("cpu.cfs_period_us"),
    }
}

/// v1 `cpuacct.stat`: `user` and `system` in USER_HZ ticks.
pub fn cpuacct_stat(text: &str, user_hz: u64, stats: &mut CpuStats, errors: &mut Errors) {
    for entry in parse::keyed(text) {
        let Ok((key, ticks)) = entry else {
            errors.malformed("cpuacct.stat");
            continue;
        };
        let seconds = Some(ticks as f64 / user_hz.max(1) as f64);
        match key {
            "user" => stats.user_seconds = seconds,
            "system" => stats.system_seconds = seconds,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_stat_max_and_weight() {
        let mut stats = CpuStats::default();
        let mut errors = Errors::default();
        stat_v2(
            "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\ncore_sched.force_idle_usec 0\nnr_periods 20\nnr_throttled 18\nthrottled_usec 1700000\nnr_bursts 0\nburst_usec 0\n",
            &mut stats,
            &mut errors,
        );
        max_v2("10000 100000\n", &mut stats, &mut errors);
        assert_eq!(stats.usage_seconds, Some(2.5));
        assert_eq!(stats.user_seconds, Some(2.0));
        assert_eq!(stats.throttled_periods, Some(18));
        assert_eq!(stats.throttled_seconds, Some(1.7));
        assert_eq!(stats.burst_seconds, Some(0.0));
        assert_eq!(stats.limit_cores, Some(0.1));
        max_v2("max 100000\n", &mut stats, &mut errors);
        assert_eq!(
            stats.limit_cores, None,
            "max means no limit, not a huge one"
        );
        assert_eq!(errors.total(), 0);
    }

    #[test]
    fn v1_stat_quota_and_ticks() {
        let mut stats = CpuStats::default();
        let mut errors = Errors::default();
        stat_v1(
            "nr_periods 20\nnr_throttled 18\nthrottled_time 1700000000\nnr_bursts 0\nburst_time 0\n",
            &mut stats,
            &mut errors,
        );
        limit_v1("10000\n", "100000\n", &mut stats, &mut errors);
        cpuacct_stat("user 323603\nsystem 56075\n", 100, &mut stats, &mut errors);
        assert_eq!(stats.throttled_seconds, Some(1.7));
        assert_eq!(stats.limit_cores, Some(0.1));
        assert_eq!(stats.user_seconds, Some(3236.03));
        assert_eq!(stats.system_seconds, Some(560.75));
        limit_v1("-1\n", "100000\n", &mut stats, &mut errors);
        assert_eq!(stats.limit_cores, None);
        assert_eq!(errors.total(), 0);
    }

    #[test]
    fn garbage_is_counted_and_the_rest_kept() {
        let mut stats = CpuStats::default();
        let mut errors = Errors::default();
        stat_v2(
            "usage_usec 1000000\nnr_throttled lots\nnr_periods",
            &mut stats,
            &mut errors,
        );
        max_v2("", &mut stats, &mut errors);
        max_v2("abc 100000", &mut stats, &mut errors);
        limit_v1("ten\n", "100000\n", &mut stats, &mut errors);
        assert_eq!(stats.usage_seconds, Some(1.0));
        assert_eq!(stats.throttled_periods, None);
        assert_eq!(errors.count("cpu.stat"), 2);
        assert_eq!(errors.count("cpu.max"), 2);
        assert_eq!(errors.count("cpu.cfs_quota_us"), 1);
    }
}
