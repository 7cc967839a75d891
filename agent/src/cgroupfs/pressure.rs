//! Pressure stall information: `cpu.pressure`, `memory.pressure`,
//! `io.pressure` (v2 cgroups) and `/proc/pressure/*` (the node).

use super::{Errors, parse};

pub const RESOURCES: [&str; 3] = ["cpu", "memory", "io"];

/// Total stall time of one resource, from the `total=` (µs) fields.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stall {
    pub some_seconds: Option<f64>,
    pub full_seconds: Option<f64>,
}

/// Parses `some avg10=… total=N` and `full …` lines.
pub fn parse_stall(text: &str, file: &'static str, errors: &mut Errors) -> Stall {
    let mut stall = Stall::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        let total = parse::pairs(rest)
            .find(|(k, _)| *k == "total")
            .and_then(|(_, v)| v.parse::<u64>().ok());
        match (kind, total) {
            ("some", Some(us)) => stall.some_seconds = Some(us as f64 / 1e6),
            ("full", Some(us)) => stall.full_seconds = Some(us as f64 / 1e6),
            _ => errors.malformed(file),
        }
    }
    stall
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_in_seconds() {
        let mut errors = Errors::default();
        let stall = parse_stall(
            "some avg10=4.93 avg60=5.04 avg300=10.21 total=440604288\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            "cpu.pressure",
            &mut errors,
        );
        assert_eq!(stall.some_seconds, Some(440.604288));
        assert_eq!(stall.full_seconds, Some(0.0));
        assert_eq!(errors.total(), 0);
    }

    #[test]
    fn kernels_before_5_13_have_no_full_line_for_cpu() {
        let stall = parse_stall(
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=12\n",
            "cpu.pressure",
            &mut Errors::default(),
        );
        assert_eq!(stall.full_seconds, None);
    }

    #[test]
    fn garbage_is_counted() {
        let mut errors = Errors::default();
        let stall = parse_stall("some avg10=x\nnonsense\n", "io.pressure", &mut errors);
        assert_eq!(stall, Stall::default());
        assert_eq!(errors.count("io.pressure"), 2);
    }
}
