#!/usr/bin/env python3
"""Causal prefill attention peers of ch06's prefill kernel (issue 19): PyTorch SDPA on contiguous
K/V and FlashInfer's paged prefill (BatchPrefillWithPagedKVCacheWrapper, page size 16, pages
shuffled), at the Llama-2-7B attention shape, fp16; plus a torch.matmul peak in the same process.

usage: python3 scripts/peer_prefill_attention.py --json-out PATH [--backends fa2,fa3] [--no-flashinfer]

Shapes: B1×L4096 and B8×L2048 with 32 query heads × 128 (MHA), and B8×L2048 GQA 32/8. Every row
is a prompt of L tokens with no cached prefix, causal. FLOPs are FlashAttention's count, the same
as ch06's bench: 4 × B × heads × head_dim × L(L+1)/2. SDPA: the default call (PyTorch picks the
backend; the pick is recorded) and each backend forced alone. FlashInfer 0.5.3 (carried as wheels;
FLASHINFER_CUDA_ARCH_LIST=9.0; its kernels are JIT-compiled on first use, which is not timed):
each of --backends ('fa2': its mma.sync kernels; 'fa3': its Hopper wgmma kernels). Peak: an
8192³ fp16 torch.matmul on random data, the dense ceiling these TFLOP/s are set against.
Timing: gpu_common.time_calls (CUDA events, GPU time only, median).
"""
import argparse
import os
import time
import warnings

import torch
import torch.nn.functional as F

from gpu_common import command_line, machine, pick_device, print_table, time_calls, write_json

SHAPES = [("B1xL4096", 1, 4096, 32, 32), ("B8xL2048", 8, 2048, 32, 32), ("GQA32/8-B8xL2048", 8, 2048, 32, 8)]
D = 128


def flops(b, l, hq):
    return 4.0 * b * hq * D * l * (l + 1) / 2


def matmul_peak(dev, n=8192, repeats=20):
    a = torch.randn(n, n, device=dev, dtype=torch.float16)
    b = torch.randn(n, n, device=dev, dtype=torch.float16)
    c = torch.empty(n, n, device=dev, dtype=torch.float16)
    r = time_calls(lambda i: torch.matmul(a, b, out=c), dev, repeats, 3)
    return {"n": n, "us": r["median_us"], "tflops": 2.0 * n ** 3 / (r["median_us"] * 1e-6) / 1e12,
            "method": "torch.matmul fp16 8192^3 on randn, median of time_calls"}


def sdpa_rows(dev, name, b, l, hq, hkv, repeats):
    q = torch.randn(b, hq, l, D, device=dev, dtype=torch.float16)
    k = torch.randn(b, hkv, l, D, device=dev, dtype=torch.float16)
    v = torch.randn(b, hkv, l, D, device=dev, dtype=torch.float16)
    gqa = {"enable_gqa": True} if hq != hkv else {}
    call = lambda i: F.scaled_dot_product_attention(q, k, v, is_causal=True, **gqa)  # noqa: E731
    out = []
    r = time_calls(call, dev, repeats, 3)
    out.append({"shape": name, "peer": "sdpa", "backend": "default", "us": r["median_us"]})
    from torch.nn.attention import SDPBackend, sdpa_kernel
    for be in ["FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION"]:
        try:
            with sdpa_kernel(getattr(SDPBackend, be)), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = time_calls(call, dev, repeats, 3)
            out.append({"shape": name, "peer": "sdpa", "backend": be.lower(), "us": r["median_us"]})
        except Exception as e:  # a backend that refuses the shape
            out.append({"shape": name, "peer": "sdpa", "backend": be.lower(), "skipped": str(e)[:200]})
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            call(0)
            torch.cuda.synchronize()
        out[0]["kernels"] = sorted({e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA})[:4]
    except Exception:
        pass
    return out


def flashinfer_rows(dev, name, b, l, hq, hkv, backends, repeats, page=16):
    import flashinfer
    pages_per = (l + page - 1) // page
    n_pages = b * pages_per
    g = torch.Generator(device="cpu").manual_seed(0)
    perm = torch.randperm(n_pages, generator=g).to(torch.int32).to(dev)
    kc = torch.randn(n_pages, page, hkv, D, device=dev, dtype=torch.float16)
    vc = torch.randn(n_pages, page, hkv, D, device=dev, dtype=torch.float16)
    q = torch.randn(b * l, hq, D, device=dev, dtype=torch.float16)
    qo_indptr = torch.arange(b + 1, dtype=torch.int32, device=dev) * l
    kv_indptr = torch.arange(b + 1, dtype=torch.int32, device=dev) * pages_per
    last = torch.full((b,), l - (pages_per - 1) * page, dtype=torch.int32, device=dev)
    ws = torch.empty(256 << 20, dtype=torch.uint8, device=dev)
    out = []
    for be in backends:
        try:
            t = time.perf_counter()
            w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(ws, "NHD", backend=be)
            w.plan(qo_indptr, kv_indptr, perm, last, hq, hkv, D, page, causal=True,
                   q_data_type=torch.float16, kv_data_type=torch.float16)
            o = w.run(q, (kc, vc))
            torch.cuda.synchronize()
            jit_s = time.perf_counter() - t
            r = time_calls(lambda i: w.run(q, (kc, vc)), dev, repeats, 3)
            out.append({"shape": name, "peer": "flashinfer", "backend": be, "us": r["median_us"], "first_call_s": jit_s,
                        "finite": bool(torch.isfinite(o).all().item())})
        except Exception as e:
            out.append({"shape": name, "peer": "flashinfer", "backend": be, "skipped": f"{type(e).__name__}: {str(e)[:300]}"})
        print(f"  flashinfer {be} {name}: {out[-1].get('us', out[-1].get('skipped'))}", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json-out", required=True)
    ap.add_argument("--backends", default="fa2,fa3", help="FlashInfer backends to time")
    ap.add_argument("--no-flashinfer", action="store_true")
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    dev = pick_device(False)
    m = machine(dev)
    peak = matmul_peak(dev)
    print(f"{m['card']}: torch.matmul fp16 8192^3 peak {peak['tflops']:.0f} TFLOP/s", flush=True)
    rows = []
    for name, b, l, hq, hkv in SHAPES:
        rows += sdpa_rows(dev, name, b, l, hq, hkv, a.repeats)
        torch.cuda.empty_cache()
        if not a.no_flashinfer:
            rows += flashinfer_rows(dev, name, b, l, hq, hkv, a.backends.split(","), a.repeats)
            torch.cuda.empty_cache()
    for r in rows:
        _, b, l, hq, _ = next(s for s in SHAPES if s[0] == r["shape"])
        r["flops"] = flops(b, l, hq)
        if "us" in r:
            r["tflops"] = r["flops"] / (r["us"] * 1e-6) / 1e12
            r["frac_of_matmul_peak"] = r["tflops"] / peak["tflops"]
    print_table(["shape", "peer", "backend", "us", "TFLOP/s"],
                [[r["shape"], r["peer"], r["backend"], f"{r['us']:.1f}" if "us" in r else "skipped",
                  f"{r['tflops']:.0f}" if "us" in r else "-"] for r in rows])
    write_json(a.json_out, {"machine": m, "command": command_line(), "matmul_peak": peak, "rows": rows,
                            "flashinfer_arch_list": os.environ.get("FLASHINFER_CUDA_ARCH_LIST")})


if __name__ == "__main__":
    main()
