#!/usr/bin/env bash
# The book cannot drift: every {{#include}} names an existing file and anchor, no Rust block longer
# than a few lines is pasted instead of included, every SUMMARY.md page and local link exists
# (tests/book.rs), no prose types a measured-looking number outside the allowlisted constants
# (tests/book.rs), no included listing or diagram line is wider than the book's code column
# (110 characters, book/theme/code-column.css; tests/book.rs lists the listings still to wrap),
# and `mdbook build book` succeeds. Installs mdbook if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

cargo test --release -p kvserve --test book
if ! command -v mdbook >/dev/null 2>&1; then
  cargo install mdbook --locked
fi
mdbook build book
echo "book check: ok"
