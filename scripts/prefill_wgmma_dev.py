#!/usr/bin/env python3
"""Standalone check and timing of ch06's prefill attention kernels on paged K/V, on the GPU machine
(torch + nvcc, no Rust): the development harness of prefill_attention_wgmma (issue 19).

Builds each variant of VARIANTS from chapters/ch06-cuda/src/kernels/{common.cuh,prefill_attention.cu}
with nvcc (-gencode arch=compute_90a,code=sm_90a, cubin: ptxas report, SASS counts of HGMMA/HMMA/
LDL/STL) and the first one also with NVRTC exactly as chapter 6 compiles it (--gpu-architecture=
sm_90a, PTX loaded by the driver); loads them through the driver API (ctypes); checks every one
against a float64 torch reference on fresh random paged inputs (outputs poisoned with NaN; GQA 4
and 6 and MHA, block sizes 16, 5, 7, cached prefixes up to 450, f16/bf16, head_dim 128 and 64) and
at B1xL4096 against float32 SDPA; then times f16 head_dim 128 at B1xL4096, B8xL2048 and GQA 32/8
B8xL2048 (page 16, shuffled) beside the mma.sync kernel and torch SDPA on contiguous K/V (CUDA
events, median of 20). TFLOP/s = 4*B*H*D*L(L+1)/2 / time (peer_prefill_attention.py's count).
usage (repository root, GPU machine): OUT=dir bash scripts/gpu_prefill_wgmma.sh"""
import ctypes, glob, json, math, os, subprocess, sys, time
from ctypes import byref, c_void_p, c_int, c_uint, c_size_t, c_char_p
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.environ.get("OUT", "/tmp/out")
os.makedirs(OUT, exist_ok=True)
torch.backends.cuda.matmul.allow_tf32 = False
dev = "cuda"
torch.zeros(1, device=dev)
cu = ctypes.CDLL("libcuda.so.1")
cu.cuLaunchKernel.argtypes = [c_void_p, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_void_p, c_void_p, c_void_p]
cu.cuModuleLoadData.argtypes = [ctypes.POINTER(c_void_p), c_char_p]
cu.cuModuleGetFunction.argtypes = [ctypes.POINTER(c_void_p), c_void_p, c_char_p]
cu.cuFuncSetAttribute.argtypes = [c_void_p, c_int, c_int]
cu.cuFuncGetAttribute.argtypes = [ctypes.POINTER(c_int), c_int, c_void_p]

def ck(r, what):
    if r != 0:
        raise RuntimeError(f"{what}: CUresult {r}")

KDIR = os.path.join(HERE, "..", "chapters", "ch06-cuda", "src", "kernels")
SRC = open(os.path.join(KDIR, "common.cuh")).read() + "\n" + open(os.path.join(KDIR, "prefill_attention.cu")).read()
HERE = os.environ.get("WORK", "/tmp/prefill_wgmma_dev")  # builds go here
os.makedirs(HERE, exist_ok=True)
open(os.path.join(HERE, "full.cu"), "w").write(SRC)

# name: (kind, defines)  kind wgmma → rows = 64*NWG, threads = 128*NWG
VARIANTS = {  # name: defines; the first is the engine's (prefill::DEFAULT_WGMMA)
    "wg3_k64_s2_seq": dict(NWG=3, WBK=64, STAGES=2, OVERLAP=0),
    "wg3_k64_s3_ov": dict(NWG=3, WBK=64, STAGES=3, OVERLAP=1),
    "wg2_k128_s3_ov": dict(NWG=2, WBK=128, STAGES=3, OVERLAP=1),
    "wg2_k128_s2_seq": dict(NWG=2, WBK=128, STAGES=2, OVERLAP=0),
    "wg1_k128_s2_seq": dict(NWG=1, WBK=128, STAGES=2, OVERLAP=0),
}
DEFAULT = "wg3_k64_s2_seq"
TC = dict(NWARPS=8, MT=1, BK=64)

def smem_of(kind, d, D):
    if kind == "tc":
        return (16 * d["NWARPS"] * d["MT"] + 4 * d["BK"]) * (D + 8) * 2
    return (64 * d["NWG"] + 2 * d["STAGES"] * d["WBK"]) * D * 2 + 1024

def defs_of(kind, d, dtype, D):
    base = {"DTYPE": dtype, "HEAD_DIM": D}
    base.update({"WGMMA": 1} if kind == "wgmma" else {"TENSOR_CORES": 1})
    base.update(d)
    return base

