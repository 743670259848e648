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

generate --model DIR --prompt TEXT --max-new-tokens N [--rust-ids "5 9 ..."] [--rust-prompt-ids "..."]
    Greedy decoding in float32 from a text prompt, tokenized exactly as a
    transformers user would: AutoTokenizer.from_pretrained(DIR)(TEXT).input_ids
    (tokenizer.json's post-processor decides whether a BOS is added; nothing is
    prepended by hand). Prints the prompt ids, the text and, on the last line,
    the new token ids separated by spaces. With --rust-ids (new ids only, or
    prompt+new; spaces or commas) it reports equal / the first mismatch and HF's
    top-2 logit margin there (a tiny margin means a near-tie, not a bug); with
    --rust-prompt-ids it also compares the prompt's ids; exit 1 if unequal.

text-parity --kvserve CMD --workdir DIR [--report FILE] [--markdown FILE]
    Token ids from TEXT prompts, end to end, on checkpoints it builds itself
    (random float32 Llama weights; byte-level BPE tokenizer = the shipped
    models/shakespeare/tokenizer.json, so nothing is downloaded):
      text-no-bos        tokenizer.json has no post-processor, but config.json
                         names bos_token_id 1 (as SmolLM2, Qwen, GPT-2-style BPE)
      text-bos-template  post-processor TemplateProcessing "<s> $A" (Llama 2 style)
      text-llama3-bos    added token <|begin_of_text|> and Sequence[ByteLevel,
                         TemplateProcessing] (Llama 3 style); generation_config.json
                         lists two EOS ids, the second one a token greedy decoding
                         reaches, so stopping on a listed id is checked too
    For each checkpoint and prompt it compares transformers' prompt ids
    (AutoTokenizer) with kvserve's, and transformers' greedy new tokens
    (generate(do_sample=False), float32, CPU) with kvserve's, by running
      CMD generate --model DIR/<name> --max-new-tokens N --print-ids PROMPT
    (CMD is split like a shell line) and reading its "prompt ids:" line and its
    last line. Writes a JSON report and a Markdown table that names the machine
    (GPU card when there is one). Exit 1 on any difference.

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
import platform
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
    """The raw `tokenizers` tokenizer of a tokenizer.json (for scoring text with no special tokens)."""
    from tokenizers import Tokenizer  # installed with transformers

    return Tokenizer.from_file(path)


def load_hf_tokenizer(model_dir: str):
    """The tokenizer a transformers user gets for `model_dir`: its `__call__` is the reference for
    how a text prompt becomes ids (special tokens as the checkpoint's tokenizer files say)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


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


def make_random_model(seed: int, tie: bool, rope_theta: float, rope_scaling=None, vocab_size: int = 512) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    rope = {"rope_parameters": {"rope_theta": rope_theta, **rope_scaling}} if rope_scaling else {}
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=344, num_hidden_layers=3,
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


def hf_greedy(model, tok, prompt: str, max_new_tokens: int, device: str = "cpu", ignore_eos: bool = False):
    """transformers' greedy decoding from a text prompt: (prompt ids, new ids, per-step scores)."""
    prompt_ids = tok(prompt).input_ids  # add_special_tokens=True: the post-processor decides
    x = torch.tensor([prompt_ids], device=device)
    eos = model.generation_config.eos_token_id
    pad = eos[0] if isinstance(eos, list) else eos
    with torch.no_grad():
        out = model.generate(
            x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens if ignore_eos else None,
            pad_token_id=pad, output_scores=True, return_dict_in_generate=True,
        )
    return prompt_ids, out.sequences[0, len(prompt_ids):].tolist(), out.scores


def first_mismatch(got: list[int], want: list[int], scores=None) -> dict:
    """Equal, or where `got` (kvserve) first differs from `want` (transformers), with HF's top-2
    logit margin at that step (a tiny margin is a near-tie, not a bug)."""
    if got == want:
        return {"equal": True}
    i = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    res = {"equal": False, "at": i, "kvserve": got[i] if i < len(got) else None, "hf": want[i] if i < len(want) else None}
    if scores is not None and i < len(scores):
        top2 = scores[i][0].float().topk(2)
        res["hf_top2_margin"] = (top2.values[0] - top2.values[1]).item()
    return res


