#!/usr/bin/env python3
"""Throughput baseline: Hugging Face transformers `generate` with static batches (issue 9,
Performance c). The requests are served in workload order, --batch-size (32) at a time; a batch
starts when the previous one has finished.

usage:
  python3 scripts/peer_hf_generate.py --json-out PATH --workload W.json --model DIR [--max-requests N]
                                      [--batch-size 32] [--time-budget-s S] [--dtype float16]
  python3 scripts/peer_hf_generate.py --json-out PATH --workload W.json --random-model llama-7b ...
  python3 scripts/peer_hf_generate.py --make-workload W.json [--n 300] [--seed 0] [--vocab 32000]
  python3 scripts/peer_hf_generate.py --make-model DIR [--shape tiny]
  python3 scripts/peer_hf_generate.py --json-out PATH --cpu-smoke

Workload: a JSON list of {"prompt_ids": [int, ...], "max_new_tokens": int} (a {"requests": [...]}
object is accepted too). All requests arrive at t = 0.

Per batch: prompts left-padded to the batch's longest (pad id = config pad_token_id, else eos, else
0; attention_mask 0 on the pads), greedy (do_sample=False), min_new_tokens = max_new_tokens = M =
the largest max_new_tokens in the batch, so every row runs M steps and EOS never stops it; the
default DynamicCache and the model's default attention (sdpa), no torch.compile. One warm-up
generate (2 requests, 4 tokens) runs before the clock starts; the model load is not timed.

Definitions (times from t0 = start of the first timed batch, when all requests have arrived):
  step time k of a batch = when generate hands its k-th new tokens to the streamer (they are
    copied to the host there, so the GPU has produced them);
  TTFT(r)  = step time 1 of r's batch − t0 (queueing behind earlier batches + prefill + first token);
  end(r)   = step time n_r of r's batch, n_r = r's own max_new_tokens (its last useful token);
  TPOT(r)  = (end(r) − TTFT(r)) / (n_r − 1), for n_r ≥ 2;
  e2e(r)   = when generate returns r's batch − t0 (static batching hands results back then);
  useful tokens = Σ n_r over served requests; computed tokens = Σ over batches of rows × M;
  tokens/s = useful tokens / total wall time (t0 to the end of the last batch).
--max-requests N serves only the first N requests. --time-budget-s S starts no new batch after S
seconds (those requests are not served and not counted; `truncated_by_budget` says so).
"""
import argparse
import json
import os
import random
import sys
import tempfile
import time

import torch

from gpu_common import command_line, machine, percentiles, pick_device, print_table, write_json

SHAPES = {
    "tiny": dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, max_position_embeddings=2048),
    # TinyLlama-1.1B's shape: grouped-query attention 32/4, head_dim 64.
    "llama-1b": dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                     num_attention_heads=32, num_key_value_heads=4, head_dim=64, max_position_embeddings=2048),
    "llama-7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=32, head_dim=128, max_position_embeddings=4096),
}


# --------------------------------------------------------------------------- workload

def make_workload(n, seed, vocab, prompt_range=(100, 1024), out_median=128, out_sigma=1.0, out_range=(8, 1024)):
    """Prompt lengths uniform in prompt_range; outputs long-tailed: lognormal (median out_median,
    σ = out_sigma of the log), rounded and clipped to out_range. Token ids uniform in [3, vocab)."""
    rng = random.Random(seed)
    reqs = []
    for _ in range(n):
        p = rng.randint(*prompt_range)
        o = min(out_range[1], max(out_range[0], round(rng.lognormvariate(0.0, out_sigma) * out_median)))
        reqs.append({"prompt_ids": [rng.randrange(3, vocab) for _ in range(p)], "max_new_tokens": o})
    return reqs


