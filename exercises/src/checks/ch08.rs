//! Checks of the chapter-8 exercises.

use super::{assert_close, Rng};
use crate::ch08::{row_parallel_linear, shard_range};

pub fn ch08_shard_range() {
    assert_eq!(shard_range(8, 1, 2), 4..8);
    let parts: Vec<_> = (0..3).map(|r| shard_range(10, r, 3)).collect();
    assert_eq!(parts, [0..3, 3..6, 6..10], "contiguous, in order, covering 0..10");
    assert_eq!(shard_range(3, 3, 4), 2..3);
    assert_eq!(shard_range(2, 0, 4), 0..0, "more ranks than items: some parts are empty");
    let mut rng = Rng::new(8);
    for _ in 0..200 {
        let (n, world) = (rng.below(50), 1 + rng.below(9));
        let parts: Vec<_> = (0..world).map(|r| shard_range(n, r, world)).collect();
        assert_eq!(parts.first().map(|p| p.start), Some(0));
        assert_eq!(parts.last().map(|p| p.end), Some(n));
        assert!(parts.windows(2).all(|p| p[0].end == p[1].start), "{parts:?}");
        let (lo, hi) = parts.iter().fold((usize::MAX, 0), |(a, b), p| (a.min(p.len()), b.max(p.len())));
        assert!(hi - lo <= 1, "lengths differ by more than one: {parts:?}");
    }
}

pub fn ch08_row_parallel_linear() {
    let mut rng = Rng::new(9);
    for (n, k, m) in [(1, 1, 1), (2, 7, 3), (3, 16, 5), (4, 33, 2)] {
        let x: Vec<f32> = (0..n * k).map(|_| rng.below(2001) as f32 / 1000.0 - 1.0).collect();
        let w: Vec<f32> = (0..m * k).map(|_| rng.below(2001) as f32 / 1000.0 - 1.0).collect();
        let full: Vec<f32> = (0..n * m).map(|ij| (0..k).map(|c| x[(ij / m) * k + c] * w[(ij % m) * k + c]).sum()).collect();
        for world in [1, 2, 3, 4, 8] {
            let got = row_parallel_linear(&x, &w, n, k, m, world);
            assert_close(&got, &full, 1e-4, &format!("(n {n}, k {k}, m {m}) on {world} ranks"));
        }
        // On one rank the partial is the whole product, summed in the same order.
        assert_eq!(row_parallel_linear(&x, &w, n, k, m, 1), full, "one rank: exactly x · wᵀ");
    }
    // Two ranks, by hand: x = [1 2 3 4], w = [1 1 1 1]; partials 1 + 2 and 3 + 4.
    assert_eq!(row_parallel_linear(&[1.0, 2.0, 3.0, 4.0], &[1.0; 4], 1, 4, 1, 2), [10.0]);
}