def nvcc(tag, defs):
    cub = os.path.join(HERE, f"{tag}.cubin")
    cmd = ["/usr/local/cuda/bin/nvcc", "-cubin", "-gencode=arch=compute_90a,code=sm_90a", "-O3", "--std=c++17", "-Xptxas", "-v",
           *[f"-D{k}={v}" for k, v in defs.items()], "-o", cub, os.path.join(HERE, "full.cu")]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), cub

def nvrtc_ptx(defs):
    lib = ctypes.CDLL(sorted(glob.glob("/usr/local/cuda/lib64/libnvrtc.so*"))[-1])
    prog = c_void_p()
    assert lib.nvrtcCreateProgram(byref(prog), SRC.encode(), b"prefill_attention.cu", 0, None, None) == 0
    opts = [f"-D{k}={v}".encode() for k, v in defs.items()] + [b"--gpu-architecture=sm_90a", b"--std=c++17", b"--include-path=/usr/local/cuda/include"]
    r = lib.nvrtcCompileProgram(prog, len(opts), (c_char_p * len(opts))(*opts))
    n = c_size_t(); lib.nvrtcGetProgramLogSize(prog, byref(n)); log = ctypes.create_string_buffer(n.value); lib.nvrtcGetProgramLog(prog, log)
    if r != 0:
        raise RuntimeError("NVRTC: " + log.value.decode()[-3000:])
    lib.nvrtcGetPTXSize(prog, byref(n)); ptx = ctypes.create_string_buffer(n.value); lib.nvrtcGetPTX(prog, ptx)
    return ptx.raw, log.value.decode()

class Kernel:
    def __init__(self, image, kind, d, D, fname):
        self.image = image
        self.mod = c_void_p(); ck(cu.cuModuleLoadData(byref(self.mod), image), "cuModuleLoadData")
        self.fn = c_void_p(); ck(cu.cuModuleGetFunction(byref(self.fn), self.mod, fname.encode()), "cuModuleGetFunction")
        self.smem = smem_of(kind, d, D)
        ck(cu.cuFuncSetAttribute(self.fn, 8, self.smem), "raise smem")
        self.rows = 64 * d["NWG"] if kind == "wgmma" else 16 * d["NWARPS"] * d["MT"]
        self.threads = 128 * d["NWG"] if kind == "wgmma" else 32 * d["NWARPS"]
        regs = c_int(); cu.cuFuncGetAttribute(byref(regs), 4, self.fn); self.regs = regs.value
        loc = c_int(); cu.cuFuncGetAttribute(byref(loc), 3, self.fn); self.local = loc.value
        self.D = D

    def __call__(self, c, out):
        H, HKV = c["H"], c["HKV"]
        vals = [ctypes.c_uint64(t.data_ptr()) for t in (c["q"], c["kc"], c["vc"], c["tables"], c["seq_start"], c["pos"], out)]
        vals += [ctypes.c_int32(x) for x in (H, HKV, c["bs"], c["max_blocks"])] + [ctypes.c_float(math.log2(math.e) / math.sqrt(self.D))]
        params = (c_void_p * len(vals))(*[ctypes.cast(byref(v), c_void_p) for v in vals])
        gx = (c["max_q"] + self.rows - 1) // self.rows
        ck(cu.cuLaunchKernel(self.fn, gx, H, c["nseq"], self.threads, 1, 1, self.smem, c_void_p(torch.cuda.current_stream().cuda_stream), params, None), "launch")

def make_case(seqs, H, HKV, D, bs, dtype, seed, shuffle=True):
    g = torch.Generator(device="cpu").manual_seed(seed)
    ctx_max = max(l + p for l, p in seqs)
    max_blocks = (ctx_max + bs - 1) // bs
    nb = len(seqs) * max_blocks + 5
    kc = torch.randn(nb * bs, HKV, D, generator=g).to(dtype).to(dev)
    vc = torch.randn(nb * bs, HKV, D, generator=g).to(dtype).to(dev)
    perm = torch.randperm(nb, generator=g) if shuffle else torch.arange(nb)
    tables = perm[: len(seqs) * max_blocks].to(torch.int32).view(len(seqs), max_blocks).to(dev)
    seq_start, pos = [0], []
    for l, p in seqs:
        pos += list(range(p, p + l)); seq_start.append(len(pos))
    n = len(pos)
    q = torch.randn(n, H, D, generator=g).to(dtype).to(dev)
    return dict(seqs=seqs, H=H, HKV=HKV, D=D, bs=bs, kc=kc, vc=vc, tables=tables, max_blocks=max_blocks, q=q,
                seq_start=torch.tensor(seq_start, dtype=torch.int32, device=dev), pos=torch.tensor(pos, dtype=torch.int32, device=dev),
                nseq=len(seqs), max_q=max(l for l, _ in seqs), n=n)

