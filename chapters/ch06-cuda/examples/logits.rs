//! The logits of every position of fixed token ids, computed on the GPU in the checkpoint's dtype
//! (or `--dtype`), as JSON: the GPU half of the transformers parity check
//! (`python3 scripts/hf_check.py parity --rust-bin .gpu/logits_gpu --threshold 0.02`), with the
//! same interface as chapter 1's CPU `logits` example.
//!
//!   cargo run --release -p ch06-cuda --example logits_gpu -- --model DIR --ids 1,2,3 [--out FILE] [--dtype f16]

use ch00_model::{AttnShape, DType, Model};
use ch06_cuda::engine::capacity;
use ch06_cuda::kernels::Kernels;
use ch06_cuda::model::{GpuModel, KvCache};
use ch06_cuda::weights::GpuWeights;
use ch06_cuda::{Gpu, GpuFloat};
use std::path::PathBuf;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let usage = "usage: logits_gpu --model DIR --ids 1,2,3 [--out FILE] [--dtype f16|bf16|f32]";
    let dir = PathBuf::from(flag("--model").ok_or(usage)?);
    let ids: Vec<u32> = flag("--ids").ok_or(usage)?.split(',').map(|s| s.trim().parse()).collect::<Result<_, _>>()?;
    let model = Model::load(&dir)?;
    let dtype = match flag("--dtype") {
        Some(d) => DType::parse(&d).ok_or("unknown --dtype")?,
        None => model.config.dtype.unwrap_or(DType::F32),
    };
    let logits = match dtype {
        DType::F32 => all_logits::<f32>(&model, &ids)?,
        DType::F16 => all_logits::<half::f16>(&model, &ids)?,
        DType::BF16 => all_logits::<half::bf16>(&model, &ids)?,
    };
    let json = serde_json::json!({ "logits": logits, "dtype": format!("{dtype:?}") });
    match flag("--out") {
        Some(path) => std::fs::write(path, json.to_string())?,
        None => println!("{json}"),
    }
    Ok(())
}

/// One pass over `ids` as one sequence, with logits asked for every position.
fn all_logits<T: GpuFloat>(model: &Model, ids: &[u32]) -> Res<Vec<Vec<f32>>> {
    let gpu = Gpu::new(0)?;
    let c = &model.config;
    let n = ids.len();
    let block = 16;
    let kernels = Kernels::<T>::new(&gpu, AttnShape::of(c))?;
    let weights = GpuWeights::<T>::upload(&gpu, model)?;
    let cap = capacity(block, n.max(1), n.max(1), n.max(1));
    let mut gm = GpuModel::new(&gpu, c.clone(), kernels, weights, cap)?;
    let kv = KvCache::<T>::new(&gpu, c, n.div_ceil(block), block)?;
    let l = gm.layout;
    let mut meta = vec![0i32; l.len];
    for (i, &t) in ids.iter().enumerate() {
        (meta[l.tokens + i], meta[l.pos + i], meta[l.slot + i], meta[l.rows + i], meta[l.ctx + i]) = (t as i32, i as i32, i as i32, 0, i as i32 + 1);
        meta[l.logit_idx + i] = i as i32;
    }
    for b in 0..n.div_ceil(block) {
        meta[l.tables + b] = b as i32;
    }
    gm.upload_meta(&gpu, &meta)?;
    if let Some(t) = ids.iter().find(|&&t| t as usize >= c.vocab_size) {
        return Err(format!("token {t} is beyond the vocabulary of {}", c.vocab_size).into());
    }
    // SAFETY: one sequence over its own n.div_ceil(block) blocks, each token in its own slot, every
    // id below the vocabulary (checked), contexts up to n within `parts_for(n)` partitions.
    unsafe { gm.forward(&gpu, &kv, n, n, GpuModel::<T>::parts_for(n))? };
    Ok((0..n).map(|r| gm.logits_row(&gpu, r)).collect::<Result<_, _>>()?)
}
