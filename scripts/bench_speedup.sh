#!/usr/bin/env bash
# The whole `kvserve bench`, run by an older kvserve binary and by this one back to back on this
# machine: both wall-clock times, their ratio, and a check that every count in the two reports is
# the same (every integer of their JSON: steps, token rows, preemptions, blocks, peak running…;
# the floats are timings). Writes book/src/generated/bench-speedup.md with --markdown.
#
#   scripts/bench_speedup.sh OLD_KVSERVE [--markdown]
#
# e.g. OLD_KVSERVE built from the commit before the CPU work (appendix C):
#   git worktree add /tmp/old ac8e464 && cargo build --release --bin kvserve --manifest-path /tmp/old/Cargo.toml
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?usage: scripts/bench_speedup.sh OLD_KVSERVE [--markdown]}
markdown=${2:-}
new=${CARGO_TARGET_DIR:-target}/release/kvserve
cargo build --release --quiet --bin kvserve
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
load() { cut -d' ' -f1 /proc/loadavg; }
for which in old new; do
  bin=$old; [ "$which" = new ] && bin=$new
  echo "load average before the $which run: $(load)" > "$tmp/$which.load"
  start=$(date +%s.%N)
  "$bin" bench --json "$tmp/$which.json" > "$tmp/$which.log" 2>/dev/null
  end=$(date +%s.%N)
  echo "$start $end" > "$tmp/$which.time"
  echo "$which: $(awk '{printf "%.0f s", $2 - $1}' "$tmp/$which.time")" >&2
done
python3 - "$tmp" "$cpu, $(nproc) cores" "$markdown" <<'PY'
import json, sys, os
tmp, machine, markdown = sys.argv[1], sys.argv[2], sys.argv[3]
def ints(x, path=""):
    if isinstance(x, bool): return {}
    if isinstance(x, int): return {path: x}
    if isinstance(x, dict): return {k: v for key, val in x.items() for k, v in ints(val, f"{path}.{key}").items()}
    if isinstance(x, list): return {k: v for i, val in enumerate(x) for k, v in ints(val, f"{path}[{i}]").items()}
    return {}
old, new = (json.load(open(os.path.join(tmp, f"{w}.json"))) for w in ("old", "new"))
a, b = ints(old), ints(new)
keys = sorted(set(a) & set(b))  # a field only one version reports has nothing to compare
differ = [k for k in keys if a[k] != b[k]]
t = {w: [float(v) for v in open(os.path.join(tmp, f"{w}.time")).read().split()] for w in ("old", "new")}
secs = {w: t[w][1] - t[w][0] for w in t}
loads = {w: open(os.path.join(tmp, f"{w}.load")).read().split(": ")[1].strip() for w in t}
mmss = lambda s: f"{int(round(s)) // 60}:{int(round(s)) % 60:02d}"
for k in differ[:20]:
    print(f"count differs: {k}: before {a[k]}, after {b[k]}", file=sys.stderr)
same = "yes" if not differ else f"NO ({len(differ)} of {len(keys)} differ)"
table = ("| `kvserve bench` (full) | wall-clock | load average at its start |\n|---|---:|---:|\n"
         f"| before the CPU work | {mmss(secs['old'])} ({secs['old']:.0f} s) | {loads['old']} |\n"
         f"| after | {mmss(secs['new'])} ({secs['new']:.0f} s) | {loads['new']} |\n"
         f"| after ÷ before | **{secs['new'] / secs['old']:.2f}** | |\n\n"
         f"Same counts in both reports (all {len(keys)} integers the two JSON reports share: steps, token rows, preemptions, blocks, peak running, …): **{same}**.\n")
print(table)
if markdown:
    with open("book/src/generated/bench-speedup.md", "w") as f:
        f.write(table + f"\n*Measured on {machine}, back to back, with `scripts/bench_speedup.sh <kvserve built before the CPU work> --markdown`.*\n")
    print("wrote book/src/generated/bench-speedup.md", file=sys.stderr)
sys.exit(1 if differ else 0)
PY
