#!/usr/bin/env python3
"""A gpt-fast-style PyTorch decode step for the Llama-2-7B shape, captured as ONE CUDA graph and
replayed: the end-to-end peer of ch06's decode step (issue 9, Performance b).

usage: python3 scripts/peer_decode_graph.py --json-out PATH [--batches 1,32,64] [--contexts 512,2048]
                                            [--repeats 20] [--cache-slack 0] [--cpu-smoke]

Model: hidden 4096, 32 layers, 32 heads × 128 (no GQA), intermediate 11008, vocab 32000, untied
lm_head, random fp16 weights (normal, std 0.02; seeded). Fused QKV weight (12288 × 4096) and fused
gate/up weight (22016 × 4096), RMSNorm (F.rms_norm where PyTorch has it), RoPE (θ = 10000, the
rotate-half layout of Hugging Face Llama), SiLU·up, greedy argmax on the device.

Step: B sequences, one new token each, all at position ctx (= tokens already in the cache). The
static KV cache is (layers, B, 32, cache_len, 128) per K and V with cache_len = ctx + 1 + slack; the
step writes its K/V at input_pos with index_copy_, then SDPA attends over the cache: over all of it
when slack = 0 (every slot is valid; no mask), else with a boolean mask (slot ≤ input_pos), which
reads the whole cache_len as gpt-fast does. The step (embedding to argmax) is captured as one
torch.cuda.CUDAGraph with static input tensors (tokens, input_pos) and replayed; every replay is
one decode step at context ctx (it rewrites the same slot). Plain eager ops in the graph: NO
torch.compile (its Triton compile time does not fit the device budget). `eager_step_ms` is the
same step without the graph (host wall time per step, synchronised).

Floor: (weight bytes read + K/V bytes read) ÷ copy bandwidth measured in this process, where the
weights read are every layer's matrices and norms, the final norm, lm_head and B embedding rows,
and the K/V read are the ctx cached tokens plus the new one: 2 × 32 layers × B × (ctx + 1) × 4096 × 2 B.
frac_of_floor = floor_ms / step_ms. Each (B, ctx) point allocates its own cache and frees it; a
point whose cache does not fit beside the weights is reported as skipped with the reason.

--cpu-smoke: a tiny GQA config in float32 on the CPU, checked against transformers'
LlamaForCausalLM with the same weights (logits at every position through the cache, masked and
unmasked), then the timing loop without graphs.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from gpu_common import GIB, command_line, copy_bandwidth, machine, pick_device, print_table, time_calls, write_json
from peer_sdpa import has_enable_gqa, sdpa_packed

LLAMA2_7B = dict(hidden=4096, layers=32, heads=32, kv_heads=32, head_dim=128, inter=11008, vocab=32000,
                 eps=1e-5, theta=10000.0)
SMOKE = dict(hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16, inter=96, vocab=128, eps=1e-5, theta=10000.0)
WORKSPACE_BYTES = GIB  # kept free beside a point's cache: logits, activations, graph pool, cuBLAS workspace
HAS_RMS_NORM = hasattr(F, "rms_norm")
GQA_MODE = None  # set in main: "enable_gqa" or "packed"


class Weights:
    """Fused-layout Llama weights; random (seeded) or copied from a transformers model."""

    def __init__(self, cfg, device, dtype, seed=0, std=0.02):
        self.cfg = cfg
        h, d, hq, hkv, inter = cfg["hidden"], cfg["head_dim"], cfg["heads"], cfg["kv_heads"], cfg["inter"]
        g = torch.Generator(device=device).manual_seed(seed)

        def rnd(*shape):
            return torch.empty(shape, device=device, dtype=dtype).normal_(0.0, std, generator=g)

        self.embed = rnd(cfg["vocab"], h)  # (vocab, hidden)
        self.attn_norm = [torch.ones(h, device=device, dtype=dtype) for _ in range(cfg["layers"])]
        self.wqkv = [rnd((hq + 2 * hkv) * d, h) for _ in range(cfg["layers"])]  # (q|k|v rows, hidden)
        self.wo = [rnd(h, hq * d) for _ in range(cfg["layers"])]
        self.mlp_norm = [torch.ones(h, device=device, dtype=dtype) for _ in range(cfg["layers"])]
        self.w13 = [rnd(2 * inter, h) for _ in range(cfg["layers"])]  # (gate|up rows, hidden)
        self.w2 = [rnd(h, inter) for _ in range(cfg["layers"])]
        self.final_norm = torch.ones(h, device=device, dtype=dtype)
        self.lm_head = rnd(cfg["vocab"], h)
        self.rope(cfg["theta"], 16, device, dtype)

    def rope(self, theta, max_pos, device, dtype):
        """cos/sin tables (max_pos, head_dim) in the rotate-half layout, computed in f32 as HF does."""
        d = self.cfg["head_dim"]
        inv = 1.0 / (theta ** (torch.arange(0, d, 2, device=device, dtype=torch.float32) / d))
        f = torch.outer(torch.arange(max_pos, device=device, dtype=torch.float32), inv)
        emb = torch.cat((f, f), dim=-1)
        self.cos, self.sin = emb.cos().to(dtype), emb.sin().to(dtype)

    def load_hf(self, model):
        """Copies a transformers LlamaForCausalLM's weights into the fused layout (smoke test)."""
        sd = {k: v.detach() for k, v in model.state_dict().items()}
        self.embed = sd["model.embed_tokens.weight"].clone()
        for i in range(self.cfg["layers"]):
            p = f"model.layers.{i}."
            self.attn_norm[i] = sd[p + "input_layernorm.weight"].clone()
            self.wqkv[i] = torch.cat([sd[p + f"self_attn.{n}_proj.weight"] for n in "qkv"], dim=0)
            self.wo[i] = sd[p + "self_attn.o_proj.weight"].clone()
            self.mlp_norm[i] = sd[p + "post_attention_layernorm.weight"].clone()
            self.w13[i] = torch.cat([sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]], dim=0)
            self.w2[i] = sd[p + "mlp.down_proj.weight"].clone()
        self.final_norm = sd["model.norm.weight"].clone()
        self.lm_head = sd.get("lm_head.weight", self.embed).clone()

    def bytes_read(self, b):
        """Weight bytes one decode step reads: everything but the embedding table, plus B of its rows."""
        ts = self.attn_norm + self.wqkv + self.wo + self.mlp_norm + self.w13 + self.w2 + [self.final_norm, self.lm_head]
        return sum(t.numel() * t.element_size() for t in ts) + b * self.embed.shape[1] * self.embed.element_size()

    def total_bytes(self):
        return self.bytes_read(0) + self.embed.numel() * self.embed.element_size()


