#!/usr/bin/env bash
# Everything the shipped model and the parity claims need from the GPU machine (PyTorch +
# transformers, no Rust): run from the repository root with data/ and .gpu/ (Rust binaries built
# by ../shared/scripts/gpu-pack.sh: .gpu/logits and .gpu/kvserve) carried along. Results go to $OUT.
#   1. HF parity of ch00's logits on two random GQA checkpoints (f32 untied, f16 tied)
#   2. train the Shakespeare model (scripts/train_tiny.py), recompute its val_sample_loss
#   3. HF greedy generation on it, compared with kvserve's tokens
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
STEPS=${STEPS:-4000}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} > "$OUT/machine.txt" 2>&1

if [ -z "${SKIP_PARITY:-}" ]; then
  python3 scripts/hf_check.py parity --rust-bin .gpu/logits --workdir /tmp/parity --report "$OUT/parity.json" > "$OUT/parity.log" 2>&1
  echo "parity exit $?" >> "$OUT/parity.log"
fi

python3 scripts/train_tiny.py --steps "$STEPS" --minutes 7 > "$OUT/train.log" 2>&1
echo "train exit $?" >> "$OUT/train.log"
python3 scripts/hf_check.py loss --model models/shakespeare >> "$OUT/train.log" 2>&1

PROMPT=$'ROMEO:\nO, she doth teach the torches to burn bright!'
.gpu/kvserve generate --model models/shakespeare --max-new-tokens 64 --print-ids "$PROMPT" > "$OUT/kvserve_generate.txt" 2>&1
python3 scripts/hf_check.py generate --model models/shakespeare --prompt "$PROMPT" --max-new-tokens 64 \
  --rust-ids "$(tail -n 1 "$OUT/kvserve_generate.txt")" --json-out models/shakespeare/hf_greedy.json > "$OUT/hf_generate.log" 2>&1
echo "generate compare exit $?" >> "$OUT/hf_generate.log"
tar -C models -cf "$OUT/shakespeare.tar" shakespeare
