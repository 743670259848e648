#!/usr/bin/env python3
"""Hugging Face reference checks for kvserve's Rust Llama implementation.

Needs only torch + transformers (the `tokenizers` package comes with
transformers). Runs on CPU by default; nothing is downloaded.

Subcommands
-----------
parity --rust-bin CMD --workdir DIR [--report FILE]
    Builds two small random Llama checkpoints (grouped-query attention,
    randomised RMSNorm weights, larger-than-default init so attention is not
    uniform) and compares HF float32 logits with the Rust binary's:
      random-gqa          float32 weights, separate lm_head, rope_theta 500000
      random-gqa-tied-f16 float16 weights, tied embeddings, rope_theta 10000;
                          the HF reference is that f16 checkpoint loaded in f32
      random-gqa-llama3-rope-bf16  bfloat16 weights, tied, Llama 3.1 rope scaling
                          (as Llama 3.2 checkpoints use), reference loaded in f32
    For each, it runs  CMD --model DIR/<name> --ids 3,17,... --out DIR/rust_logits_<name>.json
    (CMD is split like a shell line, so "target/release/kvserve logits" works),
    which must write {"logits": [[f32 x vocab] x seq]}. Metrics: max_abs = max|a-b|,
    max_rel = max|a-b| / max|b| (b = HF), and for information the per-element
    max |a-b| / (|b| + 1e-6), plus argmax agreement per position. HF logits are
    also written to DIR/hf_logits_<name>.json. Exit status 1 if the float32
    case has max_rel >= 1e-4 (or the Rust run fails). Without --rust-bin it only
    writes the checkpoints and HF logits (fixtures).

generate --model DIR --prompt TEXT --max-new-tokens N [--rust-ids "5 9 ..."]
    Greedy decoding in float32: ids = [config.bos_token_id] + encode(TEXT)
    with DIR/tokenizer.json; prints the text and, on the last line, the new
    token ids separated by spaces. With --rust-ids (new ids only, or prompt+new;
    spaces or commas) it reports equal / the first mismatch and HF's top-2 logit
    margin there (a tiny margin means a near-tie, not a bug); exit 1 if unequal.

loss --model DIR [--sample FILE]
    Recomputes val_sample_loss (definition below) for DIR, in float32, and
    compares it with DIR/train_report.json if present.

val_sample_loss definition (the Rust test reimplements it; same text as VAL_SAMPLE_LOSS_DEF)
----------------------------------------------------------------------------------------
Tokenize val_sample.txt (the whole file as one string, UTF-8) with tokenizer.json,
adding no special tokens (no BOS). Split the id stream into consecutive
non-overlapping windows of 256 tokens, dropping the incomplete tail. Run each
window through the model on its own (positions 0..255, fresh context, float32)
and take the natural-log cross-entropy of predicting token t+1 from the logits at
position t, for t = 0..254 (255 predictions per window). val_sample_loss is the
mean over all predicted tokens of all windows (= total loss / (255 * n_windows)).
"""

import argparse
import json
import os
import shlex
import subprocess
import sys

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

VAL_SAMPLE_WINDOW = 256
VAL_SAMPLE_LOSS_DEF = (
    "Tokenize val_sample.txt (the whole file as one string, UTF-8) with tokenizer.json, "
    "adding no special tokens (no BOS). Split the id stream into consecutive non-overlapping "
    "windows of 256 tokens, dropping the incomplete tail. Run each window through the model "
    "on its own (positions 0..255, fresh context, float32) and take the natural-log cross-entropy "
    "of predicting token t+1 from the logits at position t, for t = 0..254 (255 predictions per "
    "window). val_sample_loss is the mean over all predicted tokens of all windows "
    "(= total loss / (255 * n_windows))."
)


# --------------------------------------------------------------------------- shared helpers

def load_tokenizer(path: str):
    from tokenizers import Tokenizer  # installed with transformers

    return Tokenizer.from_file(path)


def load_model(model_dir: str, device: str = "cpu") -> LlamaForCausalLM:
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    return model.to(device).eval()


@torch.no_grad()
def windows_loss(model, ids: list[int], window: int, device: str = "cpu", batch: int = 16) -> dict:
    """Mean next-token cross-entropy over non-overlapping `window`-token windows of `ids`
    (incomplete tail dropped; each window predicts its tokens 1..window-1)."""
    n = len(ids) // window
    if n == 0:
        raise ValueError(f"need at least {window} tokens, got {len(ids)}")
    x = torch.tensor(ids[: n * window], dtype=torch.long).view(n, window)
    total = 0.0
    for i in range(0, n, batch):
        xb = x[i : i + batch].to(device)
        logits = model(input_ids=xb, use_cache=False).logits.float()
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), xb[:, 1:].reshape(-1), reduction="sum")
        total += loss.item()
    count = n * (window - 1)
    return {"loss": total / count, "windows": n, "predicted_tokens": count, "tokens": len(ids)}


