//! The book cannot drift from the code: every `{{#include}}` names a file (and anchor) that
//! exists, no Rust block longer than a few lines is pasted into the book instead of included,
//! every page in SUMMARY.md exists, every local link and image points at a file, and no page's
//! prose types a measured-looking number (ms, µs, tok/s, tokens/s, GB/s, TB/s, ×, %, GiB) that is
//! not an allowlisted constant: measured numbers live in generated tables, and no line the book
//! shows in a code block (an included listing, a diagram, a command) is wider than the column of
//! `book/theme/code-column.css` (`CODE_COLUMNS`). Run by
//! `cargo test --workspace` and by `scripts/check_book.sh` (which also runs `mdbook build book`).

use std::fs;
use std::path::{Path, PathBuf};

/// A pasted Rust block may have at most this many lines besides its `{{#include}}`s: a call or a
/// signature to discuss, never a function.
const MAX_PASTED_RUST_LINES: usize = 3;

/// `path` relative to the repository root, for messages.
fn rel(path: &Path) -> String {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(path).display().to_string()
}

fn book_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("book/src")
}

/// Every Markdown file under book/src, relative paths sorted.
fn pages() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
            let p = entry.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "md") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&book_src(), &mut out);
    out.sort();
    out
}

/// Splits a page into (line number, line, inside a fenced code block, the fence's info string).
fn lines_with_fences(text: &str) -> Vec<(usize, &str, bool, String)> {
    let mut out = Vec::new();
    let mut fence: Option<(String, String)> = None; // (marker, info)
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        let marker: String = t.chars().take_while(|&c| c == '`' || c == '~').collect();
        if marker.len() >= 3 && marker.chars().all(|c| c == marker.chars().next().unwrap_or('`')) {
            match &fence {
                Some((m, _)) if t.trim_end() == m.as_str() => {
                    fence = None;
                    continue;
                }
                None => {
                    fence = Some((marker.clone(), t[marker.len()..].trim().to_string()));
                    continue;
                }
                _ => {}
            }
        }
        let info = fence.as_ref().map(|(_, info)| info.clone()).unwrap_or_default();
        out.push((i + 1, line, fence.is_some(), info));
    }
    out
}

/// Every `{{#include …}}` (and `{{#rustdoc_include …}}`) of a line: the argument after the verb.
fn includes(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("{{#") {
        let escaped = rest[..i].ends_with('\\');
        let after = &rest[i + 3..];
        let Some(end) = after.find("}}") else { break };
        let body = after[..end].trim();
        if !escaped {
            for verb in ["include ", "rustdoc_include "] {
                if let Some(arg) = body.strip_prefix(verb) {
                    out.push(arg.trim().to_string());
                }
            }
        }
        rest = &after[end + 2..];
    }
    out
}

