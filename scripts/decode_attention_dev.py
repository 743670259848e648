#!/usr/bin/env python3
"""Standalone check and timing of ch06's paged decode attention kernel (paged_attention.cu) over
its compile-time shape, on the GPU machine (torch + nvcc, no Rust): the development harness of
the GQA decode work (issue 19).

Builds paged_attention.cu for each variant (GROUP query heads per thread block, PART positions per
partition, UNROLL rows in flight) with nvcc, loads it through the driver API (ctypes), checks it
against a float64 torch reference on shuffled paged K/V (outputs poisoned with NaN; ragged context
lengths, block size 16), then times attention + partition merge (CUDA events, median of 30) beside
torch SDPA on contiguous K/V (enable_gqa for GQA) at B64xL2048 GQA 32/8, B64xL2048 MHA and
B1xL4096 MHA, head_dim 128, f16. GB/s = K/V bytes read / time.
usage (repository root, GPU machine): OUT=dir python3 scripts/decode_attention_dev.py"""
import ctypes, json, math, os, subprocess, sys
from ctypes import byref, c_void_p, c_int, c_uint, c_char_p
import torch
import torch.nn.functional as F

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.environ.get("OUT", "/tmp/out"); os.makedirs(OUT, exist_ok=True)
WORK = os.environ.get("WORK", "/tmp/decode_attention_dev"); os.makedirs(WORK, exist_ok=True)
dev = "cuda"
torch.zeros(1, device=dev)
cu = ctypes.CDLL("libcuda.so.1")
cu.cuLaunchKernel.argtypes = [c_void_p, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_void_p, c_void_p, c_void_p]
cu.cuModuleLoadData.argtypes = [ctypes.POINTER(c_void_p), c_char_p]
cu.cuModuleGetFunction.argtypes = [ctypes.POINTER(c_void_p), c_void_p, c_char_p]
cu.cuFuncGetAttribute.argtypes = [ctypes.POINTER(c_int), c_int, c_void_p]

KDIR = os.path.join(ROOT, "chapters", "ch06-cuda", "src", "kernels")
SRC = open(os.path.join(KDIR, "common.cuh")).read() + "\n" + open(os.path.join(KDIR, "paged_attention.cu")).read()
open(os.path.join(WORK, "full.cu"), "w").write(SRC)
BS = 16

def ck(r, what):
    if r != 0:
        raise RuntimeError(f"{what}: CUresult {r}")

def variants(group):
    """(kind, GROUP, PART, UNROLL, extra -D pairs) to try for a query-head group of `group`; the
    first is today's choice (kernels.rs group_chunk, PART 512), "tc" the tensor-core kernel (extra:
    KU = key tiles in flight per warp, TC_MIN_BLOCKS = blocks per SM the registers must allow)."""
    g0 = min(group, 8)
    out = [("tc" if g0 >= 2 else "cc", g0, 512, 8, ())]
    if g0 >= 2:
        for mb, ku, part in ((4, 4, 512), (4, 4, 256), (5, 4, 512), (4, 2, 512), (5, 2, 512), (6, 2, 512)):
            out.append(("tc", g0, part, 8, (("TC_MIN_BLOCKS", mb), ("KU", ku))))
        out.append(("tc", g0, 256, 8, ()))
    else:
        out.append(("tc", g0, 512, 8, ()))
    return out

def build(D, kind, g, part, un, extra):
    tag = f"d{D}_{kind}_g{g}_p{part}_u{un}" + "".join(f"_{k}{v}" for k, v in extra)
    cub = os.path.join(WORK, tag + ".cubin")
    tc = ["-DDECODE_TC=1"] if kind == "tc" else []
    cmd = ["/usr/local/cuda/bin/nvcc", "-cubin", "-arch=sm_90", "-O3", "--std=c++17", "-Xptxas", "-v", "-DDTYPE=f16", *tc,
           f"-DHEAD_DIM={D}", f"-DGROUP={g}", f"-DPART={part}", f"-DUNROLL={un}", *[f"-D{k}={v}" for k, v in extra],
           "-o", cub, os.path.join(WORK, "full.cu")]
    return tag, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), cub

