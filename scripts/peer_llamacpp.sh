#!/usr/bin/env bash
# kvserve against llama.cpp on the CPU, on one random 76M-parameter Llama checkpoint (f32, 305 MB:
# hidden 768, 12 layers, 12/4 heads, intermediate 2048, vocab 512), the peer of peer_candle.sh that
# a reader without a GPU actually runs.
#
#   scripts/peer_llamacpp.sh [--rounds N] [--tokens N] [--prompt N] [--dtype f32|f16] [--markdown FILE]
#
# --dtype f16: the same random weights written as an f16 checkpoint (153 MB) and an f16 GGUF
# (MOSTLY_F16); kvserve keeps them f16 in memory (widened in registers), and each round also runs
# kvserve with `--dtype f32` on the same checkpoint (the weights widened at load, twice the bytes)
# for the f16 ÷ f32 ratio. The floor is then the f16 weight bytes.
#
# 1. Builds kvserve and three ch00/kvserve examples (save_random, read_bandwidth, prefill_rate).
# 2. Builds llama.cpp's CPU tools from the llama.cpp tree vendored in the llama-cpp-python source
#    package on PyPI (pip download; version $LLAMA_CPP_PYTHON, default below) with cmake, under a
#    temporary directory (or $LLAMACPP_DIR, kept, to reuse a build): llama-bench and libllama,
#    plus scripts/peer_llamacpp_greedy.cpp (greedy generation from token ids). pip installs cmake,
#    numpy and gguf when missing. Nothing of llama.cpp lands in the repository.
# 3. Writes the checkpoint as a GGUF (scripts/peer_llamacpp_gguf.py: gguf-py's writer, q/k rows
#    permuted for llama.cpp's RoPE) and checks that both engines generate the same greedy tokens.
# 4. Each round, back to back: the memory-read floor (all cores reading a 1 GiB buffer; weight
#    bytes of one decode step ÷ that bandwidth), then llama.cpp and kvserve alternately: decode
#    with 1 thread, decode with 2 threads (llama-bench tg$tokens; kvserve `generate --stage ch02`,
#    the tokens after the first over their time), prompt processing of $prompt tokens with 2
#    threads (llama-bench pp$prompt; kvserve's examples/prefill_rate, one step into ch02's cache).
#    Prints every round, then the median and range of each ratio.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=5
tokens=128
prompt_len=512
markdown=""
dtype=f32
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --tokens) tokens="$2"; shift 2 ;;
    --prompt) prompt_len="$2"; shift 2 ;;
    --markdown) markdown="$2"; shift 2 ;;
    --dtype) dtype="$2"; shift 2 ;;
    *) echo "usage: $0 [--rounds N] [--tokens N] [--prompt N] [--dtype f32|f16] [--markdown FILE]" >&2; exit 2 ;;
  esac
done
case "$dtype" in f32|f16) ;; *) echo "--dtype: f32 or f16" >&2; exit 2 ;; esac
version="${LLAMA_CPP_PYTHON:-0.3.36}"

target="${CARGO_TARGET_DIR:-target}"
echo "building kvserve and the examples (release) ..." >&2
cargo build --release --quiet --bin kvserve --example prefill_rate
cargo build --release --quiet -p ch00-model --example save_random --example read_bandwidth
kvserve="$target/release/kvserve"
examples="$target/release/examples"

