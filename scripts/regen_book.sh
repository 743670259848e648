#!/usr/bin/env bash
# Regenerates every measured table and figure of the book, on this machine, in one go:
#
#   scripts/regen_book.sh
#
# About twelve minutes on a 2-core machine. Every file it writes names the machine (CPU, cores,
# load average) and the command that made it; run it when the machine is otherwise quiet.
# Not regenerated here: the GPU records (book/src/generated/gpu/, hf-parity.md, model-card.md),
# which come from scripts/gpu_model_checks.sh on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
G=book/src/generated
F=book/src/figures
T=${CARGO_TARGET_DIR:-target}
quiet() { nice -n 10 "$@"; }

quiet cargo build --release -p kvserve -p ch05-paged-attention --bins --examples
# Every table of chapters 1-5 that kvserve bench measures, its JSON, the capacity figures.
quiet "$T/release/kvserve" bench --json "$G/bench.json" --markdown "$G" --figures "$F"
# The Gantt charts of chapters 3 and 4.
quiet "$T/release/kvserve" trace --out "$F"
# Block tables of chapter 5, from the real scheduler.
quiet "$T/release/examples/block_tables" > "$G/block-tables.txt"
quiet "$T/release/examples/parallel_sampling" > "$G/parallel-sampling.txt"
# Chapter 5's chunked prefill on a mixed workload, and the token-budget sweep.
quiet "$T/release/kvserve" bench-chunked --budgets 64,128,256,512,1024 --rounds 3 --markdown "$G/chunked-prefill.md" --json "$G/chunked-prefill.json" --figure "$F/chunked-prefill-budget.svg"
# Chapter 5's prefix cache across the turns of multi-turn chats, on and off.
quiet "$T/release/kvserve" bench-chat --markdown "$G/chat-prefix.md" --json "$G/chat-prefix.json"
# Appendix A, and the interview pages' computed tables (they use chapter 5's accounting run and the card
# model, card-7b.md), and appendices E and F's formula tables (spec-*.md, attention-variants.md,
# moe-experts.md). When only the accounting spec or the card model changed, nothing measured:
#   target/release/examples/capacity --refresh-accounting book/src/generated --figures book/src/figures
{ echo '```text'; echo '$ kvserve memory'; "$T/release/kvserve" memory; echo '```'; } > "$G/memory-7b.md"
# Appendix D: quantized weights and KV cache (computed, the same on every machine).
"$T/release/kvserve" memory --kv-dtype fp8 --markdown "$G/memory-7b-fp8.md" > /dev/null
"$T/release/kvserve" memory --precisions --markdown "$G/quant-7b.md" > /dev/null
"$T/release/kvserve" memory --config llama3-70b --gpu-mib 143771 --seq-len 4096 --batch 32 --precisions --markdown "$G/quant-70b-h200.md" > /dev/null
quiet "$T/release/examples/interview" --markdown "$G"
# Chapter 7: ch03/ch04/ch05 served over HTTP at rising load (table and figure).
quiet "$T/release/kvserve" serve-bench --rates 1,4,8,16 --num-requests 24 --output-mean 32 --output-max 128 --out "$G" --figures "$F"
# Chapter 7: the multi-turn chats over HTTP (loadgen --chat), prefix cache off and on.
quiet "$T/release/kvserve" serve-chat --markdown "$G/serve-chat.md" --json "$G/serve-chat.json"
# Chapter 8: what tensor parallelism holds and sends per rank (arithmetic from the configs).
cargo run --release -q -p ch08-tensor-parallel --example tp_cost > "$G/tp-cost.md"
# The criterion benches, and their tables.
quiet cargo bench --bench stages
python3 scripts/criterion_table.py stages > "$G/bench-lengths.md"
quiet cargo bench --bench paged -- --warm-up-time 1 --measurement-time 4
python3 scripts/criterion_table.py paged > "$G/bench-paged.md"
quiet cargo bench --bench batching
python3 scripts/criterion_table.py batching > "$G/bench-batching.md"
echo "regenerated $G and $F"
