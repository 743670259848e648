//! What a spec names a model by: a named shape resolved once into its `LlamaConfig`, and the
//! label of a KV dtype.

use anyhow::Result;
use ch00_model::{DType, LlamaConfig};

/// A named model shape (`tiny`, `bench`, `llama-7b`, …): its name, for labels, and its config,
/// resolved when the spec is built so nothing later re-parses a string.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub name: String,
    pub config: LlamaConfig,
}

impl Shape {
    /// The shape `LlamaConfig::named(name)` describes; an error for an unknown name.
    pub fn named(name: &str) -> Result<Self> {
        Ok(Shape { name: name.to_string(), config: LlamaConfig::named(name)? })
    }

    /// One of the shapes built into chapter 0 (`LlamaConfig::NAMES`), for the specs' defaults.
    pub(crate) fn builtin(name: &'static str) -> Self {
        debug_assert!(LlamaConfig::NAMES.contains(&name), "{name} is not a built-in shape");
        // LlamaConfig::named fails only on names outside LlamaConfig::NAMES.
        Shape::named(name).unwrap_or_else(|e| unreachable!("built-in shape {name}: {e}"))
    }
}

/// The lower-case name of a dtype, as the book's tables write it: `f32`, `f16`, `bf16`.
pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_name_resolves_and_unknown_names_are_errors() {
        for name in LlamaConfig::NAMES {
            assert_eq!(Shape::builtin(name).config, LlamaConfig::named(name).unwrap());
        }
        assert!(Shape::named("no-such-shape").is_err());
        assert_eq!([dtype_name(DType::F32), dtype_name(DType::F16), dtype_name(DType::BF16)], ["f32", "f16", "bf16"]);
    }
}
