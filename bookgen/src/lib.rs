//! bookgen: what computes and renders the book's tables and figures, apart from the CLI that
//! calls it (`kvserve bench`, `kvserve memory`, `kvserve trace`, `kvserve serve-bench`, and the
//! `capacity` and `interview` examples). Specs are typed (a [`shape::Shape`] holds its resolved
//! `LlamaConfig`, a dtype is a `DType`); runs return results; rendering is separate from both.
//! Nothing here prints: every function returns its text, its SVG or an error.
//!
//! - [`shape`]: a named model shape, resolved once, and a dtype's label.
//! - [`units`] (private): byte units as the tables print them.
//! - [`capacity`]: chapter 5's capacity experiment — `spec`, `run`, `result`, `markdown`, `figure`.
//! - [`chat`]: the prefix cache across the turns of multi-turn chats, on and off.
//! - [`chunked`]: chunked prefill on a mixed workload, and the token-budget sweep.
//! - [`sampling`]: parallel sampling with copy-on-write — `run`, `result`, `markdown`.
//! - [`interview`]: the cheat sheet's and the mock interview's tables — `inputs`, `sizing`, `markdown`.
//! - [`bench`]: `kvserve bench`'s stage rows (`rows`) and their Markdown tables (`tables`).
//! - [`card`]: the one card model: what a GPU leaves for the KV cache.
//! - [`memory`]: the KV-cache memory calculator's report (appendix A).
//! - [`topics`]: appendices E and F's computed tables (speculative decoding, attention variants, MoE).
//! - [`figures`]: SVG figures from real runs — Gantt `bars` and `gantt` chart, `latency_throughput`.

pub mod bench;
pub mod capacity;
pub mod card;
pub mod chat;
pub mod chunked;
pub mod figures;
pub mod interview;
pub mod memory;
pub mod sampling;
pub mod shape;
pub mod topics;
mod units;