# --- llama.cpp, from PyPI's llama-cpp-python source package ---
python3 -c 'import numpy, gguf' 2>/dev/null || pip install --quiet numpy gguf >&2
command -v cmake >/dev/null || pip install --quiet cmake >&2
work="${LLAMACPP_DIR:-}"
if [ -z "$work" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
src="$work/llama_cpp_python-$version/vendor/llama.cpp"
if [ ! -x "$work/build/bin/llama-bench" ]; then
  echo "fetching llama-cpp-python $version (source) and building llama.cpp's CPU tools in $work (minutes) ..." >&2
  # --no-build-isolation: pip reads the package's metadata with the build backend installed here,
  # instead of building cmake from source first.
  python3 -c 'import scikit_build_core' 2>/dev/null || pip install --quiet scikit-build-core >&2
  (cd "$work" && pip download --quiet --no-binary :all: --no-deps --no-build-isolation "llama-cpp-python==$version" -d . >&2)
  tar xzf "$work/llama_cpp_python-$version.tar.gz" -C "$work"
  cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF >/dev/null
  cmake --build "$work/build" -j"$(nproc)" --target llama-bench llama >/dev/null
fi
bin="$work/build/bin"
g++ -O2 -std=c++17 -I"$src/include" -I"$src/ggml/include" scripts/peer_llamacpp_greedy.cpp \
  -L"$bin" -lllama -lggml -lggml-base -Wl,-rpath,"$bin" -o "$work/greedy"
commit=$(cd "$src" && git rev-parse --short=9 HEAD 2>/dev/null || echo "vendored in llama-cpp-python $version")

# --- the checkpoint, both ways ---
suffix=$([ "$dtype" = f32 ] && echo "" || echo "-$dtype")
model="$target/peer-76m$suffix"
[ -f "$model/model.safetensors" ] || "$examples/save_random" peer-76m "$model" 0 "$dtype" >&2
gguf="$target/peer-76m$suffix.gguf"
[ "$gguf" -nt "$model/model.safetensors" ] || python3 scripts/peer_llamacpp_gguf.py "$model" "$gguf" >&2
prompt="1 17 42 99 3 200 7 11"

theirs=$("$work/greedy" "$gguf" "$tokens" 2 $prompt 2>/dev/null | grep '^ids:' | cut -d' ' -f2-)
ours=$("$kvserve" generate --model "$model" --stage ch02 --max-new-tokens "$tokens" --print-ids "$prompt" 2>/dev/null | tail -1)
if [ "$theirs" != "$ours" ]; then
  echo "the greedy tokens differ" >&2
  echo "llama.cpp: $theirs" >&2
  echo "kvserve:   $ours" >&2
  exit 1
fi
echo "same $tokens greedy tokens from prompt ids $prompt: yes" >&2

cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
machine="$cpu, $(nproc) cores, no GPU"
field() { grep "^$1:" | head -1 | awk '{print $2}'; }
bench() { # llama-bench's mean tokens/s of one test: bench THREADS -p N -n M
  local t="$1"; shift
  "$bin/llama-bench" -m "$gguf" -t "$t" -r 2 -o json "$@" 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["avg_ts"])'
}
decode() { # kvserve's decode rate with THREADS rayon threads, weights kept as stored (or as $2)
  RAYON_NUM_THREADS="$1" "$kvserve" generate --model "$model" --dtype "${2:-auto}" --stage ch02 --max-new-tokens "$tokens" "$prompt" 2>&1 >/dev/null |
    grep -o 'decode [0-9.]* tokens/s' | awk '{print $2}'
}

rows=""
load=$(cut -d" " -f1 /proc/loadavg)  # before the rounds, for the table's footer
for round in $(seq 1 "$rounds"); do
  floor=$("$examples/read_bandwidth" peer-76m "$dtype")
  gbs=$(echo "$floor" | field read_bandwidth_gb_s)
  floor_tps=$(echo "$floor" | field floor_tokens_per_s)
  l1=$(bench 1 -p 0 -n "$tokens"); k1=$(decode 1)
  l2=$(bench 2 -p 0 -n "$tokens"); k2=$(decode 2)
  lp=$(bench 2 -p "$prompt_len" -n 0)
  kp=$(RAYON_NUM_THREADS=2 "$examples/prefill_rate" "$model" "$prompt_len" 3 | field prefill_tokens_per_s_median)
  extra=""
  if [ "$dtype" != f32 ]; then
    kw=$(decode 2 f32)
    extra=$(awk -v k2="$k2" -v kw="$kw" 'BEGIN { printf " %.1f | %.2f× |", kw, k2 / kw }')
  fi
  row=$(awk -v r="$round" -v g="$gbs" -v f="$floor_tps" -v l1="$l1" -v k1="$k1" -v l2="$l2" -v k2="$k2" -v lp="$lp" -v kp="$kp" 'BEGIN {
    printf "| %d | %.1f | %.1f | %.1f | %.1f | %.2f× | %.1f (%.0f%%) | %.1f (%.0f%%) | %.2f× | %.0f | %.0f | %.2f× |",
      r, g, f, l1, k1, k1 / l1, l2, 100 * l2 / f, k2, 100 * k2 / f, k2 / l2, lp, kp, kp / lp }')
  row="$row$extra"
  echo "$row"
  rows="$rows$row"$'\n'
