//! How close the prefill GEMM runs to one core's multiply-add peak: one thread, the shapes of a
//! `peer-76m` layer (its four matrices) × 512 tokens, timed in the thread's own CPU time (so a
//! busy machine that takes the core away does not count), GFLOP/s per matrix and in all.
//!
//! cargo run --release -p ch00-model --example gemm_rate -- [tokens, default 512] [f32|f16|bf16]

use ch00_model::cpu::{gemm, packed::{Elements, Packed}};
use ch00_model::DType;
use ndarray::Array2;

/// CPU seconds this thread has run.
fn thread_seconds() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tokens: usize = std::env::args().nth(1).map_or(Ok(512), |s| s.parse())?;
    let dtype = std::env::args().nth(2).map_or(Some(DType::F32), |s| DType::parse(&s)).ok_or("f32, f16 or bf16")?;
    let (mut flops, mut secs) = (0.0, 0.0);
    // (out, in): q+k+v fused, o, gate+up fused, down.
    for (out, inp) in [(1280, 768), (768, 768), (4096, 768), (768, 2048)] {
        let w = Array2::from_shape_fn((out, inp), |(r, c)| ((r * 7 + c * 13) % 101) as f32 / 50.0 - 1.0);
        let x = Array2::from_shape_fn((tokens, inp), |(r, c)| ((r * 3 + c * 11) % 97) as f32 / 48.0 - 1.0);
        let p = Packed::new_as(&w.view(), dtype);
        let mut y = Array2::<f32>::zeros((tokens, out));
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let start = thread_seconds();
            // One band after another on this thread, as `linear` hands them to a core.
            let band = ch00_model::cpu::kernels::BAND;
            for (b, mut yb) in y.axis_chunks_iter_mut(ndarray::Axis(1), band).enumerate() {
                let rows = b * band * inp..((b + 1) * band * inp).min(p.rows().div_ceil(4) * 4 * inp);
                match p.data() {
                    Elements::F32(d) => gemm::dot_rows(&x.view(), &d[rows], &mut yb),
                    Elements::F16(d) => gemm::dot_rows(&x.view(), &d[rows], &mut yb),
                    Elements::BF16(d) => gemm::dot_rows(&x.view(), &d[rows], &mut yb),
                }
            }
            best = f64::min(best, thread_seconds() - start);
        }
        let f = 2.0 * (tokens * out * inp) as f64;
        println!("{out} x {inp}: {:.1} GFLOP/s", f / best / 1e9);
        (flops, secs) = (flops + f, secs + best);
    }
    println!("all: {:.1} GFLOP/s", flops / secs / 1e9);
    Ok(())
}
