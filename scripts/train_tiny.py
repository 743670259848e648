#!/usr/bin/env python3
"""Train kvserve's small shipped model: a ~4M-parameter Llama on Shakespeare.

Runs offline on the GPU machine (torch + transformers; `tokenizers` comes with
transformers). Inputs, relative to the repository root: data/train.txt,
data/val.txt (scripts/corpus.py) and models/shakespeare/tokenizer.json
(scripts/train_tokenizer.py). Output directory (default models/shakespeare):
    config.json, generation_config.json, model.safetensors   float16 weights, tied lm_head
    val_sample.txt      first ~40,000 chars of data/val.txt, cut after a newline
    train_report.json   losses, settings, versions, hashes, a greedy reference sample

Model: LlamaForCausalLM from scratch, vocab 4096, hidden 256, intermediate 768,
4 layers, 8 query heads / 2 key-value heads (GQA), head_dim 32, RoPE theta
10000, RMSNorm eps 1e-5, tied embeddings, max_position_embeddings 512, BOS 1, EOS 2.

Training: train.txt is tokenized as one string (no special tokens) into one
stream; each sample is a random 513-token window of it (inputs = first 512,
targets = last 512). With probability --bos-prob the window is instead
[BOS] + 512 stream tokens, so the model works with or without a BOS at position 0
(the tokenizer adds none, so neither transformers nor kvserve prepends one to a
prompt; a caller that does gets a trained embedding). AdamW
(betas 0.9/0.95, weight decay on matrices only), linear warmup then cosine
decay to 10%, grad clip 1.0, bf16 autocast on CUDA, residual dropout (applied
by forward hooks on each layer's attention and MLP outputs during training
only; the saved model is a plain Llama). The corpus is small (~1.56M tokens),
so the run is sized in epochs, not minutes: the default 2000 steps x 64 x 512
= 65.5M tokens is ~42 passes, and the full validation loss is evaluated every
--eval-every steps; the weights with the best validation loss are the ones
saved (best_step in the report). --minutes is only a safety cap.

Evaluation after saving: the saved float16 checkpoint is reloaded in float32
on CPU (no TF32) and evaluated with:
  val_loss: mean next-token cross-entropy over non-overlapping 512-token windows
    of the whole data/val.txt token stream (no BOS, tail dropped; each window
    predicts its tokens 1..511 from their prefixes).
  val_sample_loss: Tokenize val_sample.txt (the whole file as one string, UTF-8)
    with tokenizer.json, adding no special tokens (no BOS). Split the id stream
    into consecutive non-overlapping windows of 256 tokens, dropping the
    incomplete tail. Run each window through the model on its own (positions
    0..255, fresh context, float32) and take the natural-log cross-entropy of
    predicting token t+1 from the logits at position t, for t = 0..254 (255
    predictions per window). val_sample_loss is the mean over all predicted
    tokens of all windows (= total loss / (255 * n_windows)).
    (Implemented once, in hf_check.py; the Rust test reimplements it.)

Usage (repository root as cwd):
  python3 scripts/train_tiny.py                       # GPU run, writes models/shakespeare
  python3 scripts/train_tiny.py --tiny-test           # CPU smoke test into /tmp/kvserve-tiny-test
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import random
import shlex
import shutil
import sys
import time

import torch
import torch.nn.functional as F
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_check  # noqa: E402  (val_sample_loss & helpers live there, shared with the checker)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQ = 512
VAL_SAMPLE_CHARS = 40_000
BOS, EOS = 1, 2
VAL_LOSS_DEF = (
    "Tokenize data/val.txt (whole file, no special tokens, no BOS); split the id stream into "
    "consecutive non-overlapping 512-token windows, dropping the incomplete tail; for each window "
    "(fresh context, float32) the natural-log cross-entropy of token t+1 given logits at position t, "
    "t = 0..510; mean over all predicted tokens of all windows."
)


def model_config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=2, head_dim=32,
        max_position_embeddings=SEQ, rope_theta=10000.0, rms_norm_eps=1e-5,
        tie_word_embeddings=True, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=None,
        hidden_act="silu", attention_bias=False, mlp_bias=False, initializer_range=0.02,
    )


def add_residual_dropout(model: LlamaForCausalLM, p: float) -> None:
    """Dropout on each attention / MLP output before it joins the residual stream.
    Hooks act only in training mode, so eval and the saved model are plain Llama."""
    if p <= 0:
        return

    def hook(module, _inputs, output):
        if not module.training:
            return output
        if isinstance(output, tuple):
            return (F.dropout(output[0], p, True),) + tuple(output[1:])
        return F.dropout(output, p, True)

    for layer in model.model.layers:
        layer.self_attn.register_forward_hook(hook)
        layer.mlp.register_forward_hook(hook)


def lr_at(step: int, total: int, peak: float, warmup: int, min_frac: float = 0.1) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_val_sample(val_text: str, path: str) -> str:
    cut = val_text[:VAL_SAMPLE_CHARS]
    cut = cut[: cut.rfind("\n") + 1]  # end at a line boundary (keeps the final "\n")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(cut)
    return cut


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "models", "shakespeare", "tokenizer.json"))
    ap.add_argument("--out", help="output dir (default models/shakespeare; /tmp/kvserve-tiny-test with --tiny-test)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--minutes", type=float, default=8.0, help="safety cap on training wall time")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--bos-prob", type=float, default=0.5)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny-test", action="store_true",
                    help="smoke run (CPU here; uses the GPU if there is one unless --device cpu): 12 steps, "
                         "batch 2, eval on 8 val windows; full save/reload/report path, default --out /tmp/kvserve-tiny-test")
    args = ap.parse_args()
    if args.tiny_test:
        args.steps, args.batch_size, args.warmup = 12, 2, 4
        args.eval_every, args.log_every = 6, 2
        if args.out is None:
            args.out = "/tmp/kvserve-tiny-test"
    args.out = args.out or os.path.join(ROOT, "models", "shakespeare")
    args.warmup = max(1, min(args.warmup, args.steps // 10))
    os.makedirs(args.out, exist_ok=True)
    command = shlex.join([os.path.basename(sys.executable)] + sys.argv)
    t_start = time.time()

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.cuda.manual_seed_all(args.seed)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True  # training only; the reported losses are computed on CPU
        torch.backends.cudnn.allow_tf32 = True
    gpu_name = torch.cuda.get_device_name(device) if cuda else None
    print(f"device {device} ({gpu_name or platform.processor() or 'cpu'}), torch {torch.__version__}, "
          f"transformers {transformers.__version__}", flush=True)

    # ---------------------------------------------------------------- data
    tok = hf_check.load_tokenizer(args.tokenizer)
    assert tok.get_vocab_size() == 4096 and tok.token_to_id("<s>") == BOS and tok.token_to_id("</s>") == EOS
    with open(os.path.join(args.data_dir, "train.txt"), encoding="utf-8") as f:
        train_text = f.read()
    with open(os.path.join(args.data_dir, "val.txt"), encoding="utf-8") as f:
        val_text = f.read()
    train_ids = tok.encode(train_text, add_special_tokens=False).ids
    val_ids = tok.encode(val_text, add_special_tokens=False).ids
    sample_text = write_val_sample(val_text, os.path.join(args.out, "val_sample.txt"))
    train = torch.tensor(train_ids, dtype=torch.long, device=device)
    n_val_windows = len(val_ids) // SEQ
    val_windows = torch.tensor(val_ids[: n_val_windows * SEQ], dtype=torch.long).view(n_val_windows, SEQ)
    if args.tiny_test:
        val_windows = val_windows[:8]
    print(f"train {len(train_text):,} chars / {len(train_ids):,} tokens; val {len(val_text):,} chars / "
          f"{len(val_ids):,} tokens ({n_val_windows} windows of {SEQ}); val_sample {len(sample_text):,} chars",
          flush=True)

    # ---------------------------------------------------------------- model
    cfg = model_config()
    model = LlamaForCausalLM(cfg).to(device)
    model.config.use_cache = False
    add_residual_dropout(model, args.dropout)
    n_params = sum(p.numel() for p in model.parameters())  # tied weights counted once
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=cuda,
    )
    tokens_per_step = args.batch_size * SEQ
    print(f"params {n_params:,}; {args.steps} steps x {tokens_per_step:,} tokens = "
          f"{args.steps * tokens_per_step / 1e6:.1f}M tokens ({args.steps * tokens_per_step / len(train_ids):.1f} epochs)",
          flush=True)

    gen = torch.Generator().manual_seed(args.seed + 1)  # data order, independent of model init
    offsets = torch.arange(SEQ + 1, device=device)

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, len(train_ids) - SEQ, (args.batch_size,), generator=gen).to(device)
        w = train[starts[:, None] + offsets]  # (B, 513)
        bos_rows = (torch.rand(args.batch_size, generator=gen) < args.bos_prob).to(device)
        shifted = torch.cat([torch.full_like(w[:, :1], BOS), w[:, :-1]], dim=1)
        w = torch.where(bos_rows[:, None], shifted, w)
        return w[:, :-1], w[:, 1:]

    @torch.no_grad()
    def eval_val() -> float:
        model.eval()
        total = 0.0
        for i in range(0, len(val_windows), 32):
            xb = val_windows[i : i + 32].to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                logits = model(input_ids=xb).logits
            total += F.cross_entropy(logits[:, :-1].float().reshape(-1, cfg.vocab_size),
                                     xb[:, 1:].reshape(-1), reduction="sum").item()
        model.train()
        return total / (len(val_windows) * (SEQ - 1))

    # ---------------------------------------------------------------- train
    model.train()
    losses: list[torch.Tensor] = []  # kept on device: no host sync per step
    best = (float("inf"), -1, None)  # (val loss, step, state)
    evals = []
    t_train = time.time()
    t_log, steps_done, stopped_early = t_train, 0, False
    for step in range(args.steps):
        lr = lr_at(step, args.steps, args.lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batch()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.float().reshape(-1, cfg.vocab_size), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.detach())
        steps_done = step + 1
        if steps_done % args.log_every == 0 or steps_done == args.steps:
            now = time.time()
            k = min(args.log_every, len(losses))
            print(f"step {steps_done:5d}/{args.steps}  loss {torch.stack(losses[-k:]).mean().item():.4f}  lr {lr:.2e}  "
                  f"gnorm {gnorm.item():.2f}  {k * tokens_per_step / (now - t_log):,.0f} tok/s  "
                  f"{now - t_start:.0f}s", flush=True)
            t_log = now
        last = steps_done == args.steps or (time.time() - t_train) > args.minutes * 60
        if steps_done % args.eval_every == 0 or last:
            v = eval_val()
            evals.append({"step": steps_done, "val_loss_bf16": round(v, 5)})
            mark = ""
            if v < best[0]:
                best = (v, steps_done, {k_: t.detach().to("cpu", copy=True) for k_, t in model.state_dict().items()})
                mark = "  (best)"
            print(f"  eval step {steps_done}: val loss {v:.4f}{mark}", flush=True)
        if last:
            stopped_early = steps_done < args.steps
            if stopped_early:
                print(f"stopping at step {steps_done}: --minutes {args.minutes} reached", flush=True)
            break
    train_seconds = time.time() - t_train
    train_loss_last100 = torch.stack(losses[-100:]).mean().item()

    # ---------------------------------------------------------------- save (float16)
    model.load_state_dict(best[2])
    model.eval()
    model.config.use_cache = True
    model.to("cpu", torch.float16)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    model.save_pretrained(args.out)
    for name in ("config.json", "model.safetensors"):
        assert os.path.exists(os.path.join(args.out, name)), name
    if os.path.abspath(args.out) != os.path.dirname(os.path.abspath(args.tokenizer)):
        shutil.copyfile(args.tokenizer, os.path.join(args.out, "tokenizer.json"))  # self-contained output dir
    print(f"saved float16 weights of step {best[1]} to {args.out}", flush=True)

    # ---------------------------------------------------------------- reload in float32 and evaluate
    del opt
    reloaded = hf_check.load_model(args.out, "cpu")
    assert reloaded.dtype == torch.float32
    vs = hf_check.val_sample_loss(reloaded, tok, sample_text, "cpu")
    if args.tiny_test:
        val_res = hf_check.windows_loss(reloaded, val_windows.flatten().tolist(), SEQ, "cpu")
    else:
        val_res = hf_check.windows_loss(reloaded, val_ids, SEQ, "cpu")
    print(f"reloaded f16->f32 on cpu: val_loss {val_res['loss']:.4f} ({val_res['windows']} windows), "
          f"val_sample_loss {vs['loss']:.4f} ({vs['windows']} windows, {vs['predicted_tokens']} predictions)",
          flush=True)

    prompt = "ROMEO:\n"
    prompt_ids = [BOS] + tok.encode(prompt, add_special_tokens=False).ids
    with torch.no_grad():
        out = reloaded.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                                do_sample=False, max_new_tokens=48, pad_token_id=EOS)
    new_ids = out[0, len(prompt_ids):].tolist()
    sample_out = prompt + tok.decode(new_ids, skip_special_tokens=False)
    print("greedy sample:\n" + sample_out, flush=True)

    report = {
        "train_loss_last100": train_loss_last100,
        "val_loss": val_res["loss"],
        "val_loss_windows": val_res["windows"],
        "val_loss_definition": VAL_LOSS_DEF + (" [tiny-test: first 8 windows only]" if args.tiny_test else ""),
        "val_sample_loss": vs["loss"],
        "val_sample_windows": vs["windows"],
        "val_sample_predicted_tokens": vs["predicted_tokens"],
        "val_sample_tokens": vs["tokens"],
        "val_sample_chars": len(sample_text),
        "val_sample_loss_definition": hf_check.VAL_SAMPLE_LOSS_DEF,
        "eval_note": "val_loss and val_sample_loss: saved float16 checkpoint reloaded in float32 on CPU (HF eager attention)",
        "steps": steps_done,
        "steps_planned": args.steps,
        "stopped_by_minutes_cap": stopped_early,
        "best_step": best[1],
        "best_val_loss_during_training_bf16": best[0],
        "evals": evals,
        "tokens_seen": steps_done * tokens_per_step,
        "tokens_per_step": tokens_per_step,
        "train_tokens": len(train_ids),
        "val_tokens": len(val_ids),
        "epochs": steps_done * tokens_per_step / len(train_ids),
        "train_seconds": train_seconds,
        "wall_seconds": time.time() - t_start,
        "seed": args.seed,
        "param_count": n_params,
        "hyperparameters": {k: v for k, v in vars(args).items() if k not in ("data_dir", "tokenizer", "out")},
        "command": command,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "gpu": gpu_name,
        "greedy_reference": {"prompt": prompt, "prompt_ids_with_bos": prompt_ids, "max_new_tokens": 48,
                             "new_ids": new_ids, "text": sample_out},
        "sha256": {n: sha256(os.path.join(args.out, n)) for n in ("model.safetensors", "config.json", "val_sample.txt")}
                  | {"tokenizer.json": sha256(args.tokenizer)},
        "tiny_test": args.tiny_test,
    }
    with open(os.path.join(args.out, "train_report.json"), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(json.dumps({k: report[k] for k in ("train_loss_last100", "val_loss", "val_sample_loss", "steps", "best_step",
                                               "tokens_seen", "wall_seconds", "param_count", "gpu")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