def val_sample_loss(model, tokenizer, text: str, device: str = "cpu") -> dict:
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    return windows_loss(model, ids, VAL_SAMPLE_WINDOW, device)


def no_tf32() -> None:
    """Make float32 mean float32 on CUDA too (reference numbers must not use TF32)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


# --------------------------------------------------------------------------- parity

# Llama 3.1-style frequency scaling; original context 64 so that, with head_dim 16 and theta 5e5,
# one frequency is kept, one interpolated and the rest divided by `factor` (every branch runs).
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}

PARITY_CASES = [
    # name, seed, tie_word_embeddings, rope_theta, save dtype, rope scaling
    ("random-gqa", 0, False, 500000.0, torch.float32, None),
    ("random-gqa-tied-f16", 1, True, 10000.0, torch.float16, None),
    ("random-gqa-llama3-rope-bf16", 2, True, 500000.0, torch.bfloat16, LLAMA3_ROPE),
]


def make_random_model(seed: int, tie: bool, rope_theta: float, rope_scaling=None) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    rope = {"rope_parameters": {"rope_theta": rope_theta, **rope_scaling}} if rope_scaling else {}
    cfg = LlamaConfig(
        vocab_size=512, hidden_size=128, intermediate_size=344, num_hidden_layers=3,
        num_attention_heads=8, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=256, rope_theta=rope_theta, rms_norm_eps=1e-5,
        tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2,
        initializer_range=0.1,  # default 0.02 gives near-uniform attention: a weak test
        **rope,
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):  # ones by default: would hide a missing gain
                p.uniform_(0.5, 1.5)
    return model.float().eval()


def compare(a: torch.Tensor, b: torch.Tensor) -> dict:
    """a = Rust, b = HF reference."""
    diff = (a - b).abs()
    return {
        "shape": list(b.shape),
        "max_abs": diff.max().item(),
        "max_abs_ref": b.abs().max().item(),
        "max_rel": (diff.max() / b.abs().max()).item(),
        "max_rel_elementwise": (diff / (b.abs() + 1e-6)).max().item(),
        "argmax_equal_positions": int((a.argmax(-1) == b.argmax(-1)).sum().item()),
        "positions": int(b.shape[0]),
    }


def cmd_parity(args) -> int:
    os.makedirs(args.workdir, exist_ok=True)
    gen = torch.Generator().manual_seed(1234)
    ids = torch.randint(3, 512, (args.seq,), generator=gen).tolist()
    summary = {"ids": ids, "threshold_max_rel": args.threshold, "torch": torch.__version__,
               "transformers": __import__("transformers").__version__, "cases": {}}
    failed = False
    for name, seed, tie, theta, save_dtype, rope_scaling in PARITY_CASES:
        mdir = os.path.join(args.workdir, name)
        model = make_random_model(seed, tie, theta, rope_scaling)
        model.to(save_dtype).save_pretrained(mdir)
        ref_model = load_model(mdir)  # f32 reference from exactly what was saved
        with torch.no_grad():
            ref = ref_model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()
        with open(os.path.join(args.workdir, f"hf_logits_{name}.json"), "w") as f:
            json.dump({"ids": ids, "logits": ref.tolist()}, f)
        case = {"model_dir": mdir, "saved_dtype": str(save_dtype).replace("torch.", ""),
                "tie_word_embeddings": tie, "rope_theta": theta,
                "rope_scaling": rope_scaling["rope_type"] if rope_scaling else None}
        if args.rust_bin:
            out = os.path.join(args.workdir, f"rust_logits_{name}.json")
            if os.path.exists(out):
                os.remove(out)
            cmd = shlex.split(args.rust_bin) + ["--model", mdir, "--ids", ",".join(map(str, ids)), "--out", out]
            case["command"] = shlex.join(cmd)
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0 or not os.path.exists(out):
                case["error"] = f"rust exited {proc.returncode}: {proc.stderr[-2000:]}"
                case["ok"] = False
            else:
                with open(out) as f:
                    got = torch.tensor(json.load(f)["logits"], dtype=torch.float32)
                if got.shape != ref.shape:
                    case["error"] = f"shape {list(got.shape)} != {list(ref.shape)}"
                    case["ok"] = False
                else:
                    case.update(compare(got, ref))
                    case["ok"] = case["max_rel"] < args.threshold
            if save_dtype == torch.float32 and not case["ok"]:
                failed = True
        summary["cases"][name] = case
    summary["ok"] = not failed if args.rust_bin else None
    text = json.dumps(summary, indent=2)
    print(text)
    if args.report:
        with open(args.report, "w") as f:
            f.write(text + "\n")
    return 1 if failed else 0


# --------------------------------------------------------------------------- generate

def parse_ids(s: str) -> list[int]:
    return [int(t) for t in s.replace(",", " ").split()]


def cmd_generate(args) -> int:
    model = load_model(args.model, args.device)
    tok = load_tokenizer(os.path.join(args.model, "tokenizer.json"))
    bos = model.config.bos_token_id
    prompt_ids = ([bos] if bos is not None else []) + tok.encode(args.prompt, add_special_tokens=False).ids
    x = torch.tensor([prompt_ids], device=args.device)
    with torch.no_grad():
        out = model.generate(
            x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=args.max_new_tokens,
            min_new_tokens=args.max_new_tokens if args.ignore_eos else None,
            pad_token_id=model.config.eos_token_id, output_scores=True, return_dict_in_generate=True,
        )
    new_ids = out.sequences[0, len(prompt_ids):].tolist()
    print(f"prompt ids ({len(prompt_ids)}, BOS first): {' '.join(map(str, prompt_ids))}")
    print("text:", repr(args.prompt + tok.decode(new_ids, skip_special_tokens=False)))
    status = 0
    if args.rust_ids is not None:
        rust = parse_ids(args.rust_ids)
        if len(rust) > len(new_ids) and rust[: len(prompt_ids)] == prompt_ids:
            rust = rust[len(prompt_ids):]
        mismatch = next((i for i, (a, b) in enumerate(zip(rust, new_ids)) if a != b), None)
        if mismatch is None and len(rust) == len(new_ids):
            print(f"rust ids: EQUAL ({len(new_ids)} tokens)")
        else:
            status = 1
            if mismatch is None:
                print(f"rust ids: lengths differ (rust {len(rust)}, hf {len(new_ids)}), common prefix equal")
            else:
                top2 = out.scores[mismatch][0].float().topk(2)
                print(f"rust ids: FIRST MISMATCH at new token {mismatch}: rust {rust[mismatch]}, hf {new_ids[mismatch]} "
                      f"(hf top-2 logit margin there {(top2.values[0] - top2.values[1]).item():.3g})")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"prompt": args.prompt, "prompt_ids": prompt_ids, "new_ids": new_ids,
                       "text": tok.decode(new_ids, skip_special_tokens=False),
                       "torch": torch.__version__, "transformers": __import__("transformers").__version__,
                       "device": args.device}, f, indent=1)
    print(" ".join(map(str, new_ids)))
    return status


# --------------------------------------------------------------------------- loss

def cmd_loss(args) -> int:
    if args.device.startswith("cuda"):
        no_tf32()
    model = load_model(args.model, args.device)
    tok = load_tokenizer(os.path.join(args.model, "tokenizer.json"))
    sample = args.sample or os.path.join(args.model, "val_sample.txt")
    with open(sample, encoding="utf-8") as f:
        text = f.read()
    res = val_sample_loss(model, tok, text, args.device)
    res["sample"] = sample
    report = os.path.join(args.model, "train_report.json")
    if os.path.exists(report):
        with open(report) as f:
            rep = json.load(f)
        if "val_sample_loss" in rep:
            res["train_report_val_sample_loss"] = rep["val_sample_loss"]
            res["abs_diff"] = abs(rep["val_sample_loss"] - res["loss"])
    print(json.dumps(res, indent=2))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("parity", help="compare Rust logits with HF on random GQA checkpoints")
    p.add_argument("--rust-bin", help="command that runs the Rust logits dumper (may include a subcommand)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--report")
    p.add_argument("--seq", type=int, default=24, help="number of token ids")
    p.add_argument("--threshold", type=float, default=1e-4)
    p = sub.add_parser("generate", help="greedy generation with HF (float32)")
    p.add_argument("--model", required=True)
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--rust-ids")
    p.add_argument("--ignore-eos", action="store_true", help="never stop early at EOS")
    p.add_argument("--json-out", help="also write prompt, prompt_ids, new_ids and text as JSON")
    p.add_argument("--device", default="cpu")
    p = sub.add_parser("loss", help="recompute val_sample_loss")
    p.add_argument("--model", required=True)
    p.add_argument("--sample", help="default: MODEL/val_sample.txt")
    p.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    return {"parity": cmd_parity, "generate": cmd_generate, "loss": cmd_loss}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
