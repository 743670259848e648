#!/usr/bin/env python3
"""Throughput peer: transformers' own continuous batching (its ContinuousBatchingManager, paged KV,
per-request max_new_tokens) on the same checkpoint and workload as chapter 6's throughput run and
the static-batch `generate` peer (peer_hf_generate.py, whose workload and model loaders this uses).

usage:
  python3 scripts/peer_hf_continuous.py --json-out PATH --workload W.json --model DIR [--max-requests N]
                                        [--attn paged|sdpa] [--dtype float16]

Every request arrives at t = 0 and is added to the manager at once; greedy; EOS never stops a request
(the generation config has no EOS id), so each one generates exactly its max_new_tokens. One warm-up
session (2 requests, 4 tokens) runs before the clock starts. tokens/s = Σ generated tokens ÷ the wall
time from the first add to the last result; e2e(r) = when r's result came out. It tries the
attention implementations in --attn (comma-separated) in order and says which one ran.
"""
import argparse
import sys
import time

import torch

from gpu_common import command_line, machine, percentiles, pick_device, write_json
from peer_hf_generate import load_workload


def session(model, gen_cfg, reqs):
    """Adds every request, collects every result; returns ({id: tokens}, {id: seconds to result})."""
    out, done_s = {}, {}
    with model.continuous_batching_context_manager(generation_config=gen_cfg) as manager:
        t0 = time.perf_counter()
        for i, r in enumerate(reqs):
            manager.add_request(input_ids=r["prompt_ids"], request_id=f"r{i}", max_new_tokens=r["max_new_tokens"])
        while len(out) < len(reqs):
            try:
                res = manager.get_result(timeout=1)
            except TypeError:  # a get_result without a timeout
                res = manager.get_result()
            if res is None:
                continue
            out[res.request_id] = list(res.generated_tokens)
            done_s[res.request_id] = time.perf_counter() - t0
    return out, done_s


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json-out", required=True)
    ap.add_argument("--workload", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--max-requests", type=int, default=0)
    ap.add_argument("--attn", default="paged|sdpa,sdpa_paged,paged_attention")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM, GenerationConfig
    dev = pick_device(False)
    dtype = getattr(torch, args.dtype)
    model, attn, errors = None, None, {}
    for name in args.attn.split(","):
        try:
            model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, attn_implementation=name).to(dev).eval()
            attn = name
            break
        except Exception as e:  # an implementation this transformers does not know: try the next
            errors[name] = str(e)[:200]
    if model is None:
        sys.exit(f"error: no attention implementation loaded: {errors}")
    vocab = model.config.vocab_size
    reqs = load_workload(args.workload, vocab)
    if args.max_requests:
        reqs = reqs[: args.max_requests]
    model.generation_config.eos_token_id = None
    gen_cfg = GenerationConfig(max_new_tokens=max(r["max_new_tokens"] for r in reqs), do_sample=False,
                               eos_token_id=None, pad_token_id=0)
    session(model, gen_cfg, [{"prompt_ids": reqs[0]["prompt_ids"], "max_new_tokens": 4}] * 2)  # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out, done_s = session(model, gen_cfg, reqs)
    wall = time.perf_counter() - t0
    tokens = sum(len(t) for t in out.values())
    want = sum(r["max_new_tokens"] for r in reqs)
    e2e = [done_s[f"r{i}"] for i in range(len(reqs))]
    rec = {
        "peer": "transformers continuous batching (ContinuousBatchingManager)",
        "attn_implementation": attn, "skipped_implementations": errors,
        "machine": machine(dev), "command": command_line(), "model": args.model, "dtype": args.dtype,
        "requests": len(reqs), "generated_tokens": tokens, "asked_tokens": want, "wall_s": wall,
        "tokens_per_s": tokens / wall, "e2e_s": percentiles(e2e),
        "first_tokens": [out[f"r{i}"][:16] for i in range(min(4, len(reqs)))],
    }
    write_json(args.json_out, rec)
    print(f"transformers CB ({attn}): {tokens} tokens ({want} asked) from {len(reqs)} requests in {wall:.2f} s = "
          f"{tokens / wall:.0f} tokens/s")


if __name__ == "__main__":
    main()
