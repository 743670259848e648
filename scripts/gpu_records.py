#!/usr/bin/env python3
"""Renders the records of the GPU run (scripts/gpu_model_checks.sh; its $OUT files are kept in
book/src/generated/gpu/) and the shipped model's train_report.json into the book's Markdown:

  book/src/generated/hf-parity.md    ch00's logits vs transformers' on three random GQA checkpoints
  book/src/generated/hf-text-parity.md  text prompts → ids → greedy tokens (hf_check.py text-parity
                                     writes it; copied from the GPU run's records when present)
  book/src/generated/model-card.md   the shipped model: training, losses, Rust-vs-PyTorch, sample

usage: python3 scripts/gpu_records.py [--kvserve target/release/kvserve]
(`kvserve eval` is run to put our own loss beside the training script's.)
"""
import argparse, json, os, re, subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEN = os.path.join(ROOT, "book", "src", "generated")
REC = os.path.join(GEN, "gpu")


def machine():
    lines = open(os.path.join(REC, "machine.txt")).read().strip().splitlines()
    gpu = lines[1].split(",")[0].strip() if len(lines) > 1 else "?"
    return gpu, (lines[2] if len(lines) > 2 else "")


def parity():
    r = json.load(open(os.path.join(REC, "parity.json")))
    gpu, sw = machine()
    out = ["| checkpoint | weights | lm_head | RoPE | max abs. error | max rel. error (max\\|Δ\\| / max\\|logit\\|) | same argmax | below 1e-4 |",
           "|---|---|---|---|---:|---:|---:|---|"]
    for name, c in r["cases"].items():
        out.append(f"| `{name}` | {c['saved_dtype']} | {'tied' if c['tie_word_embeddings'] else 'separate'} | θ = {c['rope_theta']:g}{', ' + c['rope_scaling'] + ' scaling' if c.get('rope_scaling') else ''} | "
                   f"{c['max_abs']:.2e} | **{c['max_rel']:.2e}** | {c['argmax_equal_positions']}/{c['positions']} | "
                   f"{'yes' if c['max_rel'] < r['threshold_max_rel'] else 'NO'} |")
    out.append("")
    out.append(f"*{len(r['ids'])} fixed token ids, logits at every position, HF in float32 on the CPU of the GPU machine "
               f"({gpu}; {sw}); kvserve's `ch01-naive` example `logits` built here and run there. "
               f"Command: `bash scripts/gpu_model_checks.sh` (its `parity` step).*")
    return "\n".join(out) + "\n"


def model_card(kvserve):
    rep = json.load(open(os.path.join(ROOT, "models", "shakespeare", "train_report.json")))
    gpu, sw = machine()
    log = open(os.path.join(REC, "train.log")).read()
    evals = re.findall(r"eval step (\d+): val loss ([\d.]+)", log)
    train_at = dict(re.findall(r"step +(\d+)/\d+ +loss ([\d.]+)", log))
    ev = subprocess.run([kvserve, "eval"], capture_output=True, text=True, check=True).stdout
    ours = float(re.search(r"kvserve, f32 CPU\): ([\d.]+)", ev).group(1))
    theirs = rep["val_sample_loss"]
    o = []
    o.append(f"Trained with `{rep['command']}` on one {rep['gpu']} ({sw}): {rep['steps']} steps × "
             f"{rep['tokens_per_step']:,} tokens = {rep['tokens_seen'] / 1e6:.1f} M tokens ({rep['epochs']:.1f} passes over "
             f"{rep['train_tokens']:,} training tokens) in {rep['train_seconds']:.0f} s; seed {rep['seed']}; "
             f"{rep['param_count']:,} parameters.\n")
    o.append("| step | train loss (batch) | validation loss (bf16, in training) |\n|---:|---:|---:|")
    for step, v in evals:
        o.append(f"| {step} | {train_at.get(step, '—')} | {v} |")
    o.append("")
    o.append(f"The saved weights are step {rep['best_step']}'s (the best validation loss). Reloaded from the float16 file "
             f"in float32 (nats per token):\n")
    o.append("| measure | value |\n|---|---:|")
    o.append(f"| train loss, mean of the last 100 steps | {rep['train_loss_last100']:.4f} |")
    o.append(f"| `val_loss`: all of `data/val.txt` ({rep['val_loss_windows']} windows of 512) | {rep['val_loss']:.4f} |")
    o.append(f"| `val_sample_loss` by PyTorch (`val_sample.txt`, {rep['val_sample_windows']} windows of 256) | {theirs:.6f} |")
    o.append(f"| `val_sample_loss` by kvserve (`kvserve eval`, f32 on this CPU) | {ours:.6f} |")
    o.append(f"| relative difference | {100 * abs(ours - theirs) / theirs:.4f} % |")
    o.append("")
    hf = open(os.path.join(REC, "hf_generate.log")).read()
    verdict = re.search(r"rust ids: (.*)", hf).group(1)
    sample = open(os.path.join(REC, "kvserve_generate.txt")).read().split("\n[ch02")[0]
    o.append(f"Greedy decoding, 64 new tokens, through kvserve (`generate --stage ch02`) and through transformers' "
             f"`generate(do_sample=False)` on the same checkpoint on the {gpu}: **{verdict}**. The text:\n")
    o.append("```text\n" + sample.rstrip() + "\n```")
    return "\n".join(o) + "\n"


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--kvserve", default=os.path.join(ROOT, "target", "release", "kvserve"))
    a = ap.parse_args()
    with open(os.path.join(GEN, "hf-parity.md"), "w") as f:
        f.write(parity())
    with open(os.path.join(GEN, "model-card.md"), "w") as f:
        f.write(model_card(a.kvserve))
    wrote = ["hf-parity.md", "model-card.md"]
    text_parity = os.path.join(REC, "hf-text-parity.md")
    if os.path.exists(text_parity):
        with open(text_parity) as src, open(os.path.join(GEN, "hf-text-parity.md"), "w") as f:
            f.write(src.read())
        wrote.append("hf-text-parity.md")
    print("wrote " + ", ".join(wrote))