def load_workload(path, vocab):
    try:
        with open(path) as f:
            w = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"error: cannot read workload {path}: {e}")
    if isinstance(w, dict):
        w = w.get("requests")
    if not isinstance(w, list) or not w:
        sys.exit(f"error: {path}: expected a non-empty list of {{prompt_ids, max_new_tokens}}")
    for i, r in enumerate(w):
        ok = (isinstance(r, dict) and isinstance(r.get("prompt_ids"), list) and r["prompt_ids"]
              and all(isinstance(t, int) and 0 <= t < vocab for t in r["prompt_ids"])
              and isinstance(r.get("max_new_tokens"), int) and r["max_new_tokens"] >= 1)
        if not ok:
            sys.exit(f"error: {path}: request {i} needs a non-empty prompt_ids of ints in [0, {vocab}) "
                     f"and max_new_tokens ≥ 1")
    return w


# --------------------------------------------------------------------------- model

def llama_config(shape, dtype):
    from transformers import LlamaConfig
    return LlamaConfig(**SHAPES[shape], rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1,
                       eos_token_id=2, pad_token_id=0, initializer_range=0.02, dtype=dtype)


def make_model_dir(path, shape, seed=0):
    """Writes a random Llama checkpoint (fp16 safetensors + config) that --model can load."""
    from transformers import LlamaForCausalLM
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(shape, "float16")).to(torch.float16)
    model.save_pretrained(path)
    print(f"wrote random {shape} Llama checkpoint to {path}")


def load_model(args, dev, dtype):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM
    if args.random_model:
        torch.manual_seed(args.seed)
        with torch.device(dev):
            model = LlamaForCausalLM._from_config(llama_config(args.random_model, str(dtype)[6:]), dtype=dtype)
        name = f"random {args.random_model} (in memory, seed {args.seed})"
    else:
        if not os.path.isfile(os.path.join(args.model, "config.json")):
            sys.exit(f"error: {args.model} has no config.json")
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(dev)
        name = args.model
    return model.eval(), name


def pad_id(cfg):
    for v in (cfg.pad_token_id, cfg.eos_token_id, 0):
        if isinstance(v, list):
            v = v[0] if v else None
        if v is not None:
            return int(v)
    return 0


class StepClock:
    """transformers streamer: put() gets the prompt once, then each step's new tokens (on the host)."""

    def __init__(self, t0):
        self.t0, self.calls, self.times = t0, 0, []

    def put(self, value):
        self.calls += 1
        if self.calls > 1:
            self.times.append(time.perf_counter() - self.t0)

    def end(self):
        pass


def generate_batch(model, reqs, dev, pad, m, streamer=None):
    """Left-padded greedy generate of exactly m new tokens per row → (B, m) new ids."""
    p = max(len(r["prompt_ids"]) for r in reqs)
    ids = torch.full((len(reqs), p), pad, dtype=torch.long)
    att = torch.zeros((len(reqs), p), dtype=torch.long)
    for i, r in enumerate(reqs):
        n = len(r["prompt_ids"])
        ids[i, p - n:] = torch.tensor(r["prompt_ids"])
        att[i, p - n:] = 1
    with torch.no_grad():
        out = model.generate(input_ids=ids.to(dev), attention_mask=att.to(dev), do_sample=False, num_beams=1,
                             max_new_tokens=m, min_new_tokens=m, pad_token_id=pad, streamer=streamer,
                             temperature=None, top_p=None, top_k=None)
    if out.shape != (len(reqs), p + m):
        raise RuntimeError(f"generate returned shape {tuple(out.shape)}, expected {(len(reqs), p + m)}")
    return out[:, p:]


