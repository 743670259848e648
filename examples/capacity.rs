//! The chapter-5 capacity experiment on its own (what `kvserve bench` prints in its capacity
//! section): `cargo run --release --example capacity -- [--no-real] [--json] [--figures DIR]
//! [--markdown FILE]`.
//!
//! `--refresh-accounting DIR` recomputes only the deterministic parts (the accounting runs of the
//! capacity experiment, its block sizes and prefix sharing, and of parallel sampling) into
//! `kvserve bench`'s files in DIR (`bench.json`, `capacity-ch05.md`, `capacity-claims.md`,
//! `parallel-sampling.md`, and with `--figures` the accounting figure), keeping the CPU runs those
//! files measured: for when the accounting spec changes and nothing measured does.

use bookgen::capacity::{capacity_report, to_markdown, write_capacity_figures, CapacityOptions};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(dir) = args.iter().position(|a| a == "--refresh-accounting").and_then(|i| args.get(i + 1)) {
        let figures = args.iter().position(|a| a == "--figures").and_then(|i| args.get(i + 1)).map(PathBuf::from);
        return refresh_accounting(&PathBuf::from(dir), figures.as_deref());
    }
    let mut opts = CapacityOptions::full();
    if args.iter().any(|a| a == "--no-real") {
        opts.real = None;
    }
    let report = capacity_report(&opts)?;
    if args.iter().any(|a| a == "--json") {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", to_markdown(&report));
    }
    if let Some(path) = args.iter().position(|a| a == "--markdown").and_then(|i| args.get(i + 1)) {
        let machine = std::env::var("KVSERVE_MACHINE").unwrap_or_else(|_| "this machine".into());
        let text = format!(
            "{}\n_Measured on {machine} with `cargo run --release --example capacity -- --markdown {path}`._\n",
            bookgen::capacity::to_markdown(&report)
        );
        std::fs::write(path, text)?;
    }
    if let Some(i) = args.iter().position(|a| a == "--figures") {
        let dir = args.get(i + 1).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("book/src/figures"));
        for p in write_capacity_figures(&report, &dir)? {
            eprintln!("wrote {}", p.display());
        }
    }
    Ok(())
}

/// Replaces the accounting sections of `kvserve bench`'s capacity files in `dir`, keeping their
/// measured CPU run and their footer (the command and machine that measured it), and saying
/// below it which command recomputed the rest.
fn refresh_accounting(dir: &std::path::Path, figures: Option<&std::path::Path>) -> anyhow::Result<()> {
    use anyhow::Context;
    let json_path = dir.join("bench.json");
    let text = std::fs::read_to_string(&json_path).context("reading bench.json")?;
    let bench: serde_json::Value = serde_json::from_str(&text)?;
    let real: Option<bookgen::capacity::CapacityRun> = serde_json::from_value(bench["capacity"]["real"].clone())?;
    let fresh = capacity_report(&CapacityOptions { real: None, ..CapacityOptions::full() })?;
    if let Some(dir) = figures {
        for p in write_capacity_figures(&fresh, dir)? {
            eprintln!("wrote {}", p.display());
        }
    }
    let report = bookgen::capacity::CapacityReport { real, ..fresh };
    let sampling_real: Option<bookgen::sampling::SamplingRun> = serde_json::from_value(bench["parallel_sampling"]["real"].clone())?;
    let sampling = bookgen::sampling::SamplingReport { real: sampling_real, ..bookgen::sampling::sampling_report(None, None)? };
    let text = splice_top_level(&text, "capacity", &serde_json::to_string_pretty(&report)?)?;
    std::fs::write(&json_path, splice_top_level(&text, "parallel_sampling", &serde_json::to_string_pretty(&sampling)?)?)?;
    let note = format!(
        "\n*Accounting sections recomputed (deterministic, the same on every machine) by `cargo run --release --example capacity -- --refresh-accounting {}`.*\n",
        dir.display()
    );
    for (name, body) in [
        ("capacity-ch05.md", to_markdown(&report)),
        ("capacity-claims.md", bookgen::capacity::claims_markdown(&report)),
        ("parallel-sampling.md", bookgen::sampling::to_markdown(&sampling)),
    ] {
        let path = dir.join(name);
        let old = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let footer = old.lines().rev().find(|l| l.starts_with("*Measured on")).context("no measured footer")?;
        std::fs::write(&path, format!("{body}\n{footer}\n{note}"))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// `json` (pretty-printed by serde_json, two-space indent) with its top-level `key`'s value
/// replaced by `value`, every other line as it was: the rest of the file keeps its order.
fn splice_top_level(json: &str, key: &str, value: &str) -> anyhow::Result<String> {
    let lines: Vec<&str> = json.lines().collect();
    let open = format!("  \"{key}\": ");
    let start = lines.iter().position(|l| l.starts_with(&open)).ok_or_else(|| anyhow::anyhow!("no top-level {key}"))?;
    let end = (start..lines.len())
        .find(|&i| i > start && (lines[i] == "  }" || lines[i] == "  },"))
        .ok_or_else(|| anyhow::anyhow!("{key} does not close"))?;
    let comma = if lines[end].ends_with(',') { "," } else { "" };
    let indented: Vec<String> = value.lines().enumerate().map(|(i, l)| if i == 0 { l.to_string() } else { format!("  {l}") }).collect();
    let mut out: Vec<String> = lines[..start].iter().map(|l| l.to_string()).collect();
    out.push(format!("{open}{}{comma}", indented.join("\n")));
    out.extend(lines[end + 1..].iter().map(|l| l.to_string()));
    Ok(out.join("\n") + if json.ends_with('\n') { "\n" } else { "" })
}
