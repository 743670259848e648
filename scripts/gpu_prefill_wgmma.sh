#!/usr/bin/env bash
# The Hopper prefill kernel's development run (issue 19), on the GPU machine from the repository
# root:  OUT=/some/dir bash scripts/gpu_prefill_wgmma.sh [variant names...]
# If a prefill test executable is in .gpu (../shared/scripts/gpu-pack.sh test -p ch06-cuda), its f16
# and bf16 kernel tests run beside the builds first; scripts/prefill_wgmma_dev.py waits for them
# before timing. Logs, ptxas reports, SASS and results.json land in $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; rm -f "$OUT/rust_done" "$OUT/builds.log"
t=$(ls .gpu/prefill-* 2>/dev/null | head -n 1)
if [ -n "$t" ]; then
  export WAIT_RUST=1
  ( timeout 200 "$t" --ignored --test-threads=2 --nocapture prefill_kernels_match_the_cpu_reference > "$OUT/rust_tests.log" 2>&1
    echo "exit $?" >> "$OUT/rust_tests.log"; touch "$OUT/rust_done" ) &
fi
timeout 400 python3 scripts/prefill_wgmma_dev.py "$@" 2>&1 | tee "$OUT/log.txt" | grep -v "^  regs"
wait
if [ -n "$t" ]; then
  echo "== $t (f16 + bf16 kernel tests): $(grep -c 'rel err' "$OUT/rust_tests.log") checks"
  grep -E "^test |test result|exit|panicked" "$OUT/rust_tests.log" | cut -c1-200
fi