/// Whether `text` has a line marking `ANCHOR: name` (or `ANCHOR_END: name`), as mdBook reads it.
fn has_marker(text: &str, marker: &str, name: &str) -> bool {
    text.lines().any(|l| {
        l.split(marker).skip(1).any(|after| {
            let after = after.trim_start();
            after.starts_with(name)
                && !after[name.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_' || c == '-')
        })
    })
}

/// What is wrong with one include argument (`path`, `path:anchor` or `path:from:to`), seen from `page`.
fn check_include(page: &Path, arg: &str) -> Option<String> {
    let mut parts = arg.splitn(2, ':');
    let file = parts.next().unwrap_or_default();
    let selector = parts.next();
    let path = page.parent().unwrap_or(Path::new(".")).join(file);
    let Ok(text) = fs::read_to_string(&path) else {
        return Some(format!("includes {file}, which does not exist"));
    };
    let sel = selector?;
    let first = sel.split(':').next().unwrap_or_default();
    if sel.split(':').all(|n| n.is_empty() || n.chars().all(|c| c.is_ascii_digit())) {
        let last: usize = sel.split(':').filter_map(|n| n.parse().ok()).max().unwrap_or(0);
        let n_lines = text.lines().count();
        return (last > n_lines).then(|| format!("includes lines up to {last} of {file}, which has {n_lines}"));
    }
    if !has_marker(&text, "ANCHOR:", first) || !has_marker(&text, "ANCHOR_END:", first) {
        return Some(format!("includes anchor `{first}` of {file}, which has no `ANCHOR: {first}` … `ANCHOR_END: {first}`"));
    }
    None
}

#[test]
fn every_include_names_an_existing_file_and_anchor() {
    let mut problems = Vec::new();
    let mut count = 0;
    for page in pages() {
        let text = fs::read_to_string(&page).unwrap();
        for (n, line, _, _) in lines_with_fences(&text) {
            for arg in includes(line) {
                count += 1;
                if let Some(p) = check_include(&page, &arg) {
                    problems.push(format!("{}:{n}: {p}", rel(&page)));
                }
            }
        }
    }
    assert!(count > 0, "no includes found: is the parser broken?");
    assert!(problems.is_empty(), "{} broken includes:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn no_rust_code_is_pasted_into_the_book() {
    let mut problems = Vec::new();
    for page in pages() {
        let text = fs::read_to_string(&page).unwrap();
        let mut block: Option<(usize, usize)> = None; // (first line, pasted lines)
        let mut report = |block: Option<(usize, usize)>| {
            if let Some((start, pasted)) = block.filter(|b| b.1 > MAX_PASTED_RUST_LINES) {
                problems.push(format!(
                    "{}:{start}: a Rust block with {pasted} pasted lines (at most {MAX_PASTED_RUST_LINES}): \
                     put the code under `// ANCHOR: name` in the source and `{{{{#include path:name}}}}` it",
                    rel(&page)
                ));
            }
        };
        for (n, line, in_fence, info) in lines_with_fences(&text) {
            let rust = info.split([',', ' ']).next() == Some("rust");
            match (in_fence && rust, &mut block) {
                (true, Some((_, pasted))) => {
                    if !line.trim().is_empty() && includes(line).is_empty() {
                        *pasted += 1;
                    }
                }
                (true, None) => {
                    let pasted = usize::from(!line.trim().is_empty() && includes(line).is_empty());
                    block = Some((n, pasted));
                }
                (false, Some(_)) => report(block.take()),
                (false, None) => {}
            }
        }
        report(block);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Link targets `](target)` outside code blocks, without title or fragment.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line, in_fence, _) in lines_with_fences(text) {
        if in_fence {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end].split_whitespace().next().unwrap_or_default();
            out.push((n, target.split('#').next().unwrap_or_default().to_string()));
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_summary_page_exists() {
    let summary = book_src().join("SUMMARY.md");
    let text = fs::read_to_string(&summary).unwrap();
    let listed = links(&text);
    assert!(listed.len() > 5, "SUMMARY.md lists {} pages: is the parser broken?", listed.len());
    let missing: Vec<String> = listed
        .iter()
        .filter(|(_, t)| !t.is_empty() && !book_src().join(t).is_file())
        .map(|(n, t)| format!("SUMMARY.md:{n}: {t} does not exist"))
        .collect();
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn every_local_link_and_image_exists() {
    let mut problems = Vec::new();
    for page in pages() {
        let text = fs::read_to_string(&page).unwrap();
        for (n, target) in links(&text) {
            let external = ["http://", "https://", "mailto:"].iter().any(|s| target.starts_with(s));
            if target.is_empty() || external {
                continue;
            }
            if !page.parent().unwrap_or(Path::new(".")).join(&target).exists() {
                problems.push(format!("{}:{n}: links to {target}, which does not exist", rel(&page)));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checks_catch_what_they_should() {
    let page = book_src().join("README.md");
    assert!(check_include(&page, "../../src/lib.rs:stages").is_none());
    assert!(check_include(&page, "../../src/lib.rs:stage").is_some(), "an anchor prefix is not the anchor");
    assert!(check_include(&page, "../../src/lib.rs:no_such_anchor").is_some());
    assert!(check_include(&page, "../../src/no_such_file.rs").is_some());
    assert!(check_include(&page, "../../src/lib.rs:1:3").is_none());
    assert!(check_include(&page, "../../src/lib.rs:1:100000").is_some());
    assert_eq!(includes(r"a {{#include x.rs:y}} b \{{#include z.rs}}"), vec!["x.rs:y".to_string()]);
    let fenced = lines_with_fences("```rust,ignore\nfn a() {}\n```\ntext\n");
    assert_eq!(fenced.iter().filter(|l| l.2).count(), 1);
    assert_eq!(fenced[0].3, "rust,ignore");
    assert_eq!(links("see [a](b.md#c \"t\") and ![i](figures/x.svg)"), vec![(1, "b.md".into()), (1, "figures/x.svg".into())]);
}

/// Units that make a number in prose look measured. A measured number belongs in a generated table
/// (which names its machine and command), and the prose beside it refers to the table's columns.
const MEASURED_UNITS: [&str; 8] = ["tokens/s", "tok/s", "GB/s", "TB/s", "GiB", "ms", "µs", "%"];

/// The numbers with those units that prose may type (pages, number, reason), each a constant
/// rather than a measurement of this code, on the pages named: exact arithmetic, a datasheet or a paper's figure quoted as such, a test's tolerance,
/// a default of another system, an example target. A measured value never belongs here.
const TYPED_CONSTANTS: &[(&str, &str, &str)] = &[
    ("appendix-memory.md ch02-kv-cache.md", "1 GiB", "KV of one 2,048-token Llama-2-7B fp16 request: 512 KiB × 2,048, exact"),
    ("ch00-model.md", "2 GiB", "arithmetic of model sizes (chapter 0)"),
    ("ch04-continuous-batching.md", "4 GiB", "a 4,096-token slot at 1 MiB per token, exact"),
    ("appendix-memory.md", "16 GiB", "16 × 1 GiB requests, exact"),
    ("appendix-memory.md ch06-cuda.md", "64 GiB", "16 × 8,192 tokens × 512 KiB (and 64 × 2,048 × 512 KiB): exact"),
    ("appendix-memory.md ch05-paged-attention.md", "12.6 GiB", "6,738,415,616 params × 2 B, exact"),
    ("ch04-continuous-batching.md", "70 GiB", "vLLM's device-memory threshold in EngineArgs.get_batch_defaults"),
    ("appendix-memory.md", "79.6 GiB", "81,559 MiB, nvidia-smi's reading of an \"80 GB\" H100, converted exactly"),
    ("appendix-memory.md", "80 GiB", "80 × 2^30 bytes, the unit comparison of appendix A"),
    ("ch04-continuous-batching.md ch06-cuda.md", "3.35 TB/s", "H100 SXM datasheet bandwidth"),
    ("ch06-cuda.md", "4.8 TB/s", "H200 datasheet bandwidth"),
    ("appendix-cpu.md", "100 GB/s", "the hypothetical machine of appendix C's interview question"),
    ("appendix-cpu.md", "135 ms", "13.5 GB ÷ 100 GB/s, the arithmetic of that question"),
    ("ch07-server.md", "50 ms", "an example latency objective (chapter 7's goodput answer)"),
    ("ch07-server.md", "300 ms", "an example time to first token (chapter 7's perceived-latency answer)"),
    ("ch07-server.md", "500 ms", "an example latency objective (chapter 7's goodput answer)"),
    ("appendix-model.md ch05-paged-attention.md glossary.md", "1%", "vLLM V0's watermark default and this repository's, and a test's tolerance"),
    ("ch06-cuda.md", "2%", "a test's tolerance (chapter 6, f16)"),
    ("ch06-cuda.md", "8%", "a test's tolerance (chapter 6, bf16)"),
    ("ch05-paged-attention.md", "4%", "the PagedAttention paper's reported waste, quoted"),
    ("appendix-memory.md", "7%", "80 GiB ÷ 80 GB − 1, exact"),
    ("ch05-paged-attention.md", "20–38%", "the PagedAttention paper's measured utilisation of earlier systems, quoted"),
    ("ch02-kv-cache.md", "86.5%", "443 ÷ 512, the arithmetic of chapter 2's example"),
    ("appendix-memory.md", "94%", "1 − 500 ÷ 8,192, the arithmetic of appendix A's example"),
    ("ch06-cuda.md mock-interview.md", "100%", "the floor itself: a ratio to a bound, not a measurement"),
];

/// Every number with a measured-looking unit in one line of prose: `12.6 GiB`, `5%`, `2–4×`.
/// Inline code and HTML tags are skipped; `×` counts only attached to its number (`3.9×`), not as
/// a multiplication sign (`2 × 32`).
fn typed_numbers(line: &str) -> Vec<String> {
    let mut prose = String::new();
    let (mut code, mut tag) = (false, false);
    for c in line.chars() {
        match c {
            '`' => code = !code,
            '<' if !code => tag = true,
            '>' if tag => tag = false,
            _ if !code && !tag => prose.push(c),
            _ => {}
        }
    }
    let chars: Vec<char> = prose.chars().collect();
    let number_at = |mut j: usize| {
        let start = j;
        while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == ',' || chars[j] == '.') {
            j += 1;
        }
        while j > start && !chars[j - 1].is_ascii_digit() {
            j -= 1;
        }
        j
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i].is_ascii_digit() && (i == 0 || !(chars[i - 1].is_alphanumeric() || ".,_".contains(chars[i - 1])));
        if !starts {
            i += 1;
            continue;
        }
        let mut end = number_at(i);
        if end + 1 < chars.len() && (chars[end] == '–' || chars[end] == '-') && chars[end + 1].is_ascii_digit() {
            end = number_at(end + 1);
        }
        let number: String = chars[i..end].iter().collect();
        let rest: String = chars[end..].iter().collect();
        if rest.starts_with('×') {
            out.push(format!("{number}×"));
        } else {
            let spaced = rest.strip_prefix([' ', '\u{a0}', '\u{202f}']).unwrap_or(&rest);
            for unit in MEASURED_UNITS {
                let Some(after) = spaced.strip_prefix(unit) else { continue };
                if after.starts_with(|c: char| c.is_alphanumeric() || c == '/') {
                    continue;
                }
                out.push(if unit == "%" { format!("{number}%") } else { format!("{number} {unit}") });
                break;
            }
        }
        i = end.max(i + 1);
    }
    out
}

#[test]
fn prose_types_no_measured_numbers() {
    let mut problems = Vec::new();
    for page in pages().into_iter().filter(|p| !p.components().any(|c| c.as_os_str() == "generated")) {
        let text = fs::read_to_string(&page).unwrap();
        for (n, line, in_fence, _) in lines_with_fences(&text) {
            if in_fence || !includes(line).is_empty() {
                continue;
            }
            for number in typed_numbers(line) {
                let name = page.file_name().unwrap_or_default().to_string_lossy().to_string();
                let allowed = TYPED_CONSTANTS
                    .iter()
                    .chain(TYPED_RATIOS)
                    .any(|(pages, c, _)| *c == number && pages.split(' ').any(|p| p == name));
                if !allowed {
                    problems.push(format!("{}:{n}: `{number}` typed in prose", rel(&page)));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} measured-looking numbers typed in prose: put them in a generated table and refer to its columns, \
         or, for a true constant, add it to TYPED_CONSTANTS / TYPED_RATIOS with the reason:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Ratios (`N×`) that prose may type (pages, ratio, reason), each a constant.
const TYPED_RATIOS: &[(&str, &str, &str)] = &[
    ("README.md ch05-paged-attention.md cheatsheet.md", "2–4×", "the PagedAttention paper's throughput claim, quoted as the claim the book tests"),
    ("README.md ch04-continuous-batching.md cheatsheet.md", "2–5×", "the continuous-batching claim the book tests, quoted"),
    ("ch04-continuous-batching.md", "23×", "the continuous-batching figure people quote (Anyscale's blog), quoted in a question"),
    ("appendix-memory.md ch00-model.md ch06-cuda.md", "4×", "the grouped-query factor of Llama-3-8B: 32 query heads ÷ 8 KV heads, exact"),
    ("ch01-naive.md", "16.5×", "chapter 1's token passes, (n + 1) ÷ 2 for n = 32, exact"),
    ("ch01-naive.md", "64.5×", "chapter 1's token passes, (n + 1) ÷ 2 for n = 128, exact"),
    ("ch01-naive.md", "256.5×", "chapter 1's token passes, (n + 1) ÷ 2 for n = 512, exact"),
];

#[test]
fn the_typed_number_check_catches_what_it_should() {
    assert_eq!(typed_numbers("ch04 51.1 ms vs 37.3 ms, 8% at B=1"), ["51.1 ms", "37.3 ms", "8%"]);
    assert_eq!(typed_numbers("1.03× → 1.25×; 2 × 32 × 128; 2–4× more"), ["1.03×", "1.25×", "2–4×"]);
    assert_eq!(typed_numbers("4.2 TB/s and 6258 tokens/s, 12.6 GiB."), ["4.2 TB/s", "6258 tokens/s", "12.6 GiB"]);
    assert!(typed_numbers("`3.2 ms` in code, <span title=\"5%\">, 16-token blocks, mst, llama3-8b 4096").is_empty());
    // Sentences issue 20 found contradicting their tables, as they were typed before the fix.
    assert_eq!(typed_numbers("that is 13.5 GB ÷ 4.2 TB/s ≈ 3.2 ms on an H200"), ["4.2 TB/s", "3.2 ms"]);
    assert_eq!(typed_numbers("the two engines take 51.1 vs 37.3 ms"), ["37.3 ms"]);
    assert_eq!(typed_numbers("block size differences (1.03× → 1.25×) are noise"), ["1.03×", "1.25×"]);
    assert_eq!(typed_numbers("its table: 8% at B=1"), ["8%"]);
    assert!(typed_numbers("1,300 prompt tokens; 6.03 → 28.91 ms").contains(&"28.91 ms".to_string()));
}

/// The widest line, in characters, that a code block of the book shows without cutting it: the
/// column of `book/theme/code-column.css` (900px, code at 0.8em, about 115 characters) with some
/// margin, at 1280px with the sidebar open. mdBook's default column shows about 86.
const CODE_COLUMNS: usize = 110;

/// Listings still wider than [`CODE_COLUMNS`] (source file, anchor, why), each to be wrapped by
/// whoever owns it; a listing that fits again must leave this list, so it only shrinks.
const WIDE_LISTINGS: &[(&str, &str, &str)] = &[
    ("chapters/ch06-cuda/src/roofline.rs", "step_s", "chapter 6's crate, edited concurrently by its own helpers"),
    ("chapters/ch07-server/src/loadgen/chat.rs", "chat", "chapter 7's crate, edited concurrently for the server"),
    ("chapters/ch08-tensor-parallel/src/shard.rs", "shard", "chapter 8's crate, written concurrently"),
    ("chapters/ch08-tensor-parallel/src/rank.rs", "step", "chapter 8's crate, written concurrently"),
    ("chapters/ch00-model/src/cpu/kernels.rs", "tile", "the CPU kernels (appendix C), edited concurrently"),
    ("chapters/ch05-paged-attention/src/backend.rs", "attend", "chapter 5's crate, edited concurrently for chunked prefill"),
    ("chapters/ch05-paged-attention/src/kv_pool.rs", "copy_block", "chapter 5's crate, edited concurrently for chunked prefill"),
    ("chapters/ch05-paged-attention/src/kv_pool.rs", "pool", "chapter 5's crate, edited concurrently for chunked prefill"),
    ("chapters/ch05-paged-attention/src/runner.rs", "bounded", "chapter 5's crate, edited concurrently for chunked prefill"),
    ("chapters/ch05-paged-attention/src/runner.rs", "step", "chapter 5's crate, edited concurrently for chunked prefill"),
    ("chapters/ch05-paged-attention/src/scheduler/chunks.rs", "shares", "chapter 5's crate, edited concurrently for chunked prefill"),
    ("chapters/ch05-paged-attention/src/scheduler/mod.rs", "abort", "chapter 5's crate, edited concurrently for chunked prefill"),
    ("chapters/ch05-paged-attention/src/scheduler/mod.rs", "schedule", "chapter 5's crate, edited concurrently for chunked prefill"),
    ("chapters/ch06-cuda/examples/gpu_bench.rs", "prefill", "chapter 6's crate, edited concurrently by its own helpers"),
    ("chapters/ch06-cuda/examples/gpu_bench.rs", "scenario", "chapter 6's crate, edited concurrently by its own helpers"),
    ("chapters/ch06-cuda/examples/gpu_bench.rs", "throughput", "chapter 6's crate, edited concurrently by its own helpers"),
    ("chapters/ch06-cuda/src/bench.rs", "copy_bandwidth", "chapter 6's crate, edited concurrently by its own helpers"),
    ("chapters/ch06-cuda/src/bench.rs", "decode_bench", "chapter 6's crate, edited concurrently by its own helpers"),
    ("chapters/ch06-cuda/src/device.rs", "compile", "chapter 6's crate, edited concurrently by its own helpers"),
    ("chapters/ch06-cuda/src/engine.rs", "profile", "chapter 6's crate, edited concurrently by its own helpers"),
    ("chapters/ch06-cuda/src/engine.rs", "run_typed", "chapter 6's crate, edited concurrently by its own helpers"),
    ("chapters/ch06-cuda/src/kernels.rs", "linear", "chapter 6's crate, edited concurrently by its own helpers"),
    ("chapters/ch06-cuda/src/kernels.rs", "linear_dispatch", "chapter 6's crate, edited concurrently by its own helpers"),
    ("chapters/ch06-cuda/src/kernels/paged_attention.cu", "kernel", "chapter 6's crate, edited concurrently by its own helpers"),
    ("chapters/ch06-cuda/src/kernels/paged_attention.cu", "reduce", "chapter 6's crate, edited concurrently by its own helpers"),
    ("chapters/ch06-cuda/src/kernels/prefill_attention.cu", "simple", "chapter 6's crate, edited concurrently by its own helpers"),
    ("chapters/ch06-cuda/src/kernels/prefill_attention.cu", "tc", "chapter 6's crate, edited concurrently by its own helpers"),
    ("chapters/ch06-cuda/src/model.rs", "forward", "chapter 6's crate, edited concurrently by its own helpers"),
    ("chapters/ch06-cuda/src/prefill.rs", "reference", "chapter 6's crate, edited concurrently by its own helpers"),
    ("chapters/ch06-cuda/src/runner.rs", "copy_blocks", "chapter 6's crate, edited concurrently by its own helpers"),
    ("chapters/ch06-cuda/src/runner.rs", "decode_graph", "chapter 6's crate, edited concurrently by its own helpers"),
    ("chapters/ch06-cuda/src/runner.rs", "step", "chapter 6's crate, edited concurrently by its own helpers"),
    ("chapters/ch06-cuda/tests/engine.rs", "half_tolerance", "chapter 6's crate, edited concurrently by its own helpers"),
    ("chapters/ch07-server/src/engine.rs", "liveness", "chapter 7's crate, edited concurrently for the server"),
    ("chapters/ch07-server/src/error.rs", "api_error", "chapter 7's crate, edited concurrently for the server"),
    ("chapters/ch07-server/src/metrics.rs", "render", "chapter 7's crate, edited concurrently for the server"),
    ("chapters/ch07-server/src/routes.rs", "generate", "chapter 7's crate, edited concurrently for the server"),
    ("chapters/ch07-server/src/routes.rs", "health", "chapter 7's crate, edited concurrently for the server"),
    ("chapters/ch07-server/src/routes.rs", "read_body", "chapter 7's crate, edited concurrently for the server"),
    ("chapters/ch07-server/src/routes.rs", "validate", "chapter 7's crate, edited concurrently for the server"),
    ("chapters/ch07-server/src/text.rs", "assembler", "chapter 7's crate, edited concurrently for the server"),
    ("src/main.rs", "stream_one", "the CLI, edited concurrently"),
    ("src/report.rs", "step_floor", "the CLI, edited concurrently"),
];

/// Generated pages whose fenced lines are still wider (page, why): their generators live elsewhere.
const WIDE_GENERATED: &[(&str, &str)] = &[
    ("generated/gpu/ch06-tests.md", "written by scripts/gpu_tables.py from GPU records: narrow its text and rerun it"),
];

/// The lines an include argument shows, as mdBook picks them: `file`, `file:anchor` (the lines
/// between the anchor's markers, without any marker line), `file:from:to` (1-based, inclusive).
fn included_lines(page: &Path, arg: &str) -> Vec<(usize, String)> {
    let mut parts = arg.splitn(2, ':');
    let file = parts.next().unwrap_or_default();
    let Ok(text) = fs::read_to_string(page.parent().unwrap_or(Path::new(".")).join(file)) else { return Vec::new() };
    let lines: Vec<(usize, String)> = text.lines().enumerate().map(|(i, l)| (i + 1, l.to_string())).collect();
    let Some(sel) = parts.next() else { return lines };
    let nums: Vec<&str> = sel.split(':').collect();
    if nums.iter().all(|n| n.is_empty() || n.chars().all(|c| c.is_ascii_digit())) {
        let from: usize = nums[0].parse().unwrap_or(1);
        let to: usize = match nums.get(1) {
            None => from,
            Some(n) => n.parse().unwrap_or(lines.len()),
        };
        return lines.into_iter().filter(|(i, _)| (from..=to).contains(i)).collect();
    }
    let name = nums[0];
    let (mut on, mut out) = (false, Vec::new());
    for (i, l) in lines {
        if l.contains("ANCHOR:") || l.contains("ANCHOR_END:") {
            if has_marker(&l, "ANCHOR:", name) {
                on = true;
            } else if has_marker(&l, "ANCHOR_END:", name) {
                on = false;
            }
            continue;
        }
        if on {
            out.push((i, l));
        }
    }
    out
}

/// Characters of a line as a browser lays it out in a code block (tabs to 8).
fn columns(line: &str) -> usize {
    line.chars().map(|c| if c == '\t' { 8 } else { 1 }).sum()
}

#[test]
fn no_code_line_is_wider_than_the_column() {
    let (mut problems, mut wide_listings, mut wide_pages) = (Vec::new(), Vec::new(), Vec::new());
    let mut checked = 0;
    for page in pages() {
        let name = rel(&page);
        let text = fs::read_to_string(&page).unwrap();
        for (n, line, in_fence, _) in lines_with_fences(&text) {
            let args = includes(line);
            for arg in &args {
                // A whole generated page outside a fence is Markdown (tables wrap); its own fences
                // are checked as a page of their own.
                if !in_fence && !arg.contains(':') {
                    continue;
                }
                let file = arg.split(':').next().unwrap_or_default();
                let source = rel(&page.parent().unwrap().join(file).canonicalize().unwrap_or_default());
                let anchor = arg.splitn(2, ':').nth(1).unwrap_or_default().to_string();
                let listed = WIDE_LISTINGS.iter().any(|(f, a, _)| *f == source && *a == anchor);
                for (i, l) in included_lines(&page, arg) {
                    checked += 1;
                    if columns(&l) > CODE_COLUMNS {
                        if listed {
                            wide_listings.push((source.clone(), anchor.clone()));
                        } else {
                            problems.push(format!("{name}:{n}: {source}:{i} (included as `{arg}`) is {} columns", columns(&l)));
                        }
                    }
                }
            }
            if in_fence && args.is_empty() {
                checked += 1;
                if columns(line) > CODE_COLUMNS {
                    if WIDE_GENERATED.iter().any(|(p, _)| name.ends_with(p)) {
                        wide_pages.push(name.clone());
                    } else {
                        problems.push(format!("{name}:{n}: a code or diagram line of {} columns", columns(line)));
                    }
                }
            }
        }
    }
    assert!(checked > 1000, "only {checked} lines checked: is the parser broken?");
    for (f, a, _) in WIDE_LISTINGS {
        if !wide_listings.iter().any(|(s, x)| s == f && x == a) {
            problems.push(format!("{f}:{a} is listed in WIDE_LISTINGS but fits (or is no longer included): remove it"));
        }
    }
    for (p, _) in WIDE_GENERATED {
        if !wide_pages.iter().any(|n| n.ends_with(p)) {
            problems.push(format!("{p} is listed in WIDE_GENERATED but fits: remove it"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} lines wider than the book's code column ({CODE_COLUMNS} characters, book/theme/code-column.css): \
         wrap them, narrow the anchor, or draw the diagram narrower:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn included_lines_are_the_ones_mdbook_shows() {
    let page = book_src().join("README.md");
    let stages = included_lines(&page, "../../src/lib.rs:stages");
    assert!(!stages.is_empty() && stages.iter().all(|(_, l)| !l.contains("ANCHOR")));
    assert_eq!(included_lines(&page, "../../src/lib.rs:2:3").iter().map(|(i, _)| *i).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(included_lines(&page, "../../src/lib.rs:2").len(), 1);
    assert_eq!(columns("a\tb"), 10);
}