def run(model, reqs, dev, args):
    pad = pad_id(model.config)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    generate_batch(model, [{"prompt_ids": r["prompt_ids"][:16], "max_new_tokens": 4} for r in reqs[:2]], dev, pad, 4)
    sync()
    batches = [reqs[i:i + args.batch_size] for i in range(0, len(reqs), args.batch_size)]
    per_req, computed, truncated, outputs = [], 0, False, []
    t0 = time.perf_counter()
    for bi, batch in enumerate(batches):
        start = time.perf_counter() - t0
        if args.time_budget_s and start > args.time_budget_s:
            truncated = True
            break
        m = max(r["max_new_tokens"] for r in batch)
        clock = StepClock(t0)
        new = generate_batch(model, batch, dev, pad, m, clock)
        sync()
        done = time.perf_counter() - t0
        if len(clock.times) != m:
            raise RuntimeError(f"streamer saw {len(clock.times)} steps, expected {m}")
        computed += len(batch) * m
        for r, row in zip(batch, new.tolist()):
            n = r["max_new_tokens"]
            per_req.append({"batch": bi, "prompt_len": len(r["prompt_ids"]), "max_new_tokens": n,
                            "ttft_s": clock.times[0], "end_s": clock.times[n - 1], "e2e_s": done,
                            "tpot_s": (clock.times[n - 1] - clock.times[0]) / (n - 1) if n > 1 else None})
            outputs.append(row[:n])
        print(f"  batch {bi}: {len(batch)} requests, prompts ≤ {max(len(r['prompt_ids']) for r in batch)}, "
              f"{m} steps in {done - start:.2f} s ({(done - clock.times[0]) / max(1, m - 1) * 1e3:.1f} ms/step "
              f"after the first token), t = {done:.1f} s", flush=True)
    wall = (per_req[-1]["e2e_s"] if per_req else 0.0)
    return per_req, computed, truncated, wall, outputs


def summary(per_req, computed, truncated, wall, n_workload, args, model_name, m):
    useful = sum(r["max_new_tokens"] for r in per_req)
    ttft = percentiles([r["ttft_s"] for r in per_req])
    tpot = percentiles([r["tpot_s"] * 1e3 for r in per_req if r["tpot_s"] is not None])
    e2e = percentiles([r["e2e_s"] for r in per_req])
    return {
        "card": m["card"], "model": model_name, "dtype": args.dtype, "batch_size": args.batch_size,
        "requests_served": len(per_req), "requests_in_workload": n_workload, "max_requests": args.max_requests,
        "truncated_by_budget": truncated, "time_budget_s": args.time_budget_s,
        "total_wall_s": wall, "useful_tokens": useful, "useful_tokens_per_s": useful / wall if wall else None,
        "computed_tokens": computed, "computed_tokens_per_s": computed / wall if wall else None,
        "prompt_tokens": sum(r["prompt_len"] for r in per_req),
        "ttft_s": ttft, "tpot_ms": tpot, "e2e_s": e2e,
        "tpot_excluded_single_token_requests": sum(1 for r in per_req if r["tpot_s"] is None),
        "definitions": __doc__[__doc__.index("Definitions"):].strip(),
        "method": "transformers generate, static batches in workload order, left padding, greedy, "
                  "min_new_tokens = max_new_tokens = batch max, DynamicCache, default attention, no torch.compile",
        "machine": m, "command": command_line(), "per_request": per_req,
    }


