#!/usr/bin/env python3
"""Standalone check and timing of ch06's decode GEMV (gemv.cu) over its compile-time knobs, on the
GPU machine (torch + nvcc, no Rust): the development harness of the decode-step work (issue 19).

Builds gemv.cu for each variant (GEMV_WARPS warps per block, GEMV_RPW rows per warp, GU loads in
flight per row), loads it through the driver API (ctypes), checks it against a float64 reference
(outputs poisoned with NaN; n = 1..8, odd shapes), then times it (CUDA events, median) on the
Llama-2-7B and TinyLlama projection shapes with weights rotated through more than 4x the L2 so
every weight comes from HBM, as in a decode step, beside cuBLAS (torch.matmul) and the copy
bandwidth of the same card. Last, one 7B layer's four GEMVs x 8 layers replayed as a CUDA graph.
usage (repository root, GPU machine): OUT=dir python3 scripts/gemv_dev.py
  NS=1,2,4,8  the batch rows timed per shape (default 1,8); QUICK=1  today's variant only, no graph
  (the GEMV-vs-cuBLAS crossover that kernels.rs's GEMV_MAX_N is chosen by)"""
import ctypes, json, os, subprocess, itertools
from ctypes import byref, c_void_p, c_int, c_uint, c_char_p
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.environ.get("OUT", "/tmp/out"); os.makedirs(OUT, exist_ok=True)
WORK = os.environ.get("WORK", "/tmp/gemv_dev"); os.makedirs(WORK, exist_ok=True)
dev = "cuda"
torch.zeros(1, device=dev)
cu = ctypes.CDLL("libcuda.so.1")
cu.cuLaunchKernel.argtypes = [c_void_p, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_void_p, c_void_p, c_void_p]
cu.cuModuleLoadData.argtypes = [ctypes.POINTER(c_void_p), c_char_p]
cu.cuModuleGetFunction.argtypes = [ctypes.POINTER(c_void_p), c_void_p, c_char_p]
cu.cuFuncGetAttribute.argtypes = [ctypes.POINTER(c_int), c_int, c_void_p]
KDIR = os.path.join(ROOT, "chapters", "ch06-cuda", "src", "kernels")
SRC = open(os.path.join(KDIR, "common.cuh")).read() + "\n" + open(os.path.join(KDIR, "gemv.cu")).read()
open(os.path.join(WORK, "full.cu"), "w").write(SRC)
MAX_N = 8
# (warps, rows per warp, GU); the first is the kernel before this work.
VARIANTS = [(8, 1, 4), (8, 1, 8), (8, 1, 16), (4, 1, 8), (4, 2, 4), (4, 2, 8), (8, 2, 4), (2, 2, 8), (4, 4, 4)]
QUICK = os.environ.get("QUICK") == "1"
NS = [int(x) for x in os.environ.get("NS", "1,8").split(",")]
if QUICK:
    VARIANTS = VARIANTS[:1]

def ck(r, what):
    if r != 0:
        raise RuntimeError(f"{what}: CUresult {r}")

