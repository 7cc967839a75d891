//! Latency histogram layout, shared by the probes that count and the exporter
//! that publishes: the `le` boundaries exported are exactly the boundaries the
//! kernel counts with.
//!
//! Values are nanoseconds. Boundaries are log-linear: every power of two from
//! 2^10 ns (1.024 µs) to 2^34 ns (17.2 s) is split into [`SUB_BUCKETS`] equal
//! parts, so bucket `i` holds values `v` with `upper(i-1) < v <= upper(i)`.
//! Slot 0 holds everything up to 1.024 µs and the last slot everything above
//! 17.2 s (`+Inf`). With two sub-buckets per octave a bucket is at most 50 %
//! wider than its lower bound, which bounds the error of any quantile estimate.

/// log2 of the number of buckets per power of two.
pub const SUB_BUCKET_BITS: u32 = 1;
/// Buckets per power of two.
pub const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;
/// The first finite upper bound is `2^MIN_EXP` ns.
pub const MIN_EXP: u32 = 10;
/// The last finite upper bound is `2^MAX_EXP` ns.
pub const MAX_EXP: u32 = 34;
/// Number of finite upper bounds.
pub const FINITE_BOUNDS: usize = 1 + ((MAX_EXP - MIN_EXP) as usize) * (SUB_BUCKETS as usize);
/// Number of counting slots: the finite bounds plus `+Inf`.
pub const SLOTS: usize = FINITE_BOUNDS + 1;

/// A latency histogram as the kernel keeps it per cgroup: per-slot counts (not
/// cumulative) and the sum of all observed values in nanoseconds.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Histogram {
    pub buckets: [u64; SLOTS],
    pub sum_ns: u64,
}

impl Histogram {
    pub const ZERO: Self = Self {
        buckets: [0; SLOTS],
        sum_ns: 0,
    };

    /// The number of observations.
    pub fn count(&self) -> u64 {
        let Self { buckets, sum_ns: _ } = self;
        buckets.iter().fold(0u64, |acc, b| acc.wrapping_add(*b))
    }
}

/// The inclusive upper bound of `slot` in nanoseconds, or `None` for `+Inf`.
pub const fn upper_bound_ns(slot: usize) -> Option<u64> {
    if slot == 0 {
        return Some(1 << MIN_EXP);
    }
    if slot >= FINITE_BOUNDS {
        return None;
    }
    let j = (slot - 1) as u64;
    let exp = MIN_EXP as u64 + j / SUB_BUCKETS;
    let sub = j % SUB_BUCKETS;
    let base = 1u64 << exp;
    Some(base + (sub + 1) * (base / SUB_BUCKETS))
}

/// The slot that counts a value of `ns` nanoseconds: the smallest slot whose
/// upper bound is `>= ns`. Branch-light and loop-free, so the verifier takes it.
#[inline(always)]
pub const fn slot_for(ns: u64) -> usize {
    if ns <= (1 << MIN_EXP) {
        return 0;
    }
    // Bounds are inclusive, so place `ns - 1` in half-open `[lower, upper)`.
    let x = ns - 1;
    let exp = log2(x);
    if exp >= MAX_EXP {
        return SLOTS - 1;
    }
    let sub = (x >> (exp - SUB_BUCKET_BITS)) & (SUB_BUCKETS - 1);
    1 + ((exp - MIN_EXP) as usize) * (SUB_BUCKETS as usize) + sub as usize
}

/// floor(log2(v)) for v > 0, without loops (BPF has no count-leading-zeros).
#[inline(always)]
pub const fn log2(mut v: u64) -> u32 {
    let mut r = 0;
    if v >> 32 != 0 {
        v >>= 32;
        r += 32;
    }
    if v >> 16 != 0 {
        v >>= 16;
        r += 16;
    }
    if v >> 8 != 0 {
        v >>= 8;
        r += 8;
    }
    if v >> 4 != 0 {
        v >>= 4;
        r += 4;
    }
    if v >> 2 != 0 {
        v >>= 2;
        r += 2;
    }
    if v >> 1 != 0 {
        r += 1;
    }
    r
}

#[cfg(feature = "user")]
// SAFETY: `Histogram` is `#[repr(C)]`, made only of `u64`s, so it has no
// padding and every bit pattern is a valid value.
unsafe impl aya::Pod for Histogram {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_matches_leading_zeros() {
        for shift in 0..64 {
            for v in [
                1u64 << shift,
                (1u64 << shift) | 1,
                ((1u64 << shift) - 1).max(1),
            ] {
                assert_eq!(log2(v), 63 - v.leading_zeros(), "v={v}");
            }
        }
        assert_eq!(log2(u64::MAX), 63);
    }

    #[test]
    fn layout_spans_one_microsecond_to_ten_seconds_with_two_buckets_per_octave() {
        assert_eq!(upper_bound_ns(0), Some(1024));
        assert_eq!(upper_bound_ns(1), Some(1536));
        assert_eq!(upper_bound_ns(2), Some(2048));
        assert_eq!(upper_bound_ns(FINITE_BOUNDS - 1), Some(1 << 34));
        assert_eq!(upper_bound_ns(FINITE_BOUNDS), None);
        assert!(upper_bound_ns(FINITE_BOUNDS - 1).is_some_and(|b| b > 10_000_000_000));
        assert_eq!(SLOTS, 50);
        for slot in 1..FINITE_BOUNDS {
            let (Some(lo), Some(hi)) = (upper_bound_ns(slot - 1), upper_bound_ns(slot)) else {
                panic!("slot {slot} has no finite bounds");
            };
            assert!(hi > lo);
            // Never more than 50 % wider than the lower bound.
            assert!(hi * 2 <= lo * 3, "slot {slot}: {lo}..{hi}");
        }
    }

    #[test]
    fn every_value_lands_in_the_bucket_whose_bounds_contain_it() {
        let mut values = vec![0u64, 1, 1023, 1024, 1025, u64::MAX, 1 << 34, (1 << 34) + 1];
        for slot in 0..FINITE_BOUNDS {
            let Some(b) = upper_bound_ns(slot) else {
                continue;
            };
            values.extend([b - 1, b, b + 1]);
        }
        for v in values {
            let slot = slot_for(v);
            assert!(slot < SLOTS);
            if let Some(hi) = upper_bound_ns(slot) {
                assert!(v <= hi, "v={v} slot={slot} hi={hi}");
            }
            if slot > 0 {
                let lo = upper_bound_ns(slot - 1).unwrap_or(u64::MAX);
                assert!(v > lo, "v={v} slot={slot} lo={lo}");
            }
        }
    }
}
