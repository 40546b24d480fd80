//! Medians and percentiles, the way the reference recipe computes them.

use std::time::Duration;

/// Summary of a sample of latencies (milliseconds) or rates.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Number of samples.
    pub n: usize,
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
    /// 95th percentile, nearest rank as in `bench-cni-adddel.py`.
    pub p95: f64,
    /// 99th percentile, nearest rank.
    pub p99: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
}

impl Stats {
    /// Summarises `values`; all zero when empty.
    pub fn of(values: &[f64]) -> Stats {
        let mut s: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if s.is_empty() {
            return Stats::default();
        }
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Stats {
            n,
            median,
            p95: percentile(&s, 95.0),
            p99: percentile(&s, 99.0),
            min: s[0],
            max: s[n - 1],
        }
    }
}

/// Nearest-rank percentile of sorted values: `round(p/100·n + 0.5) − 1`, as the recipe does.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    let rank = (p / 100.0 * n as f64 + 0.5).round() as usize;
    sorted[rank.saturating_sub(1).min(n - 1)]
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `a / b`, or NaN when `b` is zero.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        f64::NAN
    } else {
        a / b
    }
}

/// `PASS` or `FAIL`.
pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p95() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Stats::of(&v);
        assert_eq!(s.median, 50.5);
        assert_eq!(s.p95, 96.0);
        assert_eq!(s.p99, 100.0);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.max, 100.0);
        assert_eq!(Stats::of(&[3.0, 1.0, 2.0]).median, 2.0);
        assert_eq!(Stats::of(&[]).n, 0);
    }
}
