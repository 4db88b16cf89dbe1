//! A mergeable quantile sketch with relative-error guarantees (the DDSketch
//! idea: logarithmic buckets). A value `v > 0` lands in bucket
//! `ceil(log_gamma(v))` with `gamma = (1 + a) / (1 - a)`; answering with the
//! bucket's midpoint is within relative error `a` of the true quantile.
//! Sketches of the same accuracy merge by adding bucket counts, so per-window
//! sketches combine into per-minute or per-day percentiles exactly as if
//! computed in one pass. Latencies are ≥ 0; zero gets its own counter.
//!
//! The buckets are a dense array from the lowest index seen to the highest
//! (a few hundred for latencies from 1 ms to 10 s at 1 %): adding a value
//! is one `ln` and an index, which the window job does per record. They
//! are written as a map of the non-empty buckets, as when they were a
//! `BTreeMap`, so commit records of either form read back the same.

use std::collections::BTreeMap;

/// Relative accuracy of latency percentiles: 1 %.
pub const DEFAULT_RELATIVE_ACCURACY: f64 = 0.01;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantileSketch {
    gamma_ln: f64,
    buckets: Buckets,
    zeros: u64,
    count: u64,
}

/// Bucket counts from index `offset` on.
#[derive(Debug, Clone, Default)]
struct Buckets {
    offset: i32,
    counts: Vec<u64>,
}

impl Buckets {
    #[inline]
    fn add(&mut self, index: i32, n: u64) {
        if self.counts.is_empty() {
            self.offset = index;
        } else if index < self.offset {
            let grow = (self.offset - index) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = index;
        }
        let at = (index - self.offset) as usize;
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] += n;
    }

    /// The non-empty buckets, by index.
    fn iter(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (self.offset + i as i32, *n))
    }
}

/// Equal when the same buckets hold the same counts, wherever the arrays
/// start.
impl PartialEq for Buckets {
    fn eq(&self, other: &Buckets) -> bool {
        self.iter().eq(other.iter())
    }
}

impl serde::Serialize for Buckets {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for Buckets {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Buckets, D::Error> {
        let map = BTreeMap::<i32, u64>::deserialize(deserializer)?;
        let mut buckets = Buckets::default();
        for (index, n) in map {
            buckets.add(index, n);
        }
        Ok(buckets)
    }
}

impl Default for QuantileSketch {
    fn default() -> Self {
        QuantileSketch::new(DEFAULT_RELATIVE_ACCURACY)
    }
}

impl QuantileSketch {
    /// A sketch answering within `relative_accuracy` (0 < a < 1).
    pub fn new(relative_accuracy: f64) -> QuantileSketch {
        let a = relative_accuracy.clamp(1e-6, 0.5);
        QuantileSketch {
            gamma_ln: ((1.0 + a) / (1.0 - a)).ln(),
            buckets: Buckets::default(),
            zeros: 0,
            count: 0,
        }
    }

    /// Adds a non-negative value; negative and non-finite values are ignored
    /// (validation already refuses them).
    pub fn add(&mut self, value: f64) {
        if !value.is_finite() || value < 0.0 {
            return;
        }
        self.count += 1;
        if value == 0.0 {
            self.zeros += 1;
            return;
        }
        // ceil without a libm call (baseline x86-64 has no SSE4.1 round).
        let exact = value.ln() / self.gamma_ln;
        let truncated = exact as i32;
        let index = if f64::from(truncated) < exact {
            truncated + 1
        } else {
            truncated
        };
        self.buckets.add(index, 1);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds `other`'s counts. Both must have the same accuracy.
    pub fn merge(&mut self, other: &QuantileSketch) {
        debug_assert!(
            (self.gamma_ln - other.gamma_ln).abs() < 1e-12,
            "merging sketches of different accuracy"
        );
        for (index, count) in other.buckets.iter() {
            self.buckets.add(index, count);
        }
        self.zeros += other.zeros;
        self.count += other.count;
    }

    /// The value at quantile `q` (0..=1), or `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (self.count - 1) as f64).floor() as u64;
        if rank < self.zeros {
            return Some(0.0);
        }
        let mut seen = self.zeros;
        for (index, count) in self.buckets.iter() {
            seen += count;
            if seen > rank {
                // Midpoint (in relative terms) of (gamma^(i-1), gamma^i].
                let gamma = self.gamma_ln.exp();
                return Some(2.0 * (self.gamma_ln * index as f64).exp() / (1.0 + gamma));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    #[test]
    fn quantiles_are_within_the_relative_accuracy() {
        let mut rng = fastrand::Rng::with_seed(3);
        // Latency-like: mostly 10–100 ms with a heavy tail.
        let mut values: Vec<f64> = (0..50_000)
            .map(|_| {
                if rng.u8(0..20) == 0 {
                    200.0 + rng.f64() * 5000.0
                } else {
                    10.0 + rng.f64() * 90.0
                }
            })
            .collect();
        values.push(0.0);
        let mut sketch = QuantileSketch::default();
        values.iter().for_each(|v| sketch.add(*v));
        values.sort_by(f64::total_cmp);
        for q in [0.0, 0.5, 0.9, 0.95, 0.99, 1.0] {
            let (want, got) = (exact(&values, q), sketch.quantile(q).unwrap());
            assert!(
                (got - want).abs() <= want * DEFAULT_RELATIVE_ACCURACY + 1e-9,
                "q{q}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn merging_equals_one_pass() {
        let mut all = QuantileSketch::default();
        let mut parts = vec![QuantileSketch::default(); 4];
        for i in 0..10_000u32 {
            let value = f64::from(i % 997) * 1.7;
            all.add(value);
            parts[(i % 4) as usize].add(value);
        }
        let mut merged = QuantileSketch::default();
        parts.iter().for_each(|p| merged.merge(p));
        assert_eq!(merged, all);
        assert!(QuantileSketch::default().quantile(0.5).is_none());
    }

    /// Written as the map of non-empty buckets it always was: a commit
    /// record of the sparse form reads back equal.
    #[test]
    fn the_buckets_are_written_as_a_map() {
        let mut sketch = QuantileSketch::default();
        for value in [0.0, 5.0, 500.0, 0.2, 5.0] {
            sketch.add(value);
        }
        let json = serde_json::to_value(&sketch).unwrap();
        let buckets = json["buckets"].as_object().unwrap();
        assert_eq!(buckets.len(), 3, "{json}");
        assert_eq!(
            buckets.values().map(|n| n.as_u64().unwrap()).sum::<u64>(),
            4
        );
        let back: QuantileSketch = serde_json::from_value(json).unwrap();
        assert_eq!(back, sketch);
        assert_eq!(back.quantile(1.0), sketch.quantile(1.0));
    }
}
