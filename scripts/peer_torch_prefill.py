#!/usr/bin/env python3
"""A gpt-fast-style PyTorch prefill for the Llama-2-7B shape: the whole-prefill peer of ch06's
engine (issue 19), beside peer_decode_graph.py (whose weights, RMSNorm and RoPE it reuses).

usage: python3 scripts/peer_torch_prefill.py --json-out PATH [--repeats 3] [--cpu-smoke]

Model: hidden 4096, 32 layers, 32 heads × 128, intermediate 11008, vocab 32000, random fp16
weights (normal, std 0.02; seeded), fused QKV and gate/up weights. Prefill of B prompts of L
tokens in ONE forward (B, L): embedding, per layer RMSNorm → QKV → RoPE → K/V written into a static
cache (layers, B, 32, L, 128) as gpt-fast's prefill does → SDPA with is_causal=True on the prompt's
own q, k, v (PyTorch picks its flash/cuDNN kernel) → o_proj → residual → RMSNorm → SwiGLU →
residual; final RMSNorm and lm_head on each prompt's last token only (what a server needs), greedy
argmax. Eager ops, no torch.compile, no CUDA graph (a prefill's launches are few and its kernels
long). Points: 16 × 2048 in one forward; the same 16 prompts one forward each; one prompt of 4000
tokens (time to first token = its forward). Each point: one warm-up, then --repeats timed
forwards (host wall time, synchronised), median. FLOPs: every linear layer on every token,
lm_head on B rows, causal attention counted as FlashAttention does (4 · heads · 128 · L(L+1)/2 per
prompt and layer): the same count as ch06's gpu_bench section e.

--cpu-smoke: a tiny config in float32 on the CPU, checked against transformers' LlamaForCausalLM
(last-position logits), then one timed point.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from gpu_common import command_line, machine, pick_device, print_table, write_json
from peer_decode_graph import LLAMA2_7B, SMOKE, Weights, apply_rope, rms_norm


def prefill(w, tokens, kc, vc):
    """tokens (B, L) int64 → next ids (B,), last-position logits (B, vocab); K/V into kc, vc."""
    c = w.cfg
    b, L = tokens.shape
    hq, hkv, d = c["heads"], c["kv_heads"], c["head_dim"]
    x = F.embedding(tokens, w.embed)  # (B, L, hidden)
    cos, sin = w.cos[:L], w.sin[:L]  # (L, D)
    for i in range(c["layers"]):
        h = rms_norm(x, w.attn_norm[i], c["eps"])
        q, k, v = F.linear(h, w.wqkv[i]).split([hq * d, hkv * d, hkv * d], dim=-1)
        q = apply_rope(q.view(b, L, hq, d).transpose(1, 2), cos, sin)  # (B, H, L, D)
        k = apply_rope(k.view(b, L, hkv, d).transpose(1, 2), cos, sin)
        v = v.view(b, L, hkv, d).transpose(1, 2)
        kc[i][:, :, :L] = k
        vc[i][:, :, :L] = v
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=hq != hkv)
        x = x + F.linear(o.transpose(1, 2).reshape(b, L, hq * d), w.wo[i])
        gate, up = F.linear(rms_norm(x, w.mlp_norm[i], c["eps"]), w.w13[i]).chunk(2, dim=-1)
        x = x + F.linear(F.silu(gate) * up, w.w2[i])
    logits = F.linear(rms_norm(x[:, -1], w.final_norm, c["eps"]), w.lm_head)  # (B, vocab)
    return logits.argmax(dim=-1), logits


def flops(c, b, L):
    h, q, kv, inter = c["hidden"], c["heads"] * c["head_dim"], c["kv_heads"] * c["head_dim"], c["inter"]
    per_token = 2 * c["layers"] * (h * (q + 2 * kv) + q * h + 3 * h * inter)
    attn = c["layers"] * 4 * c["heads"] * c["head_dim"] * L * (L + 1) / 2
    return per_token * b * L + 2 * b * h * c["vocab"] + b * attn


def time_point(w, dev, b, L, per_prompt, repeats, seed=1):
    c = w.cfg
    g = torch.Generator(device=dev).manual_seed(seed)
    tokens = torch.randint(0, c["vocab"], (b, L), device=dev, generator=g)
    cb = 1 if per_prompt else b
    kc = torch.zeros(c["layers"], cb, c["kv_heads"], L, c["head_dim"], device=dev, dtype=w.embed.dtype)
    vc = torch.zeros_like(kc)

    def run():
        if per_prompt:
            return [prefill(w, tokens[i:i + 1], kc, vc)[0] for i in range(b)]
        return prefill(w, tokens, kc, vc)[0]

    ts = []
    with torch.no_grad():
        for i in range(repeats + 1):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            run()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i > 0:
                ts.append(time.perf_counter() - t)
    wall = statistics.median(ts)
    f = flops(c, b, L)
    return {"B": b, "L": L, "one_prompt_per_forward": per_prompt, "wall_s": wall, "walls_s": ts,
            "tokens_per_s": b * L / wall, "flops": f, "tflops": f / wall / 1e12}


def smoke(dev):
    from transformers import LlamaConfig, LlamaForCausalLM
    c = SMOKE
    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(
        vocab_size=c["vocab"], hidden_size=c["hidden"], intermediate_size=c["inter"], num_hidden_layers=c["layers"],
        num_attention_heads=c["heads"], num_key_value_heads=c["kv_heads"], head_dim=c["head_dim"],
        max_position_embeddings=64, rope_theta=c["theta"], rms_norm_eps=c["eps"], tie_word_embeddings=False,
        initializer_range=0.1)).float().eval()
    w = Weights(c, dev, torch.float32)
    w.load_hf(hf)
    w.rope(c["theta"], 16, dev, torch.float32)
    ids = torch.randint(0, c["vocab"], (2, 11))
    kc = torch.zeros(c["layers"], 2, c["kv_heads"], 11, c["head_dim"])
    with torch.no_grad():
        ref = hf(ids).logits[:, -1]
        _, got = prefill(w, ids, kc, torch.zeros_like(kc))
    err = (got - ref).abs().max().item()
    print(f"smoke: prefill vs transformers LlamaForCausalLM, last-position logits: max |Δ| = {err:.2e}")
    if err > 1e-4 * max(1.0, ref.abs().max().item()):
        raise SystemExit("smoke check FAILED")
    return w


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json-out", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cpu-smoke", action="store_true")
    a = ap.parse_args()
    dev = pick_device(a.cpu_smoke)
    m = machine(dev)
    if a.cpu_smoke:
        w = smoke(dev)
        points = [(3, 9, False), (3, 9, True)]
    else:
        w = Weights(LLAMA2_7B, dev, torch.float16)
        w.rope(LLAMA2_7B["theta"], 4096, dev, torch.float16)
        points = [(16, 2048, False), (16, 2048, True), (1, 4000, False)]
    recs = []
    for b, L, per in points:
        r = time_point(w, dev, b, L, per, a.repeats)
        r.update(machine=m, command=command_line(), model=w.cfg)
        recs.append(r)
        print(f"  B{b}×L{L}{' (one forward per prompt)' if per else ''}: {r['wall_s']:.3f} s, "
              f"{r['tokens_per_s']:.0f} tokens/s, {r['tflops']:.0f} TFLOP/s", flush=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    print_table(["B", "L", "per prompt", "wall s", "tok/s", "TFLOP/s"],
                [[r["B"], r["L"], r["one_prompt_per_forward"], f"{r['wall_s']:.3f}", f"{r['tokens_per_s']:.0f}",
                  f"{r['tflops']:.0f}"] for r in recs])
    write_json(a.json_out, recs)


if __name__ == "__main__":
    main()
