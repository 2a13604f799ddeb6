//! Mini-batch split (docs/algorithm.md §3, §5; the paper's `mini_batch_split`): a gradient
//! pass over a batch done in parts, each part's loss scaled by its share, the gradients
//! accumulated: the same gradient as one pass, with one part's activations in memory.

/// `split` contiguous parts of 0..n, sizes differing by at most one, none empty: (start, len).
/// A split larger than n gives n parts of one.
pub fn parts(n: i64, split: usize) -> Vec<(i64, i64)> {
    let split = (split as i64).clamp(1, n.max(1));
    (0..split).map(|p| (p * n / split, (p + 1) * n / split - p * n / split)).filter(|&(_, len)| len > 0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_batch_in_order() {
        assert_eq!(parts(10, 4), [(0, 2), (2, 3), (5, 2), (7, 3)]);
        assert_eq!(parts(3, 4), [(0, 1), (1, 1), (2, 1)]);
        assert_eq!(parts(5, 1), [(0, 5)]);
        assert_eq!(parts(8, 0), [(0, 8)]);
    }
}
