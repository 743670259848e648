#!/usr/bin/env python3
"""Turns criterion's results for `cargo bench --bench stages` into the book's Markdown table.

usage: python3 scripts/criterion_table.py [target/criterion] > book/src/generated/bench-lengths.md
"""
import json, os, platform, sys

root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
group = os.path.join(root, "generate")
times = {}  # (stage, n) -> seconds per run (criterion's mean point estimate)
for stage in sorted(os.listdir(group)):
    sdir = os.path.join(group, stage)
    if not os.path.isdir(sdir) or stage == "report":
        continue
    for n in os.listdir(sdir):
        est = os.path.join(sdir, n, "new", "estimates.json")
        if os.path.exists(est):
            with open(est) as f:
                times[(stage, int(n))] = json.load(f)["mean"]["point_estimate"] / 1e9
stages = sorted({s for s, _ in times})
lengths = sorted({n for _, n in times})
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
print("| new tokens | " + " | ".join(f"{s} (tokens/s)" for s in stages) + " | ch02 / ch01 |")
print("|---:|" + "---:|" * len(stages) + "---:|")
for n in lengths:
    tps = [n / times[(s, n)] if (s, n) in times else float("nan") for s in stages]
    ratio = tps[-1] / tps[0] if len(tps) >= 2 else float("nan")
    print(f"| {n} | " + " | ".join(f"{t:,.0f}" for t in tps) + f" | {ratio:.1f}× |")
print(f"\n*Measured with `cargo bench --bench stages` (criterion, mean of 10 samples; `tiny` random model, "
      f"16-token prompt) on {cpu}, {os.cpu_count()} cores, no GPU.*")
