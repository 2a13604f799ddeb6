//! Min-max normalisation to [−1, 1] per dimension (docs/algorithm.md §1):
//!   y = 2·(x − min)/(max − min) − 1,   x = (y + 1)/2·(max − min) + min.
//! A dimension whose range is below 1e-6 (a constant) maps to y = x − min (0 on the data),
//! so it neither divides by zero nor moves.

use serde::{Deserialize, Serialize};

/// Range below which a dimension counts as constant.
const MIN_RANGE: f32 = 1e-6;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinMax {
    pub min: Vec<f32>,
    pub max: Vec<f32>,
}

impl MinMax {
    /// Statistics of rows of length `dim` laid out one after another in `rows`.
    pub fn from_rows<'a>(dim: usize, rows: impl IntoIterator<Item = &'a [f32]>) -> Self {
        let mut min = vec![f32::INFINITY; dim];
        let mut max = vec![f32::NEG_INFINITY; dim];
        for row in rows {
            for chunk_row in row.chunks_exact(dim) {
                for d in 0..dim {
                    min[d] = min[d].min(chunk_row[d]);
                    max[d] = max[d].max(chunk_row[d]);
                }
            }
        }
        Self { min, max }
    }

    pub fn dim(&self) -> usize {
        self.min.len()
    }

    /// (min, range) per dimension; range 0 marks a constant dimension.
    fn min_range(&self, d: usize) -> (f32, f32) {
        let range = self.max[d] - self.min[d];
        (self.min[d], if range < MIN_RANGE { 0.0 } else { range })
    }

    /// Normalises rows of length `dim()` in place.
    pub fn normalize_in_place(&self, values: &mut [f32]) {
        for row in values.chunks_exact_mut(self.dim()) {
            for (d, v) in row.iter_mut().enumerate() {
                let (min, range) = self.min_range(d);
                *v = if range == 0.0 { *v - min } else { 2.0 * (*v - min) / range - 1.0 };
            }
        }
    }

    /// Inverse of [`normalize_in_place`](Self::normalize_in_place).
    pub fn denormalize_in_place(&self, values: &mut [f32]) {
        for row in values.chunks_exact_mut(self.dim()) {
            for (d, v) in row.iter_mut().enumerate() {
                let (min, range) = self.min_range(d);
                *v = if range == 0.0 { *v + min } else { (*v + 1.0) / 2.0 * range + min };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_range_to_unit_interval_and_back() {
        // Two dims over three rows: dim 0 in [−2, 6], dim 1 constant 5.
        let data = [-2.0, 5.0, 2.0, 5.0, 6.0, 5.0];
        let stats = MinMax::from_rows(2, [&data[..]]);
        assert_eq!(stats.min, [-2.0, 5.0]);
        assert_eq!(stats.max, [6.0, 5.0]);
        let mut y = data;
        stats.normalize_in_place(&mut y);
        assert_eq!(y, [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        stats.denormalize_in_place(&mut y);
        assert_eq!(y, data);
    }
}
