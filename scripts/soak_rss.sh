#!/usr/bin/env bash
# Resident memory of `kvserve serve` as requests accumulate (issue 17's memory slope), loopback only.
# Usage: scripts/soak_rss.sh [KVSERVE_BINARY] [ROUNDS] [REQUESTS_PER_ROUND] [extra serve args...]
# Prints one line per round: requests served so far, VmRSS in kB; then the slope in bytes/request
# between the first and the last round.
set -euo pipefail
bin=${1:-target/release/kvserve}
rounds=${2:-10}
per=${3:-500}
shift $(( $# < 3 ? $# : 3 ))
port=${SOAK_PORT:-18181}
"$bin" serve --port "$port" "$@" 2>/tmp/soak_rss.$port.log &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.2; done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
first=""; first_n=0; n=0
for r in $(seq "$rounds"); do
  # In calls of at most 200 requests, all at once: under the default --max-waiting of 256.
  left=$per
  while [ "$left" -gt 0 ]; do
    k=$(( left < 200 ? left : 200 ))
    "$bin" loadgen --url "http://127.0.0.1:$port/v1" --num-requests "$k" --prompt-min 4 --prompt-max 16 \
      --output-mean 8 --output-max 16 --seed "$r$left" >/dev/null
    left=$((left - k))
  done
  n=$((n + per)); kb=$(rss)
  echo "requests $n rss_kb $kb"
  if [ -z "$first" ]; then first=$kb; first_n=$n; fi
done
awk -v a="$first" -v b="$kb" -v na="$first_n" -v nb="$n" \
  'BEGIN { if (nb > na) printf "slope %.1f bytes/request (rss %d kB after %d, %d kB after %d)\n", (b - a) * 1024 / (nb - na), a, na, b, nb }'
