//! Writes the numbers of the book's interview pages (cheat sheet, mock interview), computed by
//! `bookgen::interview`:
//!
//! `cargo run --release --example interview -- [--markdown DIR] [--users N] [--gpu-mib MIB]
//! [--bandwidth-tbs TB/s] [--tflops TFLOP/s] [--tpot-ms MS] [--tight-tpot-ms MS]
//! [--ttft-ms MS] [--fp8-tflops TFLOP/s] [--max-len TOKENS]`
//!
//! With `--markdown DIR` it writes `cheatsheet-*.md` and `mock-*.md` there (the book uses
//! `book/src/generated`); otherwise it prints them.

use anyhow::{bail, Context, Result};
use bookgen::interview::{files, Inputs};
use std::path::PathBuf;

fn parse_args() -> Result<(Inputs, Option<PathBuf>)> {
    let mut inputs = Inputs::default();
    let mut dir = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--markdown" => dir = Some(PathBuf::from(value()?)),
            "--users" => inputs.users = value()?.parse()?,
            "--gpu-mib" => inputs.gpu_mib = value()?.parse()?,
            "--bandwidth-tbs" => inputs.bandwidth_tbs = value()?.parse()?,
            "--tflops" => inputs.tflops = value()?.parse()?,
            "--tpot-ms" => inputs.tpot_ms = value()?.parse()?,
            "--tight-tpot-ms" => inputs.tight_tpot_ms = value()?.parse()?,
            "--ttft-ms" => inputs.ttft_ms = value()?.parse()?,
            "--fp8-tflops" => inputs.fp8_tflops = value()?.parse()?,
            "--max-len" => inputs.max_len = value()?.parse()?,
            other => bail!("unknown argument {other:?} (see the comment at the top of examples/interview.rs)"),
        }
    }
    Ok((inputs, dir))
}

fn main() -> Result<()> {
    let (inputs, dir) = parse_args()?;
    for (name, text) in files(&inputs)? {
        match &dir {
            Some(dir) => {
                let path = dir.join(name);
                std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
            None => println!("<!-- {name} -->\n{text}"),
        }
    }
    Ok(())
}
