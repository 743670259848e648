//! The checks behind the tests: each exercise's check panics (an `assert!` or the exercise's own
//! `todo!()`) unless the exercise is solved. `tests/exercises.rs` runs them as tests, and the
//! `progress` binary runs them all and prints what is left. They pin the edge cases a careless
//! answer gets wrong; read them when an answer fails.

pub mod ch01;
pub mod ch02;
pub mod ch03;
pub mod ch04;
pub mod ch05;
pub mod ch08;

/// A small deterministic random stream (xorshift64*), so the randomized checks need no crate and
/// fail the same way every run.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// `a` and `b` agree element by element within `tol`.
pub(crate) fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol, "{what}: element {i} is {x}, expected {y} (±{tol}); whole output {a:?}");
    }
}
