#!/usr/bin/env bash
# kvserve against candle on the CPU, on one random 76M-parameter Llama checkpoint (f32, 305 MB:
# hidden 768, 12 layers, 12/4 heads, intermediate 2048, vocab 512), greedy, same prompt ids.
#
#   scripts/peer_candle.sh [--rounds N] [--tokens N] [--markdown FILE] [--before KVSERVE_BINARY]
#
# Builds kvserve, two ch00 examples (save_random, read_bandwidth) and peers/candle (its own cargo
# project, so CI never builds candle; the first build takes minutes). Then, each round, back to
# back: the memory-read floor of this machine (all cores reading a 1 GiB buffer; weight bytes of
# one decode step ÷ that bandwidth), candle's decode rate, kvserve's (`generate --stage ch02`).
# Checks that both generate the same tokens and prints each rate, the ratio and each against the
# floor; --markdown also writes the table the book includes. --before adds, in each round, another
# kvserve binary (e.g. one built before a change) run the same way.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3
tokens=128
markdown=""
before=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --tokens) tokens="$2"; shift 2 ;;
    --markdown) markdown="$2"; shift 2 ;;
    --before) before="$2"; shift 2 ;;
    *) echo "usage: $0 [--rounds N] [--tokens N] [--markdown FILE] [--before KVSERVE_BINARY]" >&2; exit 2 ;;
  esac
done

target="${CARGO_TARGET_DIR:-target}"
echo "building kvserve, the ch00 examples and peers/candle (release) ..." >&2
cargo build --release --quiet --bin kvserve
cargo build --release --quiet -p ch00-model --example save_random --example read_bandwidth
cargo build --release --quiet --manifest-path peers/candle/Cargo.toml --target-dir "$target/peers"
kvserve="$target/release/kvserve"
examples="$target/release/examples"
candle="$target/peers/release/peer-candle"

model="$target/peer-76m"
[ -f "$model/model.safetensors" ] || "$examples/save_random" peer-76m "$model" >&2
prompt="1 17 42 99 3 200 7 11"

cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
machine="$cpu, $(nproc) cores, no GPU"
field() { grep "^$1:" | head -1 | awk '{print $2}'; }

rows=""
for round in $(seq 1 "$rounds"); do
  floor=$("$examples/read_bandwidth" peer-76m)
  gbs=$(echo "$floor" | field read_bandwidth_gb_s)
  floor_tps=$(echo "$floor" | field floor_tokens_per_s)

  theirs=$("$candle" "$model" "$tokens" $prompt)
  candle_tps=$(echo "$theirs" | field decode_tokens_per_s)
  candle_ids=$(echo "$theirs" | grep '^ids:' | cut -d' ' -f2-)

  # kvserve's decode rate (the tokens after the first over their time); older builds print only
  # the rate of the whole generation, prefill included.
  kvserve_run() {
    local out
    out=$("$1" generate --model "$model" --stage ch02 --max-new-tokens "$tokens" --print-ids "$prompt" 2>&1)
    rate=$(echo "$out" | grep -o 'decode [0-9.]* tokens/s' | awk '{print $2}' || true)
    [ -n "$rate" ] || rate=$(echo "$out" | grep -o '[0-9.]* tokens/s' | head -1 | awk '{print $1}' || true)
    ids=$(echo "$out" | tail -1)
  }
  before_cell=""
  if [ -n "$before" ]; then
    kvserve_run "$before"
    mark=""
    [ "$ids" = "$candle_ids" ] || mark=", other tokens"
    before_cell=$(awk -v b="$rate" -v f="$floor_tps" -v m="$mark" 'BEGIN { printf " %.1f (%.0f%%%s) |", b, 100 * b / f, m }')
  fi
  kvserve_run "$kvserve"
  kv_tps=$rate
  kv_ids=$ids

  if [ "$candle_ids" != "$kv_ids" ]; then
    echo "round $round: the greedy tokens differ" >&2
    echo "candle:  $candle_ids" >&2
    echo "kvserve: $kv_ids" >&2
    exit 1
  fi
  row=$(awk -v r="$round" -v g="$gbs" -v f="$floor_tps" -v c="$candle_tps" -v k="$kv_tps" -v b="$before_cell" 'BEGIN {
    printf "| %d | %.1f | %.1f | %.1f (%.0f%%) |%s %.1f (%.0f%%) | %.2f× |", r, g, f, c, 100 * c / f, b, k, 100 * k / f, k / c }')
  echo "$row"
  rows="$rows$row"$'\n'
done

if [ -n "$before" ]; then
  header="| round | memory read (GB/s) | floor (tokens/s) | candle (tokens/s, % of floor) | kvserve before (tokens/s, % of floor) | kvserve ch02 (tokens/s, % of floor) | kvserve / candle |
|---:|---:|---:|---:|---:|---:|---:|"
else
  header="| round | memory read (GB/s) | floor (tokens/s) | candle (tokens/s, % of floor) | kvserve ch02 (tokens/s, % of floor) | kvserve / candle |
|---:|---:|---:|---:|---:|---:|"
fi
table="$header
$rows"
echo
echo "$table"
echo "same greedy tokens in every round: yes ($tokens new tokens from prompt ids: $prompt)"
echo "machine: $machine"

if [ -n "$markdown" ]; then
  {
    echo "Decode rate at batch 1, \`peer-76m\` random checkpoint (f32, 305 MB), $tokens new tokens, greedy; both engines generated the same tokens in every round. Each round runs the floor, candle and kvserve back to back."
    echo
    echo "$table"
    echo "*Measured on $machine (shared with other jobs while it ran) with \`scripts/peer_candle.sh --rounds $rounds${before:+ --before <kvserve built before the CPU work>}\`; candle-transformers $(grep -A1 'name = "candle-transformers"' peers/candle/Cargo.lock | grep version | cut -d'"' -f2), f32, its Llama with KV cache. Floor: weight bytes of one step ÷ the read bandwidth of all cores measured in the same round.${before:+ The build before the CPU work printed only the rate of the whole generation, prefill included (one step in 128).}*"
  } > "$markdown"
  echo "wrote $markdown"
fi
