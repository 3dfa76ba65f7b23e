//! Summary statistics over a benchmark's runs.

use serde::{Deserialize, Serialize};

/// Summary of one metric over the runs that have a value for it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// How many runs had a value (runs whose process exited before the memory snapshot have
    /// none for the snapshot's metrics).
    pub n: usize,
    pub min: f64,
    /// The middle value; the mean of the two middle values for an even count.
    pub median: f64,
    /// Nearest-rank 95th percentile: the smallest value with at least 95 % of the values at or
    /// below it (with fewer than 20 runs, that is the maximum).
    pub p95: f64,
    pub mean: f64,
}

impl Stats {
    /// `None` for no values (NaNs are left out: they have no place in an ordering).
    pub fn of(values: &[f64]) -> Option<Stats> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        // Nearest rank: ceil(0.95 n), 1-based; in integers to avoid 0.95 * 20 = 19.000000000000004.
        let rank = (95 * n).div_ceil(100).max(1);
        Some(Stats {
            n,
            min: v[0],
            median,
            p95: v[rank - 1],
            mean: v.iter().sum::<f64>() / n as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_is_every_statistic() {
        let s = Stats::of(&[7.0]).unwrap();
        assert_eq!(
            s,
            Stats {
                n: 1,
                min: 7.0,
                median: 7.0,
                p95: 7.0,
                mean: 7.0
            }
        );
    }

    #[test]
    fn even_count_median_is_the_mean_of_the_middle_two() {
        let s = Stats::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.p95, s.mean), (1.0, 2.5, 4.0, 2.5));
    }

    #[test]
    fn odd_count_median_and_unsorted_input() {
        let s = Stats::of(&[9.0, 1.0, 5.0]).unwrap();
        assert_eq!((s.min, s.median, s.p95), (1.0, 5.0, 9.0));
    }

    #[test]
    fn p95_is_nearest_rank() {
        // 1..=20: rank ceil(19.0) = 19 → 19, not the maximum.
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(Stats::of(&v).unwrap().p95, 19.0);
        // 1..=100: rank 95.
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Stats::of(&v).unwrap();
        assert_eq!((s.p95, s.median, s.mean), (95.0, 50.5, 50.5));
        // 1..=10: rank ceil(9.5) = 10 → the maximum.
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(Stats::of(&v).unwrap().p95, 10.0);
    }

    #[test]
    fn no_values_no_stats() {
        assert_eq!(Stats::of(&[]), None);
        assert_eq!(Stats::of(&[f64::NAN]), None);
    }
}
