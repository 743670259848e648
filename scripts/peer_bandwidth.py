#!/usr/bin/env python3
"""Measured device copy bandwidth: the number every floor in the peer scripts is set against.

usage: python3 scripts/peer_bandwidth.py --json-out PATH [--gib 2] [--repeats 20] [--cpu-smoke]

One device-to-device copy of --gib GiB (dst.copy_(src), one cudaMemcpyAsync), timed with CUDA
events, median of --repeats after 3 warm-ups. GB/s counts read + write bytes (2 × size), 1 GB = 1e9 B.
The other peer scripts measure the same number again in their own process (gpu_common.copy_bandwidth).
JSON: a list of one record {card, copy_bytes, bytes_moved, us, gbps, repeats, method, machine, command}.
"""
import argparse

from gpu_common import GIB, command_line, copy_bandwidth, machine, pick_device, print_table, write_json


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json-out", required=True)
    ap.add_argument("--gib", type=float, default=2.0, help="size of the copied buffer (default 2 GiB)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--cpu-smoke", action="store_true", help="64 MiB copy on the CPU, to check the script")
    a = ap.parse_args()
    if a.repeats < 1 or a.gib <= 0:
        ap.error("--repeats must be ≥ 1 and --gib > 0")
    dev = pick_device(a.cpu_smoke)
    nbytes = 64 << 20 if a.cpu_smoke else int(a.gib * GIB)
    r = copy_bandwidth(dev, nbytes, a.repeats)
    m = machine(dev)
    rec = {"card": m["card"], **r, "machine": m, "command": command_line()}
    print(f"device copy bandwidth on {m['card']} (torch {m['torch']}, CUDA {m['cuda']})")
    print_table(["copy", "median us", "GB/s (read+write)"],
                [[f"{nbytes / GIB:.3g} GiB", f"{r['us']:.1f}", f"{r['gbps']:.0f}"]])
    write_json(a.json_out, [rec])


if __name__ == "__main__":
    main()