def rms_norm(x, w, eps):
    if HAS_RMS_NORM:
        return F.rms_norm(x, (x.shape[-1],), w, eps)
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


def apply_rope(x, cos, sin):
    """x (B, H, 1, D); cos, sin (1, D)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def attend(q, k, v, mask):
    """q (B, Hq, 1, D) over the cache k, v (B, Hkv, cache_len, D); mask (1, 1, 1, cache_len) or None."""
    if q.shape[1] == k.shape[1]:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if GQA_MODE == "enable_gqa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    if mask is not None:
        b, hq, _, d = q.shape
        return F.scaled_dot_product_attention(q.view(b, k.shape[1], hq // k.shape[1], d), k, v, attn_mask=mask).view(b, hq, 1, d)
    return sdpa_packed(q, k, v)


def decode_step(w, kc, vc, tokens, input_pos, masked):
    """One token per sequence at position input_pos.
    tokens (B,) int64; input_pos (1,) int64; kc, vc (layers, B, Hkv, cache_len, D). Returns (next ids (B,), logits)."""
    c = w.cfg
    b, hq, hkv, d = tokens.shape[0], c["heads"], c["kv_heads"], c["head_dim"]
    x = F.embedding(tokens, w.embed)  # (B, hidden)
    cos, sin = w.cos[input_pos], w.sin[input_pos]  # (1, D)
    mask = None
    if masked:
        mask = (torch.arange(kc.shape[3], device=tokens.device) <= input_pos).view(1, 1, 1, -1)
    for i in range(c["layers"]):
        h = rms_norm(x, w.attn_norm[i], c["eps"])
        q, k, v = F.linear(h, w.wqkv[i]).split([hq * d, hkv * d, hkv * d], dim=-1)
        q = apply_rope(q.view(b, hq, 1, d), cos, sin)
        k = apply_rope(k.view(b, hkv, 1, d), cos, sin)
        kc[i].index_copy_(2, input_pos, k)
        vc[i].index_copy_(2, input_pos, v.view(b, hkv, 1, d))
        o = attend(q, kc[i], vc[i], mask)  # (B, Hq, 1, D)
        x = x + F.linear(o.reshape(b, hq * d), w.wo[i])
        gate, up = F.linear(rms_norm(x, w.mlp_norm[i], c["eps"]), w.w13[i]).chunk(2, dim=-1)
        x = x + F.linear(F.silu(gate) * up, w.w2[i])
    logits = F.linear(rms_norm(x, w.final_norm, c["eps"]), w.lm_head)  # (B, vocab)
    return logits.argmax(dim=-1), logits


def kv_bytes(cfg, b, n_tokens, elem):
    return 2 * cfg["layers"] * b * cfg["kv_heads"] * n_tokens * cfg["head_dim"] * elem


def smoke_check_against_hf(dev):
    """Logits of decode_step through the cache vs transformers' full forward, same weights (float32)."""
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError:
        print("smoke: transformers not installed; HF comparison skipped")
        return None
    c = SMOKE
    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(
        vocab_size=c["vocab"], hidden_size=c["hidden"], intermediate_size=c["inter"], num_hidden_layers=c["layers"],
        num_attention_heads=c["heads"], num_key_value_heads=c["kv_heads"], head_dim=c["head_dim"],
        max_position_embeddings=64, rope_theta=c["theta"], rms_norm_eps=c["eps"], tie_word_embeddings=False,
        initializer_range=0.1)).float().eval()
    with torch.no_grad():
        for n, p in hf.named_parameters():
            if n.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    w = Weights(c, dev, torch.float32)
    w.load_hf(hf)
    b, t = 2, 9
    ids = torch.randint(0, c["vocab"], (b, t))
    with torch.no_grad():
        ref = hf(ids).logits  # (B, T, vocab)
        w.rope(c["theta"], t, dev, torch.float32)
        kc = torch.zeros(c["layers"], b, c["kv_heads"], t, c["head_dim"])
        vc = torch.zeros_like(kc)
        err = 0.0
        for pos in range(t):  # masked: the cache is longer than pos + 1 until the last position
            _, lg = decode_step(w, kc, vc, ids[:, pos], torch.tensor([pos]), masked=True)
            err = max(err, (lg - ref[:, pos]).abs().max().item())
        _, lg = decode_step(w, kc, vc, ids[:, t - 1], torch.tensor([t - 1]), masked=False)  # cache exactly full
        err = max(err, (lg - ref[:, t - 1]).abs().max().item())
    scale = ref.abs().max().item()
    print(f"smoke: decode_step through the static cache vs transformers LlamaForCausalLM: max |Δlogit| = {err:.2e} "
          f"(max |logit| {scale:.2f})")
    if err > 1e-4 * max(1.0, scale):
        raise SystemExit("smoke check FAILED")
    return err


