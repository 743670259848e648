//! Reference answers for chapter 2 (compiled instead of `src/ch02.rs` with `--features solutions`).

use crate::types::{AttnShape, ContiguousCache, ExerciseError, Result, Shape};

pub fn kv_bytes_per_token(shape: &Shape, dtype_bytes: u64) -> u64 {
    2 * shape.layers * shape.kv_heads * shape.head_dim * dtype_bytes
}

pub fn cached_token_passes(prompt_len: u64, new_tokens: u64) -> u64 {
    if new_tokens == 0 {
        0
    } else {
        prompt_len + new_tokens - 1
    }
}

pub fn cache_write(cache: &mut ContiguousCache, layer: usize, pos: usize, k: &[f32], v: &[f32]) -> Result<()> {
    if layer >= cache.layers {
        return Err(ExerciseError::OutOfRange { what: "layer", index: layer, len: cache.layers });
    }
    if pos >= cache.max_len {
        return Err(ExerciseError::OutOfRange { what: "position", index: pos, len: cache.max_len });
    }
    for (what, row) in [("k", k), ("v", v)] {
        if row.len() != cache.kv_dim {
            return Err(ExerciseError::LengthMismatch { what, expected: cache.kv_dim, got: row.len() });
        }
    }
    let o = (layer * cache.max_len + pos) * cache.kv_dim;
    cache.k[o..o + cache.kv_dim].copy_from_slice(k);
    cache.v[o..o + cache.kv_dim].copy_from_slice(v);
    cache.len = cache.len.max(pos + 1);
    Ok(())
}

pub fn attend_one(shape: AttnShape, q: &[f32], keys: &[f32], values: &[f32]) -> Result<Vec<f32>> {
    let AttnShape { heads, kv_heads, head_dim: d } = shape;
    if kv_heads == 0 || d == 0 || heads % kv_heads != 0 {
        return Err(ExerciseError::InvalidSettings(format!("{heads} heads over {kv_heads} KV heads of {d}")));
    }
    let kv_dim = kv_heads * d;
    if q.len() != heads * d {
        return Err(ExerciseError::LengthMismatch { what: "q", expected: heads * d, got: q.len() });
    }
    if keys.len() % kv_dim != 0 {
        return Err(ExerciseError::LengthMismatch { what: "keys", expected: keys.len() / kv_dim * kv_dim, got: keys.len() });
    }
    if values.len() != keys.len() {
        return Err(ExerciseError::LengthMismatch { what: "values", expected: keys.len(), got: values.len() });
    }
    let n_ctx = keys.len() / kv_dim;
    if n_ctx == 0 {
        return Err(ExerciseError::InvalidSettings("a query attends to at least itself".into()));
    }
    let group = heads / kv_heads;
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0.0f32; heads * d];
    let mut scores = vec![0.0f32; n_ctx];
    for h in 0..heads {
        let kvh = h / group;
        let q_h = &q[h * d..(h + 1) * d];
        for (t, s) in scores.iter_mut().enumerate() {
            let k_h = &keys[t * kv_dim + kvh * d..t * kv_dim + (kvh + 1) * d];
            *s = q_h.iter().zip(k_h).map(|(a, b)| a * b).sum::<f32>() * scale;
        }
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        scores.iter_mut().for_each(|s| *s = (*s - max).exp());
        let sum: f32 = scores.iter().sum();
        let out_h = &mut out[h * d..(h + 1) * d];
        for (t, &p) in scores.iter().enumerate() {
            let v_h = &values[t * kv_dim + kvh * d..t * kv_dim + (kvh + 1) * d];
            for (o, v) in out_h.iter_mut().zip(v_h) {
                *o += p / sum * v;
            }
        }
    }
    Ok(out)
}
