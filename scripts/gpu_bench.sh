#!/usr/bin/env bash
# Chapter 6's measurements and their PyTorch peers in ONE run on the GPU machine, so every ratio
# compares numbers from the same card in the same session (issue 9, Performance a-d).
# Build here first:  ../shared/scripts/gpu-pack.sh build -p ch06-cuda --examples
# then on the GPU machine, from the repository root:  OUT=/some/dir bash scripts/gpu_bench.sh
# Records (JSON) and logs go to $OUT; `python3 scripts/gpu_tables.py $OUT` writes the book's tables.
#   N=96   requests of the throughput workload served by both engines (transformers: static batches of 32)
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
N=${N:-96}
bench=$(ls .gpu/gpu_bench-* 2>/dev/null | head -n 1); bench=${bench:-.gpu/gpu_bench}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/card.txt" 2>&1
# a, b, d: kernel, decode steps, 80 GB scenario (Rust)
"$bench" --out "$OUT" --sections a,b,d 2>&1 | tee "$OUT/ch06_bench.log"
# b again, with the decode step's optimisations switched on one at a time (the before/after table)
"$bench" --out "$OUT/ladder" --sections b --ladder --decode-points 1x512,1x2048,32x512,64x2048 2>&1 | tee -a "$OUT/ch06_bench.log"
cp "$OUT/ladder/ch06_decode.json" "$OUT/ch06_decode_ladder.json"
# the PyTorch peers of a and b, and the measured copy bandwidth
SKIP="hf" OUT="$OUT" bash scripts/gpu_peers.sh > /dev/null 2>&1
tail -n 12 "$OUT"/peer_sdpa.log "$OUT"/peer_decode_graph.log
# c: throughput on one checkpoint (TinyLlama-1.1B shape, random f16 weights) and one workload
python3 scripts/peer_hf_generate.py --make-workload "$OUT/workload.json" --n 300 --seed 0 > "$OUT/workload.log" 2>&1
python3 scripts/peer_hf_generate.py --make-model /tmp/kvserve-llama-1b --shape llama-1b >> "$OUT/workload.log" 2>&1
"$bench" --out "$OUT" --sections c --model /tmp/kvserve-llama-1b --workload "$OUT/workload.json" --max-requests "$N" 2>&1 | tee -a "$OUT/ch06_bench.log"
python3 scripts/peer_hf_generate.py --json-out "$OUT/peer_hf_generate.json" --workload "$OUT/workload.json" \
  --model /tmp/kvserve-llama-1b --max-requests "$N" --time-budget-s "${HF_BUDGET_S:-200}" > "$OUT/peer_hf_generate.log" 2>&1
tail -n 15 "$OUT/peer_hf_generate.log"
# the GPU engine against transformers on the same checkpoints: logits in each checkpoint's dtype,
# and greedy tokens on the shipped model from the text prompt
python3 scripts/hf_check.py parity --rust-bin .gpu/logits_gpu --workdir /tmp/kvserve-gpu-parity \
  --report "$OUT/ch06_hf_parity.json" --threshold 0.05 > "$OUT/ch06_hf_parity.log" 2>&1
.gpu/kvserve generate --stage ch06 --model models/shakespeare --max-new-tokens 64 --print-ids \
  $'ROMEO:\nO, she doth teach the torches to burn bright!' > "$OUT/ch06_generate.txt" 2>&1
tail -n 3 "$OUT/ch06_hf_parity.log" "$OUT/ch06_generate.txt"
