//! The chapter-5 capacity experiment on its own (what `kvserve bench` prints in its capacity
//! section): `cargo run --release --example capacity -- [--no-real] [--json] [--figures DIR]
//! [--markdown FILE]`.

use bookgen::capacity::{capacity_report, to_markdown, write_capacity_figures, CapacityOptions};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