class Kernel:
    def __init__(self, v):
        self.v = v
        warps, rpw, gu = v
        cub = os.path.join(WORK, f"w{warps}_r{rpw}_u{gu}.cubin")
        cmd = ["/usr/local/cuda/bin/nvcc", "-cubin", "-arch=sm_90", "-O3", "--std=c++17", "-DDTYPE=f16", f"-DGEMV_MAX_N={MAX_N}",
               f"-DGEMV_WARPS={warps}", f"-DGEMV_RPW={rpw}", f"-DGU={gu}", "-o", cub, os.path.join(WORK, "full.cu")]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-2000:])
        self.mod = c_void_p(); ck(cu.cuModuleLoadData(byref(self.mod), open(cub, "rb").read()), "load")
        self.f = c_void_p(); ck(cu.cuModuleGetFunction(byref(self.f), self.mod, b"gemv"), "fn")
        reg = c_int(); cu.cuFuncGetAttribute(byref(reg), 4, self.f); self.regs = reg.value

    def __call__(self, w, x, y):
        n, k = x.shape; o = w.shape[0]
        warps, rpw, _ = self.v
        s = c_void_p(torch.cuda.current_stream().cuda_stream)
        args = [ctypes.c_uint64(w.data_ptr()), ctypes.c_uint64(x.data_ptr()), ctypes.c_uint64(y.data_ptr()), c_int(n), c_int(k), c_int(o)]
        p = (c_void_p * len(args))(*[ctypes.cast(byref(a), c_void_p) for a in args])
        ck(cu.cuLaunchKernel(self.f, (o + warps * rpw - 1) // (warps * rpw), 1, 1, 32 * warps, 1, 1, 0, s, p, None), "launch")

def timeit(fn, reps=40, warm=5):
    for _ in range(warm): fn()
    torch.cuda.synchronize(); ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); b.synchronize(); ts.append(a.elapsed_time(b) * 1e3)
    ts.sort(); return ts[len(ts) // 2]

def timeit_batch(fn, calls=20, reps=15):
    """Per-call device time of `calls` launches back to back between two events: the host's launch
    time overlaps the GPU's work, so a slow launcher (ctypes here) is not charged its launch gaps."""
    fn(); torch.cuda.synchronize(); ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(calls): fn()
        b.record(); b.synchronize(); ts.append(a.elapsed_time(b) * 1e3 / calls)
    ts.sort(); return ts[len(ts) // 2]

def copy_gbps():
    a = torch.empty(1 << 29, dtype=torch.uint8, device=dev); b = torch.empty_like(a)
    us = timeit(lambda: b.copy_(a), reps=20)
    return 2 * a.numel() / us / 1e3

def rotated(o, k, n):
    """Enough distinct weight copies that a round trip through them is > 4x the 50 MB L2."""
    copies = max(2, -(-200_000_000 // (o * k * 2)))
    ws = [torch.randn(o, k, dtype=torch.half, device=dev) * 0.02 for _ in range(copies)]
    x = torch.randn(n, k, dtype=torch.half, device=dev)
    return ws, x

def main():
    card = torch.cuda.get_device_name()
    print(card, flush=True)
    kernels = []
    for v in VARIANTS:
        try:
            kernels.append(Kernel(v))
        except RuntimeError as e:
            print(f"BUILD {v} failed: {e}")
    bw = copy_gbps()
    print(f"copy bandwidth {bw:.0f} GB/s (bytes read + written)", flush=True)
    res = {"card": card, "copy_gbps": bw, "checks": [], "shapes": [], "layers": []}
    bad = 0
    for (o, k), n in itertools.product([(1000 + 3, 4096 + 8), (12288, 4096), (37, 256)], range(1, MAX_N + 1)):
        w = torch.randn(o, k, dtype=torch.half, device=dev); x = torch.randn(n, k, dtype=torch.half, device=dev)
        ref = x.double() @ w.double().T
        for kern in kernels:
            y = torch.full((n, o), float("nan"), dtype=torch.half, device=dev); kern(w, x, y); torch.cuda.synchronize()
            err = ((y.double() - ref).norm() / ref.norm()).item()
            if not err < 2e-3:
                bad += 1; print(f"CHECK FAIL {kern.v} {o}x{k} n{n}: {err:.2e}")
    print(f"checks: {bad} failures", flush=True)
    res["check_failures"] = bad
    shapes = [("7B qkv", 12288, 4096), ("7B o", 4096, 4096), ("7B gate_up", 22016, 4096), ("7B down", 4096, 11008), ("7B lm_head", 32000, 4096),
              ("1B qkv", 2560, 2048), ("1B o", 2048, 2048), ("1B gate_up", 11264, 2048), ("1B down", 2048, 5632)]
    for name, o, k in shapes:
        for n in NS:
            ws, x = rotated(o, k, n)
            y = torch.empty(n, o, dtype=torch.half, device=dev)
            it = itertools.cycle(ws)
            wb = o * k * 2
            row = {"shape": name, "out": o, "in": k, "n": n, "weight_bytes": wb}
            cub = timeit_batch(lambda: torch.matmul(x, next(it).T, out=y))
            row["cublas_us"] = cub
            line = f"{name} {o}x{k} n{n}: cuBLAS {cub:.1f} us {wb / cub / 1e3:.0f} GB/s"
            row["variants"] = []
            for kern in kernels:
                us = timeit_batch(lambda: kern(next(it), x, y))
                row["variants"].append({"v": kern.v, "us": us, "regs": kern.regs})
            best = min(row["variants"], key=lambda r: r["us"])
            base = row["variants"][0]
            print(f"{line}; today {base['us']:.1f} us {wb / base['us'] / 1e3:.0f} GB/s; best {best['v']} {best['us']:.1f} us {wb / best['us'] / 1e3:.0f} GB/s ({100 * wb / best['us'] / 1e3 / bw:.0f}% of copy bandwidth)", flush=True)
            for r in row["variants"]:
                print(f"    {r['v']}: {r['us']:.1f} us {wb / r['us'] / 1e3:.0f} GB/s, {r['regs']} regs")
            res["shapes"].append(row); del ws
        torch.cuda.empty_cache()
    if QUICK:
        json.dump(res, open(os.path.join(OUT, "gemv_dev.json"), "w"), indent=1)
        return
    for n in (16, 32, 64):  # cuBLAS past the GEMV's rows: how close to the weight-read floor
        for name, o, k in shapes[:4] + shapes[5:]:
            ws, x = rotated(o, k, n); y = torch.empty(n, o, dtype=torch.half, device=dev); it = itertools.cycle(ws)
            us = timeit(lambda: torch.matmul(x, next(it).T, out=y))
            print(f"cuBLAS {name} n{n}: {us:.1f} us, {o * k * 2 / us / 1e3:.0f} GB/s", flush=True)
            res["shapes"].append({"shape": name, "out": o, "in": k, "n": n, "weight_bytes": o * k * 2, "cublas_us": us}); del ws
        torch.cuda.empty_cache()
    # Eight 7B layers' four GEMVs back to back, one CUDA graph: gaps between launches included.
    L = 8
    mats = [(12288, 4096), (4096, 4096), (22016, 4096), (4096, 11008)]
    ws = [[torch.randn(o, k, dtype=torch.half, device=dev) * 0.02 for o, k in mats] for _ in range(L)]
    xs = {k: torch.randn(1, k, dtype=torch.half, device=dev) for k in (4096, 11008)}
    ys = {o: torch.empty(1, o, dtype=torch.half, device=dev) for o, _ in mats}
    total = sum(o * k * 2 for o, k in mats) * L
    runners = [("cuBLAS", lambda w: torch.matmul(xs[w.shape[1]], w.T, out=ys[w.shape[0]]))] + [(str(k.v), (lambda kk: lambda w: kk(w, xs[w.shape[1]], ys[w.shape[0]]))(k)) for k in kernels]
    for name, fn in runners:
        s = torch.cuda.Stream()
        with torch.cuda.stream(s):
            fn(ws[0][0]); torch.cuda.synchronize()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, stream=s):
                for layer in ws:
                    for w in layer:
                        fn(w)
        us = timeit(g.replay, reps=20)
        print(f"graph of {L} layers x 4 GEMVs (n=1), {name}: {us:.0f} us, {total / us / 1e3:.0f} GB/s, {100 * total / us / 1e3 / bw:.0f}% of copy bandwidth", flush=True)
        res["layers"].append({"variant": name, "us": us, "bytes": total})
    json.dump(res, open(os.path.join(OUT, "gemv_dev.json"), "w"), indent=1)

if __name__ == "__main__":
    main()