def describe_mismatch(m: dict) -> str:
    if m["equal"]:
        return "EQUAL"
    if m["kvserve"] is None or m["hf"] is None:
        return f"lengths differ after {m['at']} equal tokens (kvserve {m['kvserve']}, hf {m['hf']})"
    margin = f" (hf top-2 logit margin there {m['hf_top2_margin']:.3g})" if "hf_top2_margin" in m else ""
    return f"FIRST MISMATCH at {m['at']}: kvserve {m['kvserve']}, hf {m['hf']}{margin}"


def cmd_generate(args) -> int:
    model = load_model(args.model, args.device)
    tok = load_hf_tokenizer(args.model)
    prompt_ids, new_ids, scores = hf_greedy(model, tok, args.prompt, args.max_new_tokens, args.device, args.ignore_eos)
    print(f"prompt ids ({len(prompt_ids)}, from AutoTokenizer): {' '.join(map(str, prompt_ids))}")
    print("text:", repr(args.prompt + tok.decode(new_ids, skip_special_tokens=False)))
    status = 0
    if args.rust_prompt_ids is not None:
        m = first_mismatch(parse_ids(args.rust_prompt_ids), prompt_ids)
        print(f"rust prompt ids: {describe_mismatch(m)}")
        status |= not m["equal"]
    if args.rust_ids is not None:
        rust = parse_ids(args.rust_ids)
        if len(rust) > len(new_ids) and rust[: len(prompt_ids)] == prompt_ids:
            rust = rust[len(prompt_ids):]
        m = first_mismatch(rust, new_ids, scores)
        print(f"rust ids: {describe_mismatch(m)}" + (f" ({len(new_ids)} tokens)" if m["equal"] else ""))
        status |= not m["equal"]
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"prompt": args.prompt, "prompt_ids": prompt_ids, "new_ids": new_ids,
                       "text": tok.decode(new_ids, skip_special_tokens=False),
                       "tokenizer": "AutoTokenizer.from_pretrained(model)(prompt).input_ids",
                       "torch": torch.__version__, "transformers": __import__("transformers").__version__,
                       "device": args.device, "machine": machine()}, f, indent=1)
    print(" ".join(map(str, new_ids)))
    return status


# --------------------------------------------------------------------------- text parity

def machine() -> str:
    """This machine in words: CPU model and, when torch sees one, the GPU card."""
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}"


SHIPPED_TOKENIZER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                 "models", "shakespeare", "tokenizer.json")

# Prompts: plain text, a leading space, a newline, non-ASCII bytes, and a special token written in the text.
TEXT_PROMPTS = [
    "ROMEO:\nO, she doth teach the torches to burn bright!",
    " To be, or not to be",
    "Où est le café? ✓",
    "<s>KING HENRY V:\nOnce more unto the breach",
]

TEXT_CASES = [
    # name, post-processor kind, what it stands for
    ("text-no-bos", None, "none (as SmolLM2, Qwen, GPT-2-style BPE)"),
    ("text-bos-template", "llama2", "TemplateProcessing `<s> $A` (Llama 2 style)"),
    ("text-llama3-bos", "llama3", "`<|begin_of_text|>` through Sequence[ByteLevel, TemplateProcessing] (Llama 3 style)"),
]