class Kernel:
    def __init__(self, cub, D, kind, g, part, *_):
        self.mod = c_void_p(); ck(cu.cuModuleLoadData(byref(self.mod), open(cub, "rb").read()), "load")
        name = b"paged_attention_tc" if kind == "tc" else b"paged_attention"
        self.attn = c_void_p(); ck(cu.cuModuleGetFunction(byref(self.attn), self.mod, name), "fn")
        self.red = c_void_p(); ck(cu.cuModuleGetFunction(byref(self.red), self.mod, b"paged_attention_reduce"), "fn")
        r = c_int(); cu.cuFuncGetAttribute(byref(r), 4, self.attn); self.regs = r.value
        self.D, self.g, self.part, self.nt = D, g, part, (128 if kind == "tc" else max(D, 128))

    def __call__(self, c, out):
        H, HKV, n, D = c["H"], c["HKV"], c["n"], self.D
        mp = (c["max_ctx"] + self.part - 1) // self.part
        if "po" not in c or c["po"].shape[2] != mp:
            c["po"] = torch.empty(n, H, mp, D, dtype=torch.float32, device=dev)
            c["pml"] = torch.empty(n, H, mp, 2, dtype=torch.float32, device=dev)
        s = c_void_p(torch.cuda.current_stream().cuda_stream)
        p = lambda *xs: (c_void_p * len(xs))(*[ctypes.cast(byref(x), c_void_p) for x in xs])
        ptr = lambda t: ctypes.c_uint64(t.data_ptr())
        a = [ptr(c["q"]), ptr(c["kc"]), ptr(c["vc"]), ptr(c["tables"]), ptr(c["rows"]), ptr(c["ctx"]), ptr(c["po"]), ptr(c["pml"]),
             c_int(H), c_int(HKV), c_int(BS), c_int(c["max_blocks"]), c_int(mp), c_int(self.part), ctypes.c_float(1 / math.sqrt(D)),
             ptr(out), ctypes.c_uint64(0)]  # out, done = null: the merge is the reduce launch below
        ck(cu.cuLaunchKernel(self.attn, n, H // self.g, mp, self.nt, 1, 1, 0, s, p(*a), None), "attn")
        b = [ptr(c["po"]), ptr(c["pml"]), ptr(c["ctx"]), ptr(out), c_int(H), c_int(mp), c_int(self.part)]
        ck(cu.cuLaunchKernel(self.red, n, H, 1, D, 1, 1, 0, s, p(*b), None), "reduce")

def make_case(ctxs, H, HKV, seed, D):
    g = torch.Generator(device="cpu").manual_seed(seed)
    mb = (max(ctxs) + BS - 1) // BS
    nb = len(ctxs) * mb + 3
    kc = torch.randn(nb * BS, HKV, D, generator=g).half().to(dev)
    vc = torch.randn(nb * BS, HKV, D, generator=g).half().to(dev)
    tables = torch.randperm(nb, generator=g)[: len(ctxs) * mb].int().view(len(ctxs), mb).to(dev)
    q = torch.randn(len(ctxs), H, D, generator=g).half().to(dev)
    return dict(D=D, H=H, HKV=HKV, n=len(ctxs), kc=kc, vc=vc, tables=tables, max_blocks=mb, q=q, ctxs=ctxs, max_ctx=max(ctxs),
                rows=torch.arange(len(ctxs), dtype=torch.int32, device=dev), ctx=torch.tensor(ctxs, dtype=torch.int32, device=dev))

def reference(c):
    H, HKV, D = c["H"], c["HKV"], c["D"]
    out = []
    for i, L in enumerate(c["ctxs"]):
        ps = torch.arange(L, device=dev)
        slots = c["tables"][i][ps // BS].long() * BS + ps % BS
        K = c["kc"][slots].double().repeat_interleave(H // HKV, 1).transpose(0, 1)  # H L D
        V = c["vc"][slots].double().repeat_interleave(H // HKV, 1).transpose(0, 1)
        s = torch.einsum("hd,hld->hl", c["q"][i].double(), K) / math.sqrt(D)
        out.append(torch.einsum("hl,hld->hd", torch.softmax(s, -1), V))
    return torch.stack(out)

def timeit(fn, reps=30, warm=5):
    for _ in range(warm): fn()
    torch.cuda.synchronize(); ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); b.synchronize(); ts.append(a.elapsed_time(b) * 1e3)
    ts.sort(); return ts[len(ts) // 2]

def sdpa_us(B, L, H, HKV, D):
    q = torch.randn(B, H, 1, D, dtype=torch.half, device=dev)
    k = torch.randn(B, HKV, L, D, dtype=torch.half, device=dev); v = torch.randn_like(k)
    kw = {"enable_gqa": True} if H != HKV else {}
    return timeit(lambda: F.scaled_dot_product_attention(q, k, v, **kw))

def main():
    print(torch.cuda.get_device_name(), flush=True)
    shapes = [("B64xL2048 GQA32/8", 64, 2048, 32, 8, 128), ("B64xL2048", 64, 2048, 32, 32, 128), ("B1xL4096", 1, 4096, 32, 32, 128),
              ("B16xL8192 GQA32/8", 16, 8192, 32, 8, 128), ("B1xL4096 GQA32/8", 1, 4096, 32, 8, 128),
              ("B32xL1024 GQA32/4 d64 (TinyLlama)", 32, 1024, 32, 4, 64), ("B1xL2048", 1, 2048, 32, 32, 128)]
    groups = {(D, H // HKV) for _, _, _, H, HKV, D in shapes} | {(128, 8)}
    builds = {}
    for D, grp in sorted(groups):
        for v in variants(grp):
            builds[(D,) + v] = build(D, *v)
    kernels = {}
    for key, (tag, proc, cub) in builds.items():
        log = proc.communicate()[0]
        open(os.path.join(OUT, "builds.log"), "a").write(f"==== {tag}\n{log}")
        if proc.returncode != 0:
            print(f"BUILD {tag} failed:\n{log[-2000:]}"); continue
        kernels[key] = Kernel(cub, *key[:4])
    results = {"card": torch.cuda.get_device_name(), "rows": []}
    # Correctness first: every variant against float64 on ragged contexts.
    bad = 0
    for D, H, HKV in ((128, 32, 8), (128, 32, 32), (128, 8, 1), (64, 32, 4), (64, 32, 32)):
        c = make_case([1, 17, 511, 512, 513, 1500, 2100, 33, 8, 16], H, HKV, seed=H + HKV + D, D=D)
        ref = reference(c)
        for key, k in kernels.items():
            if key[0] != D or key[2] != min(H // HKV, 8):
                continue
            out = torch.full_like(c["q"], float("nan")); k(c, out); torch.cuda.synchronize()
            err = ((out.double() - ref).norm() / ref.norm()).item()
            ok = err < 2e-3
            bad += not ok
            print(f"CHECK {'ok' if ok else 'FAIL'} {key} H{H}/{HKV}: rel err {err:.2e}", flush=True)
    print(f"checks: {bad} failures", flush=True)
    for name, B, L, H, HKV, D in shapes:
        c = make_case([L] * B, H, HKV, seed=B + L, D=D)
        out = torch.empty_like(c["q"])
        sd = sdpa_us(B, L, H, HKV, D)
        kv_bytes = 2 * B * L * HKV * D * 2
        rows = []
        for key, k in kernels.items():
            if key[0] != D or key[2] != min(H // HKV, 8):
                continue
            us = timeit(lambda: k(c, out))
            rows.append((us, key[1:], k.regs))
        rows.sort()
        base = next(r for r in rows if r[1] == variants(H // HKV)[0])
        print(f"{name}: SDPA {sd:.1f} us ({kv_bytes / sd / 1e3:.0f} GB/s); today's {base[1]} {base[0]:.1f} us ({sd / base[0]:.2f}x SDPA)", flush=True)
        for us, v, regs in rows:
            print(f"   {v}: {us:.1f} us, {kv_bytes / us / 1e3:.0f} GB/s, {sd / us:.2f}x SDPA, {regs} regs", flush=True)
        results["rows"].append(dict(shape=name, sdpa_us=sd, kv_bytes=kv_bytes, variants=[dict(kind=v[0], group=v[1], part=v[2], unroll=v[3], extra=dict(v[4]), us=us, regs=r) for us, v, r in rows]))
    json.dump(results, open(os.path.join(OUT, "decode_attention_dev.json"), "w"), indent=1)

if __name__ == "__main__":
    main()
