#!/usr/bin/env bash
# Everything the shipped model and the parity claims need from the GPU machine (PyTorch +
# transformers, no Rust): run from the repository root with data/ and .gpu/ (Rust binaries built
# by ../shared/scripts/gpu-pack.sh: .gpu/logits and .gpu/kvserve) carried along. Results go to $OUT.
#   1. HF parity of ch00's logits on three random GQA checkpoints (f32 untied, f16 tied, bf16 llama3 RoPE)
#   2. text prompts → token ids → greedy tokens, kvserve vs transformers, on three checkpoints the
#      script builds (tokenizer adds no BOS though config names one / Llama-2 BOS template /
#      Llama-3 <|begin_of_text|>): $OUT/text_parity.json and $OUT/hf-text-parity.md (for the book)
#   3. train the Shakespeare model (scripts/train_tiny.py), recompute its val_sample_loss
#   4. HF greedy generation on it from the text prompt, compared with kvserve's prompt ids and tokens
# SKIP_PARITY=1 skips 1, SKIP_TEXT=1 skips 2, SKIP_TRAIN=1 skips 3 (4 then uses the shipped weights).
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

if [ -z "${SKIP_TEXT:-}" ]; then
  python3 scripts/hf_check.py text-parity --kvserve .gpu/kvserve --workdir /tmp/text-parity \
    --report "$OUT/text_parity.json" --markdown "$OUT/hf-text-parity.md" > "$OUT/text_parity.log" 2>&1
  echo "text-parity exit $?" >> "$OUT/text_parity.log"
fi

if [ -z "${SKIP_TRAIN:-}" ]; then
  python3 scripts/train_tiny.py --steps "$STEPS" --minutes 7 > "$OUT/train.log" 2>&1
  echo "train exit $?" >> "$OUT/train.log"
  python3 scripts/hf_check.py loss --model models/shakespeare >> "$OUT/train.log" 2>&1
fi

PROMPT=$'ROMEO:\nO, she doth teach the torches to burn bright!'
.gpu/kvserve generate --model models/shakespeare --max-new-tokens 64 --print-ids "$PROMPT" > "$OUT/kvserve_generate.txt" 2>&1
python3 scripts/hf_check.py generate --model models/shakespeare --prompt "$PROMPT" --max-new-tokens 64 \
  --rust-ids "$(tail -n 1 "$OUT/kvserve_generate.txt")" \
  --rust-prompt-ids "$(grep '^prompt ids:' "$OUT/kvserve_generate.txt" | cut -d: -f2)" \
  --json-out models/shakespeare/hf_greedy.json > "$OUT/hf_generate.log" 2>&1
echo "generate compare exit $?" >> "$OUT/hf_generate.log"
tar -C models -cf "$OUT/shakespeare.tar" shakespeare