done

# Median and range of each ratio column (6: decode 1 thread, 9: decode 2 threads, 12: prompt).
summary=$(echo -n "$rows" | python3 -c '
import sys
rows = [[c.strip() for c in l.strip().strip("|").split("|")] for l in sys.stdin if l.strip()]
def ratio(i): return sorted(float(r[i].rstrip("×")) for r in rows)
def share(i): return sorted(float(r[i].split("(")[1].rstrip("%)")) for r in rows)
def med(v): return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2
for name, i in [("decode, 1 thread", 5), ("decode, 2 threads", 8), ("prompt processing, 2 threads", 11)]:
    v = ratio(i)
    print(f"kvserve / llama.cpp, {name}: median {med(v):.2f}× (range {v[0]:.2f}–{v[-1]:.2f}×, {sum(x >= 1 for x in v)} of {len(v)} rounds ≥ 1.0×)")
for name, i in [("llama.cpp", 6), ("kvserve", 7)]:
    v = share(i)
    print(f"{name} decode (2 threads) as a share of the floor: median {med(v):.0f}% (range {v[0]:.0f}–{v[-1]:.0f}%)")
if len(rows[0]) > 12:
    v = ratio(13)
    print(f"kvserve decode (2 threads), f16 weights kept f16 / widened to f32 at load: median {med(v):.2f}× (range {v[0]:.2f}–{v[-1]:.2f}×, {sum(x >= 1.8 for x in v)} of {len(v)} rounds ≥ 1.8×)")
')
header="| round | memory read (GB/s) | floor (tokens/s) | llama.cpp decode, 1 thread | kvserve decode, 1 thread | kvserve / llama.cpp | llama.cpp decode, 2 threads (% of floor) | kvserve decode, 2 threads (% of floor) | kvserve / llama.cpp | llama.cpp pp$prompt_len | kvserve pp$prompt_len | kvserve / llama.cpp |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
if [ "$dtype" != f32 ]; then
  header=$(echo "$header" | sed '1s/$/ kvserve decode, 2 threads, `--dtype f32` | f16 \/ f32 |/; 2s/$/---:|---:|/')
fi
table="$header
$rows"
echo
echo "$table"
echo "$summary"
echo "same greedy tokens: yes ($tokens new tokens from prompt ids: $prompt)"
echo "llama.cpp: $commit (CPU build, GGML_NATIVE), from llama-cpp-python $version"
echo "machine: $machine"

if [ -n "$markdown" ]; then
  {
    if [ "$dtype" = f32 ]; then
      echo "Decode and prompt processing (tokens/s), \`peer-76m\` random checkpoint (f32, 305 MB; a GGUF of the same weights for llama.cpp), greedy; both engines generated the same $tokens tokens. Each round runs the floor, then llama.cpp and kvserve alternately."
    else
      echo "Decode and prompt processing (tokens/s), \`peer-76m\` random checkpoint written in f16 (153 MB; an f16 GGUF of the same weights for llama.cpp), greedy; both engines generated the same $tokens tokens. kvserve keeps the weights f16 and widens them in registers; the last columns load the same checkpoint with \`--dtype f32\` (widened at load, the path before half-precision weights). Each round runs the floor, then llama.cpp and kvserve alternately."
    fi
    echo
    echo "$table"
    echo
    echo "$summary" | sed 's/^/- /'
    echo
    echo "*Measured on $machine (a shared virtual machine, load average $load before the rounds) with \`scripts/peer_llamacpp.sh --rounds $rounds$([ "$dtype" = f32 ] || echo " --dtype $dtype")\`; llama.cpp $commit (vendored in llama-cpp-python $version, CPU, \`llama-bench -r 2\`: tg$tokens and pp$prompt_len); kvserve ch02 (\`generate\`, decode rate of the tokens after the first; \`examples/prefill_rate\`, median of 3). Floor: weight bytes of one step ÷ the read bandwidth of all cores measured in the same round (the 1-thread columns have no floor: one core reads slower than all).*"
  } > "$markdown"
  echo "wrote $markdown"
fi
