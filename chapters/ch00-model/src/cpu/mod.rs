//! The CPU speed work that appendix C teaches, kept apart from the model so the chapters read as
//! arithmetic: [`kernels`] (the fixed-order dot product and its tiles), [`packed`] (weights
//! re-laid in the order the kernels read them) and [`pages`] (weight memory on huge pages).

pub mod kernels;
pub mod packed;
pub mod pages;
