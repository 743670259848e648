#!/usr/bin/env bash
# Issues 18 and 19 on the GPU machine in ONE run: chapter 6's GPU tests, the multi-turn chats on
# ch06 (bench-chat, 7B shape), and the throughput run against its roofline beside transformers'
# own continuous batching, on one checkpoint and workload.
# Build here first:  ../shared/scripts/gpu-pack.sh test -p ch06-cuda
#                    ../shared/scripts/gpu-pack.sh build -p ch06-cuda --examples
#                    ../shared/scripts/gpu-pack.sh build -p kvserve --bin kvserve
# then on the GPU machine, from the repository root:  OUT=/some/dir bash scripts/gpu_serving.sh
#   SKIP="tests chat throughput ncu hf"  leave those parts out;  N=96  requests of the throughput run
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
SKIP=${SKIP:-}; N=${N:-96}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/card.txt" 2>&1; cat "$OUT/card.txt"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
case "$SKIP" in *tests*) ;; *)
  : > "$OUT/gpu_tests_summary.txt"
  for t in kernels prefill engine ch06_cuda; do
    exe=$(ls .gpu/"$t"-* 2>/dev/null | head -n 1)
    [ -n "$exe" ] || { echo "$t: no executable in .gpu" | tee -a "$OUT/gpu_tests_summary.txt"; continue; }
    stamp "tests $t"
    timeout 300 "$exe" --ignored --test-threads=1 > "$OUT/test_$t.log" 2>&1
    echo "$t (exit $?): $(grep -E '^test result' "$OUT/test_$t.log" | tail -n 1)" | tee -a "$OUT/gpu_tests_summary.txt"
  done ;;
esac
case "$SKIP" in *chat*) ;; *)
  stamp "bench-chat on ch06, llama-7b shape"
  timeout 300 .gpu/kvserve bench-chat --stage ch06 --config llama-7b --markdown "$OUT/ch06-chat-prefix.md" \
    --json "$OUT/ch06-chat-prefix.json" > "$OUT/bench_chat.log" 2>&1; echo "exit $?"; tail -n 9 "$OUT/bench_chat.log" ;;
esac
case "$SKIP" in *throughput*) ;; *)
  stamp "throughput against the roofline (TinyLlama-1.1B shape, $N requests)"
  python3 scripts/peer_hf_generate.py --make-workload "$OUT/workload.json" --n 300 --seed 0 > "$OUT/workload.log" 2>&1
  python3 scripts/peer_hf_generate.py --make-model /tmp/kvserve-llama-1b --shape llama-1b >> "$OUT/workload.log" 2>&1
  bench=$(ls .gpu/gpu_bench-* 2>/dev/null | head -n 1); bench=${bench:-.gpu/gpu_bench}
  timeout 300 "$bench" --out "$OUT" --sections c --model /tmp/kvserve-llama-1b --workload "$OUT/workload.json" \
    --max-requests "$N" 2>&1 | tee "$OUT/ch06_throughput.log"
  case "$SKIP" in *ncu*) ;; *)
    stamp "ncu: about one decode step of the same run, kernel by kernel"
    timeout 150 /usr/local/cuda/bin/ncu --csv --metrics gpu__time_duration.sum --clock-control none --cache-control none \
      --launch-skip 100000 --launch-count 240 "$bench" --out "$OUT/ncu-run" --sections c --model /tmp/kvserve-llama-1b \
      --workload "$OUT/workload.json" --max-requests "$N" > "$OUT/ncu.csv" 2> "$OUT/ncu.err"; echo "ncu exit $?" ;;
  esac
  case "$SKIP" in *hf*) ;; *)
    stamp "transformers continuous batching, same checkpoint and workload"
    timeout 300 python3 scripts/peer_hf_continuous.py --json-out "$OUT/peer_hf_continuous.json" --workload "$OUT/workload.json" \
      --model /tmp/kvserve-llama-1b --max-requests "$N" > "$OUT/peer_hf_continuous.log" 2>&1; echo "exit $?"
    tail -n 5 "$OUT/peer_hf_continuous.log" ;;
  esac ;;
esac
stamp "done"