def run_point(w, b, ctx, dev, a, bw_gbps, card):
    c, elem = w.cfg, w.embed.element_size()
    cache_len = ctx + 1 + a.cache_slack
    masked = a.cache_slack > 0
    alloc = kv_bytes(c, b, cache_len, elem)
    floor_bytes = w.bytes_read(b) + kv_bytes(c, b, ctx + 1, elem)
    rec = {"B": b, "ctx": ctx, "card": card, "cache_len": cache_len, "masked": masked,
           "weight_bytes_read": w.bytes_read(b), "kv_bytes_read": kv_bytes(c, b, ctx + 1, elem),
           "kv_cache_bytes": alloc, "floor_ms": floor_bytes / (bw_gbps * 1e9) * 1e3, "copy_gbps": bw_gbps}
    if dev.type == "cuda":
        free = torch.cuda.mem_get_info(dev)[0]
        if alloc + WORKSPACE_BYTES > free:
            rec["skipped"] = (f"K/V cache needs {alloc / GIB:.2f} GiB + {WORKSPACE_BYTES / GIB:.0f} GiB workspace, "
                              f"{free / GIB:.2f} GiB free beside {w.total_bytes() / GIB:.2f} GiB of weights "
                              f"(a 141 GB H200 would fit it)")
            return rec
    try:
        shape = (c["layers"], b, c["kv_heads"], cache_len, c["head_dim"])
        kc = torch.empty(shape, device=dev, dtype=w.embed.dtype).normal_()
        vc = torch.empty_like(kc).normal_()
        g = torch.Generator(device=dev).manual_seed(1)
        tokens = torch.randint(0, c["vocab"], (b,), device=dev, generator=g)
        input_pos = torch.tensor([ctx], device=dev)
        step = lambda: decode_step(w, kc, vc, tokens, input_pos, masked)  # noqa: E731
        with torch.no_grad():
            if dev.type == "cuda":
                rec.update(run_graph(step, dev, a))
            else:
                rec.update(run_eager_only(step, a))
        rec["step_ms"] = rec["graph_step_ms"] if dev.type == "cuda" else rec["eager_step_ms"]
        rec["tokens_per_s"] = b / (rec["step_ms"] * 1e-3)
        rec["frac_of_floor"] = rec["floor_ms"] / rec["step_ms"]
    except torch.cuda.OutOfMemoryError as e:
        rec["skipped"] = f"out of device memory: {str(e).splitlines()[0][:200]}"
    finally:
        kc = vc = None  # noqa: F841 - release before the next point
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rec