def smoke(args):
    """Tiny model written to disk and loaded back, tiny workload, CPU, with checks."""
    dev = torch.device("cpu")
    d = tempfile.mkdtemp(prefix="kvserve-hf-smoke-")
    make_model_dir(d, "tiny")
    args.model, args.random_model, args.batch_size, args.dtype = d, None, 4, "float32"
    model, name = load_model(args, dev, torch.float32)
    reqs = make_workload(10, args.seed, 256, prompt_range=(5, 20), out_median=6, out_sigma=0.8, out_range=(1, 16))
    wl = os.path.join(d, "workload.json")
    write_json(wl, reqs)
    reqs = load_workload(wl, 256)
    per_req, computed, truncated, wall, outputs = run(model, reqs, dev, args)
    assert len(per_req) == len(reqs) and all(len(o) == r["max_new_tokens"] for o, r in zip(outputs, reqs))
    # left padding must not change a request's greedy tokens: rerun each of batch 0 alone
    for i, r in enumerate(reqs[:args.batch_size]):
        alone = generate_batch(model, [r], dev, pad_id(model.config), r["max_new_tokens"])[0].tolist()
        if alone != outputs[i]:
            raise SystemExit(f"smoke check FAILED: request {i} alone {alone} != in batch {outputs[i]}")
    print(f"smoke: {len(reqs)} requests served, each request's tokens equal to its unpadded run alone")
    return model, name, reqs, per_req, computed, truncated, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json-out")
    ap.add_argument("--workload")
    ap.add_argument("--model", help="Hugging Face checkpoint directory (Llama family)")
    ap.add_argument("--random-model", choices=sorted(SHAPES), help="build a random model in memory instead of --model")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-requests", type=int, default=0, help="serve only the first N requests (0 = all)")
    ap.add_argument("--time-budget-s", type=float, default=0.0, help="start no batch after this many seconds (0 = no limit)")
    ap.add_argument("--make-workload", metavar="PATH", help="write a seeded workload and exit")
    ap.add_argument("--n", type=int, default=300, help="requests in --make-workload")
    ap.add_argument("--vocab", type=int, default=32000, help="token ids of --make-workload are < this")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--make-model", metavar="DIR", help="write a random Llama checkpoint and exit")
    ap.add_argument("--shape", default="tiny", choices=sorted(SHAPES), help="shape of --make-model")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny model + workload on the CPU, with checks")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: run the normal path on the CPU (tests)")
    a = ap.parse_args()
    if a.make_workload:
        if a.n < 1 or a.vocab < 4:
            ap.error("--n ≥ 1 and --vocab ≥ 4")
        reqs = make_workload(a.n, a.seed, a.vocab)
        write_json(a.make_workload, reqs)
        outs = sorted(r["max_new_tokens"] for r in reqs)
        print(f"{a.n} requests: prompt tokens {sum(len(r['prompt_ids']) for r in reqs)}, "
              f"max_new_tokens p50 {outs[len(outs) // 2]} p90 {outs[int(len(outs) * 0.9)]} max {outs[-1]}, "
              f"sum {sum(outs)}")
        return
    if a.make_model:
        make_model_dir(a.make_model, a.shape, a.seed)
        return
    if not a.json_out:
        ap.error("--json-out is required")
    if a.batch_size < 1 or a.max_requests < 0 or a.time_budget_s < 0:
        ap.error("--batch-size ≥ 1, --max-requests ≥ 0, --time-budget-s ≥ 0")
    if a.cpu_smoke:
        model, name, reqs, *res = smoke(a)
        m, n_workload = machine(torch.device("cpu")), len(reqs)
    else:
        if not a.workload or bool(a.model) == bool(a.random_model):
            ap.error("--workload and exactly one of --model / --random-model are required")
        dev = pick_device(a.device == "cpu")
        m = machine(dev)
        t = time.perf_counter()
        model, name = load_model(a, dev, getattr(torch, a.dtype))
        print(f"HF generate, static batches of {a.batch_size}, on {m['card']} (torch {m['torch']}, CUDA {m['cuda']}, "
              f"transformers {m.get('transformers')}); model {name} loaded in {time.perf_counter() - t:.1f} s")
        all_reqs = load_workload(a.workload, model.config.vocab_size)
        reqs = all_reqs[:a.max_requests] if a.max_requests else all_reqs
        n_workload = len(all_reqs)
        res = run(model, reqs, dev, a)[:4]
    rec = summary(*res, n_workload, a, name, m)
    print_table(["requests", "wall s", "useful tok/s", "computed tok/s", "TTFT p50/p90/p99 s", "TPOT p50/p90/p99 ms"],
                [[rec["requests_served"], f"{rec['total_wall_s']:.2f}", f"{rec['useful_tokens_per_s']:.1f}",
                  f"{rec['computed_tokens_per_s']:.1f}",
                  "/".join(f"{rec['ttft_s'][p]:.2f}" for p in ("p50", "p90", "p99")),
                  "/".join(f"{rec['tpot_ms'][p]:.1f}" if rec["tpot_ms"][p] is not None else "-" for p in ("p50", "p90", "p99"))]])
    if rec["truncated_by_budget"]:
        print(f"note: time budget reached; {rec['requests_served']} of {len(reqs)} requests served")
    write_json(a.json_out, rec)


if __name__ == "__main__":
    main()
