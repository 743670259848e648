#!/usr/bin/env python3
"""Decode attention with torch.nn.functional.scaled_dot_product_attention on contiguous fp16 K/V:
the PyTorch peer of ch06's paged decode kernel (issue 9, Performance a).

usage: python3 scripts/peer_sdpa.py --json-out PATH [--repeats 50] [--shapes B64xL2048,...] [--cpu-smoke]

Per shape: q (B, heads, 1, 128), K and V (B, kv_heads, L, 128), fp16, contiguous; one query token
per sequence attending to all L keys (no mask). The headline `us` is the default call: PyTorch
picks the backend (flash / efficient / cudnn / math) itself; which one it picks is recorded
(`backend`, from torch._fused_sdp_choice, and `kernels`, the CUDA kernel names of one default call
from the profiler). Each backend forced alone is timed too (`backends`), and `best_us` is the
fastest of everything tried. GQA (32 query heads / 8 KV heads) runs with enable_gqa=True, and
also "packed": the 4 query heads of a group become 4 query rows of one KV head
(q.view(B, 8, 4, 128)), which reads each K/V row once per group with no copy.

Bytes: kv_bytes = 2 (K and V) × B × kv_heads × L × 128 × 2 B; q and the output are not counted
(≤ 0.1%). GB/s = kv_bytes / time; frac_of_copy_bw = that ÷ the copy bandwidth measured in this
process (gpu_common.copy_bandwidth). Timing: gpu_common.time_calls (CUDA events, GPU time only,
median), inputs rotated among n_buffers sets when a set is under 4× the 50 MB L2.
"""
import argparse
import warnings

import torch
import torch.nn.functional as F

from gpu_common import command_line, copy_bandwidth, machine, n_buffers, pick_device, print_table, time_calls, write_json

HEAD_DIM = 128
# name, B, L, heads, kv_heads
SHAPES = [("B64xL512", 64, 512, 32, 32), ("B64xL2048", 64, 2048, 32, 32), ("B16xL8192", 16, 8192, 32, 32),
          ("B1xL4096", 1, 4096, 32, 32), ("GQA32/8-B64xL2048", 64, 2048, 32, 8)]
SMOKE_SHAPES = [("smoke-B2xL64", 2, 64, 4, 4), ("smoke-GQA4/2-B3xL33", 3, 33, 4, 2)]
SMOKE_HEAD_DIM = 16


def has_enable_gqa() -> bool:
    try:
        q = torch.zeros(1, 2, 1, 4)
        k = torch.zeros(1, 1, 2, 4)
        F.scaled_dot_product_attention(q, k, k, enable_gqa=True)
        return True
    except TypeError:
        return False


def sdpa_gqa(q, k, v, gqa_mode):
    """(B, Hq, 1, D) × (B, Hkv, L, D) → (B, Hq, 1, D)."""
    hq, hkv = q.shape[1], k.shape[1]
    if hq == hkv:
        return F.scaled_dot_product_attention(q, k, v)
    if gqa_mode == "enable_gqa":
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    return sdpa_packed(q, k, v)


