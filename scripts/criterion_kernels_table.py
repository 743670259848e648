#!/usr/bin/env python3
"""Turns criterion's results for `cargo bench --bench kernels` into the book's before/after table.

The old kernels' run is saved as criterion baseline `before` (built from the commit before the
CPU work, see book/src/appendix-cpu.md), the new one compared against it:

    <old bench binary> --bench --save-baseline before
    cargo bench --bench kernels -- --baseline before
    python3 scripts/criterion_kernels_table.py [target/criterion] [BEFORE] > book/src/generated/bench-kernels.md

BEFORE names the commit the baseline was built on (default: the commit before the CPU work).
"""
import json, os, platform, sys

root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
before_what = sys.argv[2] if len(sys.argv) > 2 else "the commit before the CPU work"


def mean_s(group, param, which):
    path = os.path.join(root, group, str(param), which, "estimates.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)["mean"]["point_estimate"] / 1e9


def fmt(seconds):
    return "—" if seconds is None else (f"{seconds * 1e3:.2f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.0f} µs")


what = {
    "linear": "`linear`, the MLP up projection of `peer-76m` (2048 × 768, 6.3 MB: in the L3 cache)",
    "decode_step": "one decode step of `peer-76m` (305 MB of weights, 64 cached tokens per sequence)",
}
print("| what | batch | before | after | speed-up |")
print("|---|---:|---:|---:|---:|")
for group in ["linear", "decode_step"]:
    for batch in [1, 8, 32]:
        before, after = mean_s(group, batch, "before"), mean_s(group, batch, "new")
        ratio = f"{before / after:.1f}×" if before and after else "—"
        print(f"| {what[group]} | {batch} | {fmt(before)} | {fmt(after)} | {ratio} |")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
print(f"\n*criterion means (`cargo bench --bench kernels`, `benches/kernels.rs`) on {cpu}, {os.cpu_count()} cores, no GPU, "
      f"shared with other jobs while it ran; before = the same bench built on {before_what}.*")
