#!/usr/bin/env bash
# The PyTorch peers of ch06 (issue 9, Performance a–c), for the GPU machine: run from the repository
# root; JSON records and logs go to $OUT. Each step can be skipped: SKIP="bandwidth sdpa decode hf".
#   WORKLOAD=path.json  requests for the transformers baseline (default: a seeded one made here)
#   MODEL=dir           HF checkpoint for it (default: RANDOM_MODEL=llama-7b, built in memory)
#   MAX_REQUESTS=64     requests it serves (the first N; 2 static batches of 32)
#   HF_BUDGET_S=60      it starts no batch after this many seconds
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
SKIP=${SKIP:-}
step() { [[ " $SKIP " != *" $1 "* ]]; }
python3 -c "import torch, transformers; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'CUDA', torch.version.cuda, 'transformers', transformers.__version__)" > "$OUT/peers_machine.txt" 2>&1
step bandwidth && { python3 scripts/peer_bandwidth.py --json-out "$OUT/peer_bandwidth.json" > "$OUT/peer_bandwidth.log" 2>&1; echo "bandwidth exit $?" >> "$OUT/peer_bandwidth.log"; }
step sdpa && { python3 scripts/peer_sdpa.py --json-out "$OUT/peer_sdpa.json" > "$OUT/peer_sdpa.log" 2>&1; echo "sdpa exit $?" >> "$OUT/peer_sdpa.log"; }
step decode && { python3 scripts/peer_decode_graph.py --json-out "$OUT/peer_decode_graph.json" > "$OUT/peer_decode_graph.log" 2>&1; echo "decode exit $?" >> "$OUT/peer_decode_graph.log"; }
if step hf; then
  WL=${WORKLOAD:-$OUT/peer_workload.json}
  [ -n "${WORKLOAD:-}" ] || python3 scripts/peer_hf_generate.py --make-workload "$WL" --n 300 --seed 0 > "$OUT/peer_hf_generate.log" 2>&1
  if [ -n "${MODEL:-}" ]; then src=(--model "$MODEL"); else src=(--random-model "${RANDOM_MODEL:-llama-7b}"); fi
  python3 scripts/peer_hf_generate.py --json-out "$OUT/peer_hf_generate.json" --workload "$WL" "${src[@]}" \
    --max-requests "${MAX_REQUESTS:-64}" --time-budget-s "${HF_BUDGET_S:-60}" >> "$OUT/peer_hf_generate.log" 2>&1
  echo "hf exit $?" >> "$OUT/peer_hf_generate.log"
fi
tail -n 30 "$OUT"/peer_*.log