def reference(c):
    H, HKV, D, bs = c["H"], c["HKV"], c["D"], c["bs"]
    outs = []
    st = c["seq_start"].tolist()
    for s, (l, p) in enumerate(c["seqs"]):
        ctx = l + p
        ps = torch.arange(ctx, device=dev)
        slots = c["tables"][s][ps // bs].long() * bs + ps % bs
        K = c["kc"][slots].double().repeat_interleave(H // HKV, dim=1).transpose(0, 1)  # H ctx D
        V = c["vc"][slots].double().repeat_interleave(H // HKV, dim=1).transpose(0, 1)
        Q = c["q"][st[s]:st[s + 1]].double().transpose(0, 1)  # H l D
        o = torch.empty(H, l, D, dtype=torch.float64, device=dev)
        for h0 in range(0, H, 4):
            sc = Q[h0:h0 + 4] @ K[h0:h0 + 4].transpose(1, 2) / math.sqrt(D)
            mask = ps[None, :] > (p + torch.arange(l, device=dev))[:, None]
            sc.masked_fill_(mask, float("-inf"))
            o[h0:h0 + 4] = torch.softmax(sc, -1) @ V[h0:h0 + 4]
        outs.append(o.transpose(0, 1))
    return torch.cat(outs)

def check(k, c, ref, tag, verbose=False):
    out = torch.full_like(c["q"], float("nan"))
    k(c, out); torch.cuda.synchronize()
    o = out.double()
    err = ((o - ref).norm() / ref.norm()).item()
    nan = (~torch.isfinite(o)).sum().item()
    extra = ""
    if not (err < 1e-2) or nan:
        D = c["D"]
        cols = [((o[..., i:i + 64] - ref[..., i:i + 64]).norm() / ref[..., i:i + 64].norm()).item() for i in range(0, D, 64)]
        st = c["seq_start"].tolist()
        rows = []
        for s in range(c["nseq"]):
            a, b = st[s], st[s + 1]
            rows.append(f"{c['seqs'][s]}:{((o[a:b] - ref[a:b]).norm() / ref[a:b].norm()).item():.1e}")
        r64 = []
        for r in range(0, min(c['n'], 512), 64):
            r64.append(f"{((o[r:r+64] - ref[r:r+64]).norm() / ref[r:r+64].norm()).item():.1e}")
        extra = f" | colblocks {['%.1e' % x for x in cols]} | per seq {' '.join(rows)} | rows/64 {' '.join(r64)}"
    if extra or verbose:
        print(f"CHECK {tag}: rel err {err:.2e} non-finite {nan}{extra}", flush=True)
    return err, nan

def timeit(fn, reps=20, warm=3):
    for _ in range(warm): fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); b.synchronize(); ts.append(a.elapsed_time(b) * 1e3)
    ts.sort(); return ts[len(ts) // 2]

def main():
    names = sys.argv[1:] or list(VARIANTS)
    print(torch.cuda.get_device_name(), "cc", torch.cuda.get_device_capability(), flush=True)
    os.system("nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv")
    # Builds, in parallel.
    jobs = {}
    for n in names:
        jobs[(n, "f16", 128)] = nvcc(f"{n}_f16_128", defs_of("wgmma", VARIANTS[n], "f16", 128))
    for n in [n for n in names if not n.startswith("abl")]:
        for dt, D in [("bf16", 128), ("f16", 64), ("bf16", 64)][: 3 if n in ("wg3_k64_s2_seq", "wg3_k64_s3_ov", "wg2_k128_s3_ov", "wg2_k128_s2_seq") else 1]:
            jobs[(n, dt, D)] = nvcc(f"{n}_{dt}_{D}", defs_of("wgmma", VARIANTS[n], dt, D))
    jobs[("tc", "f16", 128)] = nvcc("tc_f16_128", defs_of("tc", TC, "f16", 128))
    kernels = {}
    for key, (p, cub) in jobs.items():
        log = p.communicate()[0]
        tag = "_".join(map(str, key))
        open(os.path.join(OUT, "builds.log"), "a").write(f"==== {tag}\n" + log)
        rep = [l for l in log.splitlines() if ("wgmma" in l and "Function properties" not in l) or "registers" in l or "error" in l.lower() or "warning" in l.lower() or "spill" in l]
        rep = [l for l in rep if "90 registers" not in l and "72 registers" not in l and "stack frame" not in l and "Compiling entry" not in l]
        print(f"BUILD {tag}: rc {p.returncode} | " + " | ".join(x.replace("ptxas info    : ", "") for x in rep[-6:]), flush=True)
        if p.returncode != 0:
            print(log[-4000:]); continue
        sass = subprocess.run(["/usr/local/cuda/bin/cuobjdump", "-sass", cub], capture_output=True, text=True).stdout
        if key[0] == DEFAULT and key[1] == "f16": open(os.path.join(OUT, f"sass_{tag}.txt"), "w").write(sass)
        fn = "prefill_attention_tc" if key[0] == "tc" else "prefill_attention_wgmma"
        # count only inside the kernel's function
        part = sass.split("Function : " + fn)[1].split("Function : ")[0] if ("Function : " + fn) in sass else ""
        cnt = {op: part.count(op) for op in ["HGMMA", "HMMA", "LDL", "STL", "BAR.SYNC", "WARPGROUP.ARRIVE", "WARPGROUP.DEPBAR", "MUFU.EX2"]}
        if key[1] == "f16" and key[2] == 128: print(f"SASS {tag}: {cnt}", flush=True)
        kind = "tc" if key[0] == "tc" else "wgmma"
        d = TC if kind == "tc" else VARIANTS[key[0]]
        try:
            kernels[key] = Kernel(open(cub, "rb").read(), kind, d, key[2], fn)
            print(f"  regs {kernels[key].regs} local {kernels[key].local} smem {kernels[key].smem}")
        except Exception as e:
            print(f"LOAD {tag}: {e}")
    # NVRTC, as chapter 6 compiles it.
    for dt in ["f16", "bf16"]:
        try:
            t = time.time()
            ptx, log = nvrtc_ptx(defs_of("wgmma", VARIANTS[DEFAULT], dt, 128))
            kernels[("nvrtc", dt, 128)] = Kernel(ptx, "wgmma", VARIANTS[DEFAULT], 128, "prefill_attention_wgmma")
            print(f"NVRTC {dt}: ok {time.time()-t:.1f}s regs {kernels[('nvrtc', dt, 128)].regs} log: {log.strip()[:500]}", flush=True)
        except Exception as e:
            print(f"NVRTC {dt}: FAILED {e}", flush=True)

    # Correctness.
    SEQS = [(1, 0), (17, 0), (64, 0), (100, 0), (130, 37), (5, 200), (64, 64), (200, 3), (1, 70), (300, 450)]
    results = {"checks": [], "times": []}
    cases = {}
    for D in (128, 64):
        for dt in ("f16", "bf16"):
            tdt = torch.float16 if dt == "f16" else torch.bfloat16
            cases[(dt, D)] = [
                ("mixed_gqa4_bs16", make_case(SEQS, 8, 2, D, 16, tdt, 1)),
                ("mixed_mha_bs5", make_case(SEQS, 4, 4, D, 5, tdt, 2)),
                ("long_gqa6_bs7", make_case([(1000, 333), (129, 0), (700, 1)], 6, 1, D, 7, tdt, 3)),
            ]
    for key, k in kernels.items():
        if key[0].startswith("abl"): continue
        dt, D = key[1], key[2]
        tol = 4e-3 if dt == "f16" else 3e-2
        for cname, c in cases[(dt, D)]:
            ref = c.setdefault("ref", reference(c))
            err, nan = check(k, c, ref, f"{'_'.join(map(str, key))} {cname}")
            results["checks"].append(dict(kernel="_".join(map(str, key)), case=cname, err=err, nonfinite=nan, ok=bool(err < tol and nan == 0)))
        worst = max(r["err"] for r in results["checks"] if r["kernel"] == "_".join(map(str, key)))
        print(f"CHECKED {'_'.join(map(str, key))}: worst rel err {worst:.2e} (tol {tol})", flush=True)
    # Timing at the 7B shape, paged (block 16, shuffled), against SDPA on contiguous K/V.
    t0 = time.time()
    while os.environ.get("WAIT_RUST") and not os.path.exists(os.path.join(OUT, "rust_done")) and time.time() - t0 < 115:
        time.sleep(1)  # the Rust tests run beside the builds; time the kernels alone
    print(f"waited {time.time() - t0:.0f}s for the Rust tests", flush=True)
    shapes = [("B1xL4096", 1, 4096, 32, 32), ("B8xL2048", 8, 2048, 32, 32), ("GQA32/8-B8xL2048", 8, 2048, 32, 8)]
    rows = []
    for name, B, L, H, HKV in shapes:
        fl = 4.0 * B * H * 128 * L * (L + 1) / 2
        c = make_case([(L, 0)] * B, H, HKV, 128, 16, torch.float16, 7)
        if name == "B1xL4096":  # correctness at size too, vs a float32 SDPA
            qq = c["q"].float().view(B, L, H, 128).transpose(1, 2)
            kk = c["kc"][(c["tables"][0].long()[:, None] * 16 + torch.arange(16, device=dev)).flatten()[:L]].float().transpose(0, 1)[None]
            vv = c["vc"][(c["tables"][0].long()[:, None] * 16 + torch.arange(16, device=dev)).flatten()[:L]].float().transpose(0, 1)[None]
            ref = F.scaled_dot_product_attention(qq, kk, vv, is_causal=True).transpose(1, 2).reshape(L, H, 128).double()
            for key in [k for k in kernels if k[1] == "f16" and k[2] == 128 and not k[0].startswith("abl")]:
                check(kernels[key], c, ref, f"{'_'.join(map(str, key))} B1xL4096-vs-fp32-sdpa", verbose=True)
        for key, k in kernels.items():
            if key[1] != "f16" or key[2] != 128: continue
            out = torch.empty_like(c["q"])
            us = timeit(lambda: k(c, out))
            rows.append((name, "_".join(map(str, key)), us, fl / us / 1e6))
        q = torch.randn(B, H, L, 128, device=dev, dtype=torch.float16)
        kk = torch.randn(B, HKV, L, 128, device=dev, dtype=torch.float16)
        vv = torch.randn(B, HKV, L, 128, device=dev, dtype=torch.float16)
        gqa = {"enable_gqa": True} if H != HKV else {}
        us = timeit(lambda: F.scaled_dot_product_attention(q, kk, vv, is_causal=True, **gqa))
        rows.append((name, "sdpa_default", us, fl / us / 1e6))
        del c, q, kk, vv; torch.cuda.empty_cache()
    # Repeat the default variant's timing once more (spread) after everything else.
    best = sorted([r for r in rows if r[0] == "B8xL2048" and not r[1].startswith(("sdpa", "tc", "nvrtc"))], key=lambda r: -r[3])[:2]
    for name, B, L, H, HKV in shapes[:2]:
        fl = 4.0 * B * H * 128 * L * (L + 1) / 2
        c = make_case([(L, 0)] * B, H, HKV, 128, 16, torch.float16, 8)
        for r in best:
            key = tuple(r[1].rsplit("_", 2)); key = (key[0], key[1], int(key[2]))
            out = torch.empty_like(c["q"]); us = timeit(lambda: kernels[key](c, out))
            rows.append((name, r[1] + "_again", us, fl / us / 1e6))
        q = torch.randn(B, H, L, 128, device=dev, dtype=torch.float16)
        kk = torch.randn(B, HKV, L, 128, device=dev, dtype=torch.float16)
        vv = torch.randn(B, HKV, L, 128, device=dev, dtype=torch.float16)
        us = timeit(lambda: F.scaled_dot_product_attention(q, kk, vv, is_causal=True))
        rows.append((name, "sdpa_default_again", us, fl / us / 1e6))
        del c, q, kk, vv; torch.cuda.empty_cache()
    results["times"] = rows
    json.dump(results, open(os.path.join(OUT, "results.json"), "w"), indent=1)
    print("\nCHECK SUMMARY: " + ("all ok" if all(r["ok"] for r in results["checks"]) else "FAILURES: " + ", ".join(f"{r['kernel']}/{r['case']} {r['err']:.1e}" for r in results["checks"] if not r["ok"])))
    print(f"{'shape':18} {'kernel':28} {'us':>9} {'TFLOP/s':>8} {'x sdpa':>7}")
    sd = {}
    for r in rows:
        if r[1] == "sdpa_default": sd[r[0]] = r[3]
    for r in rows:
        print(f"{r[0]:18} {r[1]:28} {r[2]:9.1f} {r[3]:8.1f} {r[3] / sd[r[0]]:7.2f}")

if __name__ == "__main__":
    main()
