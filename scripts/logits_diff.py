#!/usr/bin/env python3
"""How far two builds' logits are apart: the kernels before and after a change in summation order.

    python3 scripts/logits_diff.py NAME OLD.json NEW.json [NAME OLD.json NEW.json ...] > table.md

Each JSON is `{"logits": [[...], ...]}` as `cargo run -p ch01-naive --example logits` writes it.
Prints one Markdown row per pair: largest absolute difference, the same relative to the largest
|logit| (the measure of `scripts/hf_check.py parity`), and how many positions keep their argmax.
"""
import json, os, platform, sys

args = sys.argv[1:]
if len(args) % 3 or not args:
    sys.exit(__doc__)
print("| checkpoint | positions | max abs. difference | max rel. difference (max\\|Δ\\| / max\\|logit\\|) | same argmax |")
print("|---|---:|---:|---:|---:|")
for name, old_path, new_path in zip(args[0::3], args[1::3], args[2::3]):
    old, new = (json.load(open(p))["logits"] for p in (old_path, new_path))
    assert len(old) == len(new), "different numbers of positions"
    diff = max(abs(a - b) for ro, rn in zip(old, new) for a, b in zip(ro, rn))
    scale = max(abs(a) for row in old for a in row)
    argmax = lambda row: max(range(len(row)), key=row.__getitem__)
    same = sum(argmax(ro) == argmax(rn) for ro, rn in zip(old, new))
    print(f"| {name} | {len(old)} | {diff:.2e} | **{diff / scale:.2e}** | {same}/{len(old)} |")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
print(f"\n*Logits of every position for the same 24 token ids from the `logits` example of ch01 built before "
      f"and after the kernel changes, compared by `scripts/logits_diff.py` on {cpu}, {os.cpu_count()} cores.*")