def eager_ms(step, n):
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)


def run_eager_only(step, a):
    step()
    return {"eager_step_ms": eager_ms(step, a.repeats), "graph": False}


def run_graph(step, dev, a):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up off the default stream, as graph capture requires
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    eager = eager_ms(step, a.eager_repeats)
    eager_ids = step()[0].clone()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ids, _ = step()
    graph.replay()
    torch.cuda.synchronize()
    same = (ids == eager_ids).float().mean().item()
    r = time_calls(lambda i: graph.replay(), dev, a.repeats, a.warmup)
    del graph
    return {"graph_step_ms": r["median_us"] / 1e3, "eager_step_ms": eager, "graph": True,
            "graph_ids_equal_eager": same, "repeats": r["repeats"], "cpu_ahead": r["cpu_ahead"]}


def main():
    global GQA_MODE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json-out", required=True)
    ap.add_argument("--batches", default="1,32,64")
    ap.add_argument("--contexts", default="512,2048")
    ap.add_argument("--repeats", type=int, default=20, help="graph replays timed per point")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--eager-repeats", type=int, default=5, help="eager (no graph) steps timed per point")
    ap.add_argument("--cache-slack", type=int, default=0,
                    help="extra cache slots beyond ctx + 1; > 0 switches to a masked SDPA over the whole cache")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny config on the CPU, checked against transformers")
    a = ap.parse_args()
    try:
        batches = [int(x) for x in a.batches.split(",")]
        contexts = [int(x) for x in a.contexts.split(",")]
    except ValueError:
        ap.error("--batches and --contexts are comma-separated integers")
    if min(batches + contexts) < 1 or a.repeats < 1 or a.cache_slack < 0:
        ap.error("batches, contexts and --repeats must be ≥ 1; --cache-slack ≥ 0")
    dev = pick_device(a.cpu_smoke)
    GQA_MODE = "enable_gqa" if has_enable_gqa() else "packed"
    m = machine(dev)
    if a.cpu_smoke:
        smoke_check_against_hf(dev)
        cfg, dtype, batches, contexts = SMOKE, torch.float32, [1, 2], [4, 8]
    else:
        cfg, dtype = LLAMA2_7B, torch.float16
    bw = copy_bandwidth(dev, (64 << 20) if a.cpu_smoke else (2 << 30))
    t = time.perf_counter()
    w = Weights(cfg, dev, dtype)
    w.rope(cfg["theta"], max(contexts) + 1 + a.cache_slack, dev, dtype)
    shape_name = "tiny smoke config" if a.cpu_smoke else "Llama-2-7B shape"
    print(f"decode step, {shape_name} ({w.total_bytes() / 1e9:.2f} GB of random {str(dtype)[6:]} weights, "
          f"made in {time.perf_counter() - t:.1f} s) on {m['card']} (torch {m['torch']}, CUDA {m['cuda']})")
    print(f"one CUDA graph per (B, ctx) point, eager ops, no torch.compile; RMSNorm via "
          f"{'F.rms_norm' if HAS_RMS_NORM else 'f32 ops'}; cache_len = ctx + 1 + {a.cache_slack} "
          f"({'masked' if a.cache_slack else 'no mask'}); copy bandwidth {bw['gbps']:.0f} GB/s")
    points = sorted(((b, c) for b in batches for c in contexts), key=lambda p: p[0] * p[1])
    recs = []
    for b, ctx in points:
        r = run_point(w, b, ctx, dev, a, bw["gbps"], m["card"])
        r.update(machine=m, command=command_line(), compile=False, rms_norm="F.rms_norm" if HAS_RMS_NORM else "f32 ops",
                 model=cfg, copy=bw)
        recs.append(r)
        if "skipped" in r:
            print(f"  B={b} ctx={ctx}: skipped: {r['skipped']}")
    rows = [[r["B"], r["ctx"], f"{r['step_ms']:.3f}", f"{r['tokens_per_s']:.0f}", f"{r['floor_ms']:.3f}",
             f"{r['frac_of_floor']:.2f}", f"{r['eager_step_ms']:.2f}",
             f"{r.get('graph_ids_equal_eager', float('nan')):.2f}"] for r in recs if "skipped" not in r]
    print_table(["B", "ctx", "step ms", "tok/s", "floor ms", "floor/step", "eager ms", "graph=eager"], rows)
    write_json(a.json_out, recs)


if __name__ == "__main__":
    main()
