//! `kvserve serve-chat`: multi-turn chats over HTTP. A stage is served on a loopback port with its
//! prefix cache off, then on, and `loadgen --chat` replays the same conversations against each;
//! the table compares TTFT by turn and checks that the answers are the same.

use crate::serve_cmd::{on_loopback, runtime, ChatArgs, EngineLimits};
use anyhow::{ensure, Result};
use bookgen::chat::{turn_table, TurnTimes};
use ch07_server::loadgen::chat::{self, ChatLoadConfig, ChatLoadReport};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ServeChatArgs {
    /// A named random-weight config (the bench model's context is 1024 tokens).
    #[arg(long, default_value = "bench")]
    config: String,
    /// The stage to serve (ch05 or ch06: the stages with a prefix cache).
    #[arg(long, default_value = "ch05")]
    stage: String,
    #[command(flatten)]
    limits: EngineLimits,
    #[command(flatten)]
    chat: ChatArgs,
    /// Also write the table as Markdown here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Also write both reports as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(args: &ServeChatArgs) -> Result<()> {
    let rt = runtime()?;
    let mut reports = Vec::new();
    for caching in [false, true] {
        let mut limits = args.limits.clone();
        limits.prefill.no_prefix_caching = !caching;
        let spec = args.chat.spec();
        reports.push(on_loopback(&rt, &args.stage, &limits, &args.config, async |base_url, vocab_size| {
            chat::run(&ChatLoadConfig { base_url, model: None, spec, vocab_size }).await
        })?);
    }
    let md = markdown(&reports[0], &reports[1], &crate::machine::machine(), &crate::machine::command_line())?;
    println!("{md}");
    if let Some(p) = &args.markdown {
        std::fs::write(p, &md)?;
    }
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&serde_json::json!({ "cache_off": reports[0], "cache_on": reports[1] }))?)?;
    }
    Ok(())
}

/// A row per turn: the hit rate with the cache on, TTFT p50 off and on.
fn markdown(off: &ChatLoadReport, on: &ChatLoadReport, machine: &str, command: &str) -> Result<String> {
    ensure!(off.turns.len() == on.turns.len(), "the two runs have {} and {} turns", off.turns.len(), on.turns.len());
    let mut s = turn_table(off.turns.iter().zip(&on.turns).map(|(a, b)| TurnTimes {
        turn: b.turn,
        mean_prompt_tokens: b.mean_prompt_tokens,
        hit_rate: b.hit_rate,
        off_ms: a.ttft_ms.p50,
        on_ms: b.ttft_ms.p50,
    }));
    let sp = &on.spec;
    s += &format!(
        "\n*{} conversations × {} turns over HTTP (`kvserve loadgen --chat`): a first prompt of {} tokens, then each turn the whole history (token ids) plus a {}-token message, sent when every answer of the turn before is complete; {}-token answers, greedy. The server on a loopback port, prefix cache off, then on; the same answers both ways: **{}**. `{command}` on {machine}.*\n",
        sp.conversations,
        sp.turns,
        sp.first_prompt,
        sp.message,
        sp.answer,
        if off.answers_digest == on.answers_digest { "yes" } else { "NO" }
    );
    Ok(s)
}
