//! The prefill policy's three command-line switches, shared by `generate`, `bench` and `serve`
//! (vLLM's names).

/// Chapter 5's (and 6's) prefill policy on the command line; the defaults are vLLM V1's.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct PrefillFlags {
    /// ch05, ch06: turn prefix caching off (it is on by default, as in vLLM V1).
    #[arg(long)]
    pub no_prefix_caching: bool,
    /// ch05, ch06: turn chunked prefill off (it is on by default, as in vLLM V1: prompts fill
    /// what the step's token budget leaves after the decodes, in chunks).
    #[arg(long)]
    pub no_chunked_prefill: bool,
    /// ch05, ch06: the step's token budget (default `max(max_len, 2048)`, chapter 4's rule).
    #[arg(long)]
    pub max_num_batched_tokens: Option<usize>,
}

impl PrefillFlags {
    pub fn policy(&self) -> kvserve::Prefill {
        kvserve::Prefill {
            prefix_caching: !self.no_prefix_caching,
            chunked: !self.no_chunked_prefill,
            max_num_batched_tokens: self.max_num_batched_tokens,
        }
    }
}
