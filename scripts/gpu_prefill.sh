#!/usr/bin/env bash
# Issue 19's prefill measurements, their peers and chapter 6's GPU tests in ONE run on the GPU
# machine, so every ratio compares numbers from the same card in the same session.
# Build here first:  ../shared/scripts/gpu-pack.sh test -p ch06-cuda
#                    ../shared/scripts/gpu-pack.sh build -p ch06-cuda --examples
# and fetch FlashInfer's wheels into .whl (scripts/README.md says which); then on the GPU machine,
# from the repository root:  OUT=/some/dir bash scripts/gpu_prefill.sh
# Everything lands, packed, in $OUT/prefill.tgz (logs and JSON records); `python3 scripts/gpu_tables.py
# DIR` (DIR = the unpacked prefill/) writes book/src/generated/gpu/ch06-prefill.md.
#   SKIP="tests flashinfer"  leave those parts out
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; W=/tmp/kvserve-prefill/prefill; rm -rf "$W"; mkdir -p "$W" "$OUT"
SKIP=${SKIP:-}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv > "$W/card.txt" 2>&1
cat "$W/card.txt"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
run_tests() {  # name...: each test executable's ignored (GPU) tests, one at a time
  for t in "$@"; do
    exe=$(ls .gpu/"$t"-* 2>/dev/null | head -n 1)
    [ -n "$exe" ] || { echo "$t: no executable in .gpu" | tee -a "$W/gpu_tests_summary.txt"; continue; }
    timeout 300 "$exe" --ignored --test-threads=1 --nocapture > "$W/test_$t.log" 2>&1
    echo "$t (exit $?): $(grep -E '^test result' "$W/test_$t.log" | tail -n 1)" | tee -a "$W/gpu_tests_summary.txt"
  done
}
: > "$W/gpu_tests_summary.txt"
case "$SKIP" in *tests*) ;; *) stamp "prefill kernel tests"; run_tests prefill ;; esac
# e: the prefill kernels and whole prefills (Rust)
bench=$(ls .gpu/gpu_bench-* 2>/dev/null | head -n 1); bench=${bench:-.gpu/gpu_bench}
stamp "gpu_bench --sections e"
timeout 300 "$bench" --out "$W" --sections e 2>&1 | tee "$W/ch06_prefill.log"
stamp "torch prefill peer"
timeout 240 python3 scripts/peer_torch_prefill.py --json-out "$W/peer_torch_prefill.json" > "$W/peer_torch_prefill.log" 2>&1
tail -n 6 "$W/peer_torch_prefill.log"
stamp "attention peers (SDPA, FlashInfer)"
fi_args="--no-flashinfer"
case "$SKIP" in *flashinfer*) ;; *)
  if ls .whl/*.whl > /dev/null 2>&1 && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
       --upgrade --target /tmp/fi .whl/*.whl > "$W/pip.log" 2>&1; then
    export PYTHONPATH=/tmp/fi FLASHINFER_CUDA_ARCH_LIST=9.0 MAX_JOBS=16; fi_args="--backends ${FI_BACKENDS:-fa2,fa3}"
  fi ;;
esac
timeout 420 python3 scripts/peer_prefill_attention.py --json-out "$W/peer_prefill_attention.json" $fi_args \
  > "$W/peer_prefill_attention.log" 2>&1
tail -n 14 "$W/peer_prefill_attention.log"
case "$SKIP" in *tests*) ;; *) stamp "kernel and engine tests"; run_tests kernels engine ch06_cuda ;; esac
stamp "done"
tar -C "$(dirname "$W")" -czf "$OUT/prefill.tgz" prefill
cat "$W/gpu_tests_summary.txt"