def make_text_checkpoint(mdir: str, kind, seed: int) -> None:
    """A random float32 Llama and a tokenizer.json whose post-processor is `kind`, saved in `mdir`."""
    from tokenizers import AddedToken, Tokenizer, processors

    tok = Tokenizer.from_file(SHIPPED_TOKENIZER)  # byte-level BPE, <pad>=0 <s>=1 </s>=2, no post-processor
    if kind == "llama2":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    elif kind == "llama3":
        tok.add_special_tokens([AddedToken("<|begin_of_text|>", special=True, normalized=False)])
        bot = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                          special_tokens=[("<|begin_of_text|>", bot)]),
        ])
    vocab = tok.get_vocab_size(with_added_tokens=True)
    model = make_random_model(seed, tie=True, rope_theta=10000.0, vocab_size=vocab)
    model.save_pretrained(mdir)  # config.json names bos_token_id 1 and eos_token_id 2 in every case
    tok.save(os.path.join(mdir, "tokenizer.json"))


def run_kvserve(cmd: str, mdir: str, prompt: str, max_new_tokens: int) -> dict:
    """kvserve's prompt ids and greedy new ids for a text prompt (`generate --print-ids`)."""
    argv = shlex.split(cmd) + ["generate", "--model", mdir, "--max-new-tokens", str(max_new_tokens), "--print-ids", prompt]
    proc = subprocess.run(argv, capture_output=True, text=True)
    res = {"command": shlex.join(argv)}
    lines = proc.stdout.splitlines()
    prompt_lines = [l for l in lines if l.startswith("prompt ids:")]
    if proc.returncode != 0 or not prompt_lines or not lines:
        res["error"] = f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-2000:]}"
        return res
    res["prompt_ids"] = parse_ids(prompt_lines[-1].split(":", 1)[1])
    res["new_ids"] = parse_ids(lines[-1])
    return res


def cmd_text_parity(args) -> int:
    import transformers

    os.makedirs(args.workdir, exist_ok=True)
    report = {"transformers": transformers.__version__, "torch": torch.__version__, "machine": machine(),
              "device": "cpu", "dtype": "float32", "max_new_tokens": args.max_new_tokens,
              "command": shlex.join(["python3", "scripts/hf_check.py"] + sys.argv[1:]), "cases": {}}
    failed = False
    for seed, (name, kind, what) in enumerate(TEXT_CASES, start=10):
        mdir = os.path.join(args.workdir, name)
        make_text_checkpoint(mdir, kind, seed)
        model = load_model(mdir)
        if kind == "llama3":
            # A second EOS id that greedy decoding reaches: the first new token of the first prompt
            # that is neither EOS nor already in the prompt's output before it.
            _, probe, _ = hf_greedy(model, load_hf_tokenizer(mdir), TEXT_PROMPTS[0], args.max_new_tokens, ignore_eos=True)
            extra = next((t for i, t in enumerate(probe) if i >= 3 and t not in probe[:i] and t != 2), None)
            eos = [2] + ([extra] if extra is not None else [])
            model.generation_config.eos_token_id = eos
            model.generation_config.save_pretrained(mdir)
            model = load_model(mdir)
        tok = load_hf_tokenizer(mdir)
        raw = load_tokenizer(os.path.join(mdir, "tokenizer.json"))
        case = {"post_processor": what, "tokenizer_class": type(tok).__name__,
                "config_bos_token_id": model.config.bos_token_id,
                "eos_token_id": model.generation_config.eos_token_id, "prompts": []}
        for prompt in TEXT_PROMPTS:
            prompt_ids, new_ids, scores = hf_greedy(model, tok, prompt, args.max_new_tokens)
            row = {"prompt": prompt, "hf_prompt_ids": prompt_ids, "hf_new_ids": new_ids,
                   "tokenizers_lib_ids": raw.encode(prompt, add_special_tokens=True).ids}
            if args.kvserve:
                k = run_kvserve(args.kvserve, mdir, prompt, args.max_new_tokens)
                row["kvserve_command"] = k["command"]
                if "error" in k:
                    row["error"] = k["error"]
                    row["ok"] = False
                else:
                    row["kvserve_prompt_ids"] = k["prompt_ids"]
                    row["kvserve_new_ids"] = k["new_ids"]
                    row["prompt_ids"] = first_mismatch(k["prompt_ids"], prompt_ids)
                    row["new_ids"] = first_mismatch(k["new_ids"], new_ids, scores)
                    row["ok"] = row["prompt_ids"]["equal"] and row["new_ids"]["equal"]
                failed |= not row["ok"]
                verdict = row["error"] if "error" in row else (
                    f"prompt ids {describe_mismatch(row['prompt_ids'])}, greedy {describe_mismatch(row['new_ids'])}")
                print(f"{name:<18} {prompt!r:<48} {verdict}", flush=True)
            case["prompts"].append(row)
        report["cases"][name] = case
    report["ok"] = (not failed) if args.kvserve else None
    text = json.dumps(report, indent=1)
    if args.report:
        with open(args.report, "w") as f:
            f.write(text + "\n")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text_parity_markdown(report))
    if not args.report and not args.markdown:
        print(text)
    return 1 if failed else 0


