//! One prompt in, text out, on any engine: what `kvserve generate` and the chapters' examples run.

use crate::engine::Engine;
use crate::serving::{Request, RunOptions, RunOutput};
use ch00_model::{load_model, LoadedModel, Result, SamplingParams};

/// Generates `n` samples from one prompt with `engine` on `loaded`: returns prompt + completion
/// as text for each sample, and the run's figures. `kvserve generate` and the chapters' examples
/// are this and nothing more.
pub fn complete(
    engine: &mut dyn Engine,
    loaded: &LoadedModel,
    prompt: &str,
    max_new_tokens: usize,
    sampling: SamplingParams,
    n: usize,
) -> Result<(Vec<String>, RunOutput)> {
    let request = Request { sampling, n, ..Request::greedy(0, loaded.encode(prompt)?, max_new_tokens) };
    let run = engine.run(&loaded.model, &[request], &RunOptions::default())?;
    let texts = run.outputs.iter().map(|o| Ok(format!("{prompt}{}", loaded.decode(&o.tokens)?))).collect::<Result<_>>()?;
    Ok((texts, run))
}

/// Body of the chapters' `generate` examples: `-- "prompt" [max_new_tokens]` on the default model.
/// Returns the text and a one-line summary of the run for the example to print.
pub fn example_run(engine: &mut dyn Engine) -> std::result::Result<(String, String), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let prompt = args.first().map_or("ROMEO:\n", |s| s.as_str());
    let max_new = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let loaded = load_model(None, None)?;
    let (mut texts, run) = complete(engine, &loaded, prompt, max_new, SamplingParams::greedy(), 1)?;
    let text = texts.swap_remove(0);
    let s = &run.stats;
    let summary = format!(
        "[{}: {} tokens in {:.3} s = {:.1} tokens/s; KV reserved {} B, used {} B; model {}]",
        engine.name(),
        s.generated_tokens,
        s.wall_s,
        s.tokens_per_s,
        s.kv_bytes_reserved,
        s.kv_bytes_used,
        loaded.source
    );
    Ok((text, summary))
}
