//! The book cannot drift from the code: every `{{#include}}` names a file (and anchor) that
//! exists, no Rust block longer than a few lines is pasted into the book instead of included,
//! every page in SUMMARY.md exists, and every local link and image points at a file. Run by
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