def text_parity_markdown(r: dict) -> str:
    def code(text: str) -> str:  # a table cell showing `text` literally
        return "`" + text.replace("\n", "\\n").replace("|", "\\|") + "`"

    def ids(xs, n=8):
        return " ".join(map(str, xs[:n])) + (" …" if len(xs) > n else "")

    def verdict(row, key):
        if "error" in row:
            return "kvserve failed"
        m = row.get(key)
        return "—" if m is None else ("yes" if m["equal"] else "**NO**: " + describe_mismatch(m))

    out = ["| checkpoint | tokenizer.json post-processor | config.json `bos_token_id` | EOS ids (generation_config.json) |",
           "|---|---|---:|---|"]
    for name, c in r["cases"].items():
        eos = c["eos_token_id"] if isinstance(c["eos_token_id"], list) else [c["eos_token_id"]]
        out.append(f"| `{name}` | {c['post_processor'].replace('|', chr(92) + '|')} | {c['config_bos_token_id']} | "
                   f"{', '.join(map(str, eos))} |")
    out += ["", f"| checkpoint | prompt | prompt ids (transformers) | same in kvserve | greedy tokens equal (at most "
                f"{r['max_new_tokens']}) |", "|---|---|---|---|---|"]
    for name, c in r["cases"].items():
        for row in c["prompts"]:
            greedy = verdict(row, "new_ids")
            n = len(row["hf_new_ids"])
            if row.get("new_ids", {}).get("equal"):
                greedy += f" ({n}{', stopped at EOS ' + str(row['hf_new_ids'][-1]) if n < r['max_new_tokens'] else ''})"
            out.append(f"| `{name}` | {code(row['prompt'])} | {ids(row['hf_prompt_ids'])} | {verdict(row, 'prompt_ids')} | {greedy} |")
    out.append("")
    out.append(f"*Prompt ids from transformers {r['transformers']}'s `AutoTokenizer.from_pretrained(dir)(text)`, greedy tokens "
               f"from `generate(do_sample=False)` in float32 on the CPU (torch {r['torch']}), against `kvserve generate "
               f"--print-ids`; machine: {r['machine']}. Command: `{r['command']}`.*")
    return "\n".join(out) + "\n"


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
    p.add_argument("--rust-prompt-ids", help="kvserve's prompt ids (its `prompt ids:` line), to compare too")
    p.add_argument("--ignore-eos", action="store_true", help="never stop early at EOS")
    p.add_argument("--json-out", help="also write prompt, prompt_ids, new_ids and text as JSON")
    p.add_argument("--device", default="cpu")
    p = sub.add_parser("text-parity", help="token ids and greedy tokens from text prompts: kvserve vs transformers")
    p.add_argument("--kvserve", help="command that runs the kvserve binary (its `generate` subcommand is used)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--report", help="JSON report")
    p.add_argument("--markdown", help="Markdown table for the book")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p = sub.add_parser("loss", help="recompute val_sample_loss")
    p.add_argument("--model", required=True)
    p.add_argument("--sample", help="default: MODEL/val_sample.txt")
    p.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    return {"parity": cmd_parity, "generate": cmd_generate, "text-parity": cmd_text_parity, "loss": cmd_loss}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
