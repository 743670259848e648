#!/usr/bin/env python3
"""Turns criterion's results into the book's Markdown tables.

usage: python3 scripts/criterion_table.py stages|paged|batching [target/criterion] > book/src/generated/FILE.md

  stages    `cargo bench --bench stages`: ch01 vs ch02 by output length    -> bench-lengths.md
  paged     `cargo bench --bench paged`: block-table walk, ch04 vs ch05     -> bench-paged.md
  batching  `cargo bench --bench batching`: ch03 vs ch02, ch04 vs ch03      -> bench-batching.md

Every table ends with the machine it ran on (CPU, cores, load average now) and the bench command.
"""
import json, os, platform, sys

COMMANDS = {
    "stages": "cargo bench --bench stages",
    "paged": "cargo bench --bench paged -- --warm-up-time 1 --measurement-time 4",
    "batching": "cargo bench --bench batching",
}


def results(root):
    """{(group, function, value): (mean s, median s, elements or None)} from criterion's `new/` dirs."""
    out = {}
    for dirpath, _, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "benchmark.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            b = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            e = json.load(f)
        elements = (b.get("throughput") or {}).get("Elements")
        key = (b["group_id"], b.get("function_id"), b.get("value_str"))
        out[key] = (e["mean"]["point_estimate"] / 1e9, e["median"]["point_estimate"] / 1e9, elements)
    return out


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
    load = open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?"
    return f"{cpu}, {os.cpu_count()} cores, no GPU, load average {load} when the table was written"


def stages(r):
    times = {(f, int(v)): mean for (g, f, v), (mean, _, _) in r.items() if g == "generate"}
    if not times:
        sys.exit("no results of the `generate` group: run `cargo bench --bench stages`")
    names = sorted({s for s, _ in times})
    lengths = sorted({n for _, n in times})
    print("| new tokens | " + " | ".join(f"{s} (tokens/s)" for s in names) + " | ch02 / ch01 |")
    print("|---:|" + "---:|" * len(names) + "---:|")
    for n in lengths:
        tps = [n / times[(s, n)] if (s, n) in times else float("nan") for s in names]
        ratio = tps[-1] / tps[0] if len(tps) >= 2 else float("nan")
        print(f"| {n} | " + " | ".join(f"{t:,.0f}" for t in tps) + f" | {ratio:.1f}× |")
    return "criterion, mean of 10 samples; `tiny` random model, 16-token prompt"


def fmt_time(s):
    return f"{s * 1e6:,.1f} µs" if s < 1e-3 else f"{s * 1e3:,.1f} ms"


def paged(r):
    rows = [
        (("decode_step_attention", "contiguous", None), "decode step, contiguous caches (ch02 backend)"),
        *[(("decode_step_attention", "paged", str(bs)), f"decode step, paged, block size {bs}") for bs in (8, 16, 32, 128)],
        (("ch04_vs_ch05_same_memory", "ch04-continuous-batching", None), "whole workload, ch04 (4 slots × 256 tokens)"),
        (("ch04_vs_ch05_same_memory", "ch05-paged-attention", None), "whole workload, ch05 (the same memory in blocks of 16, ch04's limits)"),
    ]
    base = r.get(rows[0][0])
    if not any(key in r for key, _ in rows):
        sys.exit("no results of `cargo bench --bench paged`")
    print("| benchmark (criterion, median) | time | × contiguous step |")
    print("|---|---:|---:|")
    for key, label in rows:
        if key in r:
            ratio = f"{r[key][1] / base[1]:.2f}×" if base and key[0] == "decode_step_attention" else ""
            print(f"| {label} | {fmt_time(r[key][1])} | {ratio} |")
    return ("tiny model (2 layers), one decode step of 8 sequences with 512 cached tokens each; the workload is "
            "`WorkloadSpec::exponential_default(16, 0)`")


def batching(r):
    if not any(k[0] in ("batched_decode", "mixed_lengths") for k in r):
        sys.exit("no results of `cargo bench --bench batching`")
    print("| benchmark | engine | tokens/s (median) | × first row of its group |")
    print("|---|---|---:|---:|")
    for group in ("batched_decode", "mixed_lengths"):
        entries = sorted((k, v) for k, v in r.items() if k[0] == group)
        # ch02 < ch03 < ch04 by name: the order of the book's chapters.
        first = None
        for (g, f, v), (_, median, elements) in entries:
            name = v or f
            tps = elements / median if elements else float("nan")
            first = first or tps
            print(f"| {group} | {name} | {tps:,.1f} | {tps / first:.2f}× |")
    return ("criterion, median of 10 samples on the `bench` model; `batched_decode`: 4 requests of 8 + 8 tokens, "
            "ch02 against ch03 (B = 4); `mixed_lengths`: 12 requests with exponential outputs (mean 12), 4 slots, "
            "ch03 against ch04")


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    what = sys.argv[1]
    root = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "criterion")
    r = results(root)
    if not r:
        sys.exit(f"no criterion results under {root}: run `{COMMANDS[what]}` first")
    setup = {"stages": stages, "paged": paged, "batching": batching}[what](r)
    print(f"\n*Measured with `{COMMANDS[what]}` ({setup}) on {machine()}.*")


main()
