//! From a KV memory budget to a number of cache slots.

use ch00_model::{kv_bytes_per_token, DType, LlamaConfig, ModelError, Result};

// ANCHOR: slots_for_budget
/// How many contiguous slots of `max_len` tokens fit in `budget_bytes` of f32 KV cache. Every slot
/// is reserved for the maximum length up front, whatever its request will actually use: this is
/// the waste PagedAttention (chapter 5) removes. Errors when not even one slot fits.
pub fn slots_for_budget(config: &LlamaConfig, max_len: usize, budget_bytes: u64) -> Result<usize> {
    if max_len == 0 {
        return Err(ModelError::InvalidSettings("max_len must be at least 1".into()));
    }
    // A slot too large for u64 fits in no budget (saturating, not wrapping to a small number).
    let slot_bytes = (max_len as u64).saturating_mul(kv_bytes_per_token(config, DType::F32)).max(1);
    if budget_bytes < slot_bytes {
        return Err(ModelError::InvalidSettings(format!(
            "KV budget of {budget_bytes} bytes is smaller than one request's slot: \
             {max_len} tokens × {} bytes/token = {slot_bytes} bytes",
            kv_bytes_per_token(config, DType::F32)
        )));
    }
    Ok((budget_bytes / slot_bytes) as usize)
}
// ANCHOR_END: slots_for_budget

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_divides_into_whole_slots_and_too_small_is_an_error() {
        let c = LlamaConfig::named("tiny").unwrap();
        let slot = 100 * kv_bytes_per_token(&c, DType::F32);
        assert_eq!(slots_for_budget(&c, 100, slot).unwrap(), 1);
        assert_eq!(slots_for_budget(&c, 100, 3 * slot + slot - 1).unwrap(), 3);
        let e = slots_for_budget(&c, 100, slot - 1).unwrap_err().to_string();
        assert!(e.contains("smaller than one request's slot"), "{e}");
        assert!(slots_for_budget(&c, 0, slot).is_err());
        // 2^44 tokens of ~1 MiB each overflow u64: no slot fits (this wrapped to 1024 slots once).
        let big = LlamaConfig::named("llama-7b").unwrap();
        assert!(slots_for_budget(&big, (1 << 44) + 1, 1 << 30).is_err());
    }

    #[test]
    fn llama_7b_at_4096_tokens_on_an_80_gb_h100() {
        // f32 KV: 1 MiB per token, 4 GiB per 4096-token slot: 19 slots in the card's 81,559 MiB
        // (79.6 GiB), before the weights.
        let c = LlamaConfig::named("llama-7b").unwrap();
        assert_eq!(slots_for_budget(&c, 4096, ch00_model::H100_80GB.bytes()).unwrap(), 19);
    }
}
