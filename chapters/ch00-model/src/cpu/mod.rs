//! The CPU speed work that appendix C teaches, kept apart from the model so the chapters read as
//! arithmetic: [`kernels`] (the fixed-order dot product and its tiles), [`gemm`] (the same dot
//! products in a larger tile, for prompts), [`packed`] (weights re-laid in the order the kernels
//! read them, in f32, f16 or bf16), [`widen`] (how each instruction set widens half-precision
//! weights to f32 in registers), [`weighted`] (attention's probabilities times values),
//! [`exp`] (the exponentials of the softmax and of SiLU, eight at a time) and [`pages`] (weight
//! memory on huge pages).

pub mod exp;
pub mod gemm;
pub mod kernels;
pub mod packed;
pub mod pages;
pub mod weighted;
pub mod widen;
