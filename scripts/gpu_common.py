"""Shared helpers for the PyTorch peer scripts (peer_*.py): the machine's description, GPU timing
with CUDA events, the measured copy bandwidth every floor is set against, percentiles, JSON output.

Timing method (time_calls): warm-up calls, then the timed calls in chunks. Before each chunk the GPU
is given a spin kernel (torch.cuda._sleep) long enough for Python to enqueue the whole chunk, so the
timed kernels run back to back and each (start, end) event pair measures GPU time only, not Python's
launch overhead. `cpu_ahead` in the result says whether that held for every chunk. The figure is
the median over all timed calls. On CPU (--cpu-smoke) the same function times with perf_counter.
"""
import json
import math
import os
import platform
import statistics
import sys
import time

import torch

# H100 and H200 both have a 50 MB L2: inputs smaller than a few times this are rotated
# among several buffers so that a timed call does not read what the previous call left in L2.
L2_BYTES = 50 * 1000 * 1000
GIB = 1 << 30


def pick_device(cpu_smoke: bool) -> torch.device:
    if cpu_smoke:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        sys.exit("error: no CUDA device visible to PyTorch (use --cpu-smoke for a CPU logic check)")
    return torch.device("cuda")


def card_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, smoke test)"


def machine(device: torch.device) -> dict:
    """What the numbers were measured on; stored beside every record."""
    m = {"card": card_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
         "python": platform.python_version()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        m.update(total_memory_gib=round(p.total_memory / GIB, 2), sm_count=p.multi_processor_count,
                 capability=f"{p.major}.{p.minor}")
    try:
        import transformers
        m["transformers"] = transformers.__version__
    except ImportError:
        pass
    return m


def n_buffers(bytes_per_set: int, cpu_smoke: bool = False) -> int:
    """How many input sets to rotate so that consecutive calls touch ≥ 4× L2 of distinct data."""
    if cpu_smoke:
        return 2  # exercises the rotation logic
    return max(1, min(8, math.ceil(4 * L2_BYTES / max(1, bytes_per_set))))


_CYCLES_PER_MS = None


def _cycles_per_ms() -> float:
    """Calibrates torch.cuda._sleep (it spins for a number of GPU clock cycles)."""
    global _CYCLES_PER_MS
    if _CYCLES_PER_MS is None:
        cycles = 20_000_000
        torch.cuda._sleep(cycles)  # warm-up
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        torch.cuda._sleep(cycles)
        e.record()
        torch.cuda.synchronize()
        _CYCLES_PER_MS = cycles / s.elapsed_time(e)
    return _CYCLES_PER_MS


def time_calls(fn, device: torch.device, repeats: int, warmup: int, chunk: int = 25) -> dict:
    """Median time of fn(i) (i = call index, for buffer rotation) in microseconds."""
    for i in range(warmup):
        fn(i)
    if device.type != "cuda":
        ts = []
        for i in range(repeats):
            t = time.perf_counter()
            fn(i)
            ts.append((time.perf_counter() - t) * 1e6)
        return {"median_us": statistics.median(ts), "min_us": min(ts), "max_us": max(ts),
                "repeats": repeats, "cpu_ahead": None}
    torch.cuda.synchronize()
    # host cost of enqueueing one call, to size the spin that keeps the GPU behind Python
    t = time.perf_counter()
    for i in range(3):
        fn(i)
    host_ms = (time.perf_counter() - t) * 1e3 / 3
    torch.cuda.synchronize()
    ts, ahead, i = [], True, 0
    while i < repeats:
        n = min(chunk, repeats - i)
        evs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        mark = torch.cuda.Event()
        torch.cuda._sleep(int(min(200.0, 1.0 + 1.5 * host_ms * n) * _cycles_per_ms()))
        mark.record()
        for s, e in evs:
            s.record()
            fn(i)
            e.record()
            i += 1
        ahead = ahead and not mark.query()  # GPU still spinning: every call was queued in time
        torch.cuda.synchronize()
        ts += [s.elapsed_time(e) * 1e3 for s, e in evs]
    return {"median_us": statistics.median(ts), "min_us": min(ts), "max_us": max(ts),
            "repeats": repeats, "cpu_ahead": ahead}


def copy_bandwidth(device: torch.device, nbytes: int = 2 * GIB, repeats: int = 20, warmup: int = 3) -> dict:
    """Device-to-device copy of nbytes (dst.copy_(src) on contiguous same-dtype tensors is one
    cudaMemcpyAsync DtoD); GB/s counts read + write = 2 × nbytes per copy, 1 GB = 1e9 bytes."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(7)
    dst = torch.empty_like(src)
    r = time_calls(lambda i: dst.copy_(src), device, repeats, warmup)
    del src, dst
    if device.type == "cuda":
        torch.cuda.empty_cache()
    gbps = 2 * nbytes / (r["median_us"] * 1e-6) / 1e9
    return {"copy_bytes": nbytes, "bytes_moved": 2 * nbytes, "us": r["median_us"], "gbps": gbps,
            "repeats": r["repeats"], "cpu_ahead": r["cpu_ahead"],
            "method": "dst.copy_(src), uint8, contiguous (cudaMemcpyAsync DtoD); GB/s = 2*bytes/median/1e9"}


def percentiles(xs, ps=(50, 90, 99)) -> dict:
    """Linear interpolation between closest ranks (numpy's default); None when xs is empty."""
    out = {}
    s = sorted(xs)
    for p in ps:
        if not s:
            out[f"p{p}"] = None
            continue
        k = (len(s) - 1) * p / 100
        lo, hi = math.floor(k), math.ceil(k)
        out[f"p{p}"] = s[lo] + (s[hi] - s[lo]) * (k - lo)
    out["mean"] = sum(s) / len(s) if s else None
    return out


def write_json(path: str, obj) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    print(f"wrote {path}")


def command_line() -> str:
    return "python3 " + " ".join(sys.argv)


def print_table(header, rows) -> None:
    cols = [[str(h)] + [str(r[i]) for r in rows] for i, h in enumerate(header)]
    w = [max(len(c) for c in col) for col in cols]
    print("  ".join(h.rjust(w[i]) for i, h in enumerate(header)))
    for r in rows:
        print("  ".join(str(x).rjust(w[i]) for i, x in enumerate(r)))