def sdpa_packed(q, k, v):
    """GQA without copying K/V: the group's query heads become query rows of their KV head."""
    b, hq, _, d = q.shape
    hkv = k.shape[1]
    o = F.scaled_dot_product_attention(q.view(b, hkv, hq // hkv, d), k, v)  # (B, Hkv, G, D)
    return o.view(b, hq, 1, d)


def reference(q, k, v):
    """Plain softmax(q kᵀ / √d) v in float32, GQA by repeat_interleave: the smoke test's truth."""
    g = q.shape[1] // k.shape[1]
    k = k.float().repeat_interleave(g, dim=1)
    v = v.float().repeat_interleave(g, dim=1)
    s = (q.float() @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    return torch.softmax(s, dim=-1) @ v


def backend_names():
    """SDPBackend members that can be forced, by name (math last: slow, timed only on CPU)."""
    try:
        from torch.nn.attention import SDPBackend
    except ImportError:
        return {}
    out = {}
    for n in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        if hasattr(SDPBackend, n):
            out[n.lower().replace("_attention", "")] = getattr(SDPBackend, n)
    return out


def forced(backend):
    from torch.nn.attention import sdpa_kernel
    return sdpa_kernel([backend])


def default_choice(q, k, v, gqa):
    """The backend the dispatcher picks for a default call (private API; None if absent)."""
    try:
        from torch.nn.attention import SDPBackend
        kw = {"enable_gqa": True} if gqa else {}
        idx = torch._fused_sdp_choice(q, k, v, None, 0.0, False, **kw)
        for m in SDPBackend.__members__.values():
            if int(m) == int(idx):
                return m.name.lower()
        return str(idx)
    except Exception as e:  # noqa: BLE001 - informational only
        return f"unknown ({type(e).__name__})"


def kernel_names(fn, device):
    """Names of the device kernels one call launches (profiler), for the record."""
    if device.type != "cuda":
        return []
    try:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as p:
            fn()
            torch.cuda.synchronize()
        names = []
        for e in p.events():
            if str(e.device_type).endswith("CUDA") and e.name not in names and "Memcpy" not in e.name:
                names.append(e.name[:120])
        return names
    except Exception as e:  # noqa: BLE001 - informational only
        return [f"profiler failed: {type(e).__name__}: {e}"[:200]]


def run_shape(name, b, l, hq, hkv, d, dev, dtype, a, copy_gbps, gqa_mode, card):
    kv_bytes = 2 * b * hkv * l * d * torch.tensor([], dtype=dtype).element_size()
    nb = n_buffers(kv_bytes, a.cpu_smoke)
    g = torch.Generator(device=dev).manual_seed(0)
    sets = [(torch.randn(b, hq, 1, d, device=dev, dtype=dtype, generator=g),
             torch.randn(b, hkv, l, d, device=dev, dtype=dtype, generator=g),
             torch.randn(b, hkv, l, d, device=dev, dtype=dtype, generator=g)) for _ in range(nb)]
    gqa = hq != hkv

    def call(fn):
        return lambda i: fn(*sets[i % nb])

    variants = {"default": lambda q, k, v: sdpa_gqa(q, k, v, gqa_mode)}
    if gqa:
        variants["packed"] = sdpa_packed
    results, outs = {}, {}
    for vname, fn in variants.items():
        outs[vname] = fn(*sets[0]).float()
        results[vname] = time_calls(call(fn), dev, a.repeats, a.warmup)
    backends = {}
    for bname, be in backend_names().items():
        if bname == "math" and dev.type == "cuda":
            continue  # materialises the scores in fp32; never the one PyTorch picks here
        try:
            with warnings.catch_warnings(record=True) as w, forced(be):
                warnings.simplefilter("always")
                o = sdpa_gqa(*sets[0], gqa_mode).float()
                r = time_calls(call(lambda q, k, v: sdpa_gqa(q, k, v, gqa_mode)), dev, a.repeats, a.warmup)
            backends[bname] = {"us": r["median_us"], "gbps": kv_bytes / (r["median_us"] * 1e-6) / 1e9,
                               "max_abs_diff_vs_default": (o - outs["default"]).abs().max().item()}
        except Exception as e:  # noqa: BLE001 - a backend that cannot run this shape is recorded, not fatal
            why = " | ".join(str(x.message).splitlines()[0][:160] for x in w) or str(e).splitlines()[0][:160]
            backends[bname] = {"unavailable": why}
    ref = reference(*sets[0])
    err = {k: (o - ref).abs().max().item() for k, o in outs.items()}
    us = results["default"]["median_us"]
    gbps = kv_bytes / (us * 1e-6) / 1e9
    tried = {"default": us, **({"packed": results["packed"]["median_us"]} if gqa else {}),
             **{f"forced:{k}": v["us"] for k, v in backends.items() if "us" in v}}
    best = min(tried, key=tried.get)
    rec = {
        "shape": name, "B": b, "L": l, "heads": hq, "kv_heads": hkv, "head_dim": d, "dtype": str(dtype).replace("torch.", ""),
        "us": us, "kv_bytes": kv_bytes, "gbps": gbps, "frac_of_copy_bw": gbps / copy_gbps, "card": card,
        "copy_gbps": copy_gbps,
        "gqa_mode": (gqa_mode if gqa else None),
        "backend": default_choice(*sets[0], gqa and gqa_mode == "enable_gqa"),
        "kernels": kernel_names(lambda: sdpa_gqa(*sets[0], gqa_mode), dev),
        "backends": backends,
        "best_us": tried[best], "best_variant": best,
        "best_frac_of_copy_bw": kv_bytes / (tried[best] * 1e-6) / 1e9 / copy_gbps,
        "max_abs_err_vs_fp32_reference": err,
        "repeats": a.repeats, "buffers_rotated": nb, "cpu_ahead": results["default"]["cpu_ahead"],
    }
    if gqa:
        rec["packed_us"] = results["packed"]["median_us"]
    del sets
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return rec


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json-out", required=True)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--shapes", default="", help="comma-separated subset of: " + ", ".join(s[0] for s in SHAPES))
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny shapes in float32 on the CPU, checked against a reference")
    a = ap.parse_args()
    if a.repeats < 1 or a.warmup < 0:
        ap.error("--repeats must be ≥ 1, --warmup ≥ 0")
    dev = pick_device(a.cpu_smoke)
    shapes, d, dtype = (SMOKE_SHAPES, SMOKE_HEAD_DIM, torch.float32) if a.cpu_smoke else (SHAPES, HEAD_DIM, torch.float16)
    if a.shapes:
        want = a.shapes.split(",")
        unknown = [w for w in want if w not in {s[0] for s in shapes}]
        if unknown:
            ap.error(f"unknown shape(s) {unknown}; known: {[s[0] for s in shapes]}")
        shapes = [s for s in shapes if s[0] in want]
    m = machine(dev)
    bw = copy_bandwidth(dev, (64 << 20) if a.cpu_smoke else (2 << 30))
    gqa_mode = "enable_gqa" if has_enable_gqa() else "packed"
    print(f"SDPA decode attention on {m['card']} (torch {m['torch']}, CUDA {m['cuda']}); "
          f"copy bandwidth {bw['gbps']:.0f} GB/s; GQA via {gqa_mode}")
    recs = []
    for s in shapes:
        r = run_shape(*s, d, dev, dtype, a, bw["gbps"], gqa_mode, m["card"])
        r.update(machine=m, command=command_line(), copy=bw)
        recs.append(r)
    rows = []
    for r in recs:
        forced_txt = " ".join(f"{k}={v['us']:.0f}" if "us" in v else f"{k}=n/a" for k, v in r["backends"].items())
        rows.append([r["shape"], f"{r['us']:.1f}", f"{r['kv_bytes'] / 1e6:.0f}", f"{r['gbps']:.0f}",
                     f"{r['frac_of_copy_bw']:.2f}", r["backend"], f"{r['best_us']:.1f} ({r['best_variant']})", forced_txt])
    print_table(["shape", "us", "KV MB", "GB/s", "of copy", "default picks", "best us", "forced backends (us)"], rows)
    if a.cpu_smoke:
        worst = max(max(r["max_abs_err_vs_fp32_reference"].values()) for r in recs)
        print(f"smoke check: max |SDPA − reference| = {worst:.2e}")
        if worst > 1e-4:
            raise SystemExit("smoke check FAILED")
    else:  # fp16 against the f32 reference: ~1e-4 is normal; far more means a wrong result, not rounding
        bad = [r["shape"] for r in recs if max(r["max_abs_err_vs_fp32_reference"].values()) > 1e-2]
        if bad:
            print(f"WARNING: outputs differ from the f32 reference by more than 1e-2 for {bad}")
    write_json(a.json_out, recs)


if __name__ == "__main__":
    main()
