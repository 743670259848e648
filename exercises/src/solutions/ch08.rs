//! Reference answers for chapter 8.

use std::ops::Range;

pub fn shard_range(n: usize, rank: usize, world: usize) -> Range<usize> {
    rank * n / world..(rank + 1) * n / world
}

pub fn row_parallel_linear(x: &[f32], w: &[f32], n: usize, k: usize, m: usize, world: usize) -> Vec<f32> {
    assert_eq!((x.len(), w.len()), (n * k, m * k), "x is (n, k), w is (m, k)");
    let mut y = vec![0.0f32; n * m];
    for r in 0..world {
        let cols = shard_range(k, r, world);
        for i in 0..n {
            for j in 0..m {
                // This rank's partial dot product over its columns, added to the running sum.
                let partial: f32 = cols.clone().map(|c| x[i * k + c] * w[j * k + c]).sum();
                y[i * m + j] += partial;
            }
        }
    }
    y
}
