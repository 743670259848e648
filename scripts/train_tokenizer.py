#!/usr/bin/env python3
"""Train the byte-level BPE tokenizer for kvserve's small Shakespeare model.

Input:  data/train.txt (from scripts/corpus.py), trained on as ONE string, so the
        pre-tokenization seen in training is exactly what encoding the file gives.
Output: models/shakespeare/tokenizer.json (shipped; loaded by the Rust `tokenizers`
        crate and by the Python scripts).

Tokenizer (HF `tokenizers` library):
  * model: BPE, vocab_size 4096, no unk token (byte-level covers every input)
  * special tokens first: <pad>=0, <s>=1 (BOS), </s>=2 (EOS); then the 256 byte
    symbols; then merges
  * normalizer: none
  * pre-tokenizer: ByteLevel(add_prefix_space=False, use_regex=True)  (GPT-2 regex)
  * decoder: ByteLevel, so decode(encode(text)) == text for any text
  * post-processor: none; encode() never adds BOS/EOS (transformers' AutoTokenizer and kvserve add none)

Deterministic: the same train.txt always gives a byte-identical tokenizer.json
(checked below by training twice in-process).

Usage:  python3 scripts/train_tokenizer.py [--vocab-size 4096]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECIALS = ["<pad>", "<s>", "</s>"]


def build(text: str, vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text], trainer=trainer, length=1)
    return tok


def serialize(tok: Tokenizer) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "t.json")
        tok.save(p, pretty=True)
        with open(p, "rb") as f:
            return f.read()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default=os.path.join(ROOT, "data", "train.txt"))
    ap.add_argument("--val", default=os.path.join(ROOT, "data", "val.txt"))
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "shakespeare", "tokenizer.json"))
    ap.add_argument("--vocab-size", type=int, default=4096)
    args = ap.parse_args()

    with open(args.train, encoding="utf-8") as f:
        train = f.read()
    with open(args.val, encoding="utf-8") as f:
        val = f.read()

    tok = build(train, args.vocab_size)
    blob = serialize(tok)
    assert serialize(build(train, args.vocab_size)) == blob, "tokenizer training is not deterministic"

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".tmp", "wb") as f:
        f.write(blob)
    os.replace(args.out + ".tmp", args.out)

    tok = Tokenizer.from_file(args.out)  # check what we ship, not the in-memory object
    vocab = tok.get_vocab()
    assert tok.get_vocab_size() == args.vocab_size == len(vocab), (tok.get_vocab_size(), len(vocab))
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    assert json.loads(blob)["post_processor"] is None

    # Round trip and compression on held-out text, plus some awkward strings.
    samples = [val, val[:40_000], "HAMLET:\nTo be, or not to be: that is the question.\n",
               "  leading spaces\t\ttabs\r\n<s> not special? </s>", "naïve — café ☃ 🎭 日本語", ""]
    for s in samples:
        ids = tok.encode(s).ids
        assert tok.decode(ids, skip_special_tokens=False) == s, f"round trip failed for {s[:60]!r}"
    n_train = len(tok.encode(train).ids)
    n_val = len(tok.encode(val).ids)
    enc = tok.encode("ROMEO:\nBut, soft! what light through yonder window breaks?")
    print(f"wrote {args.out} ({len(blob):,} bytes, sha256 {hashlib.sha256(blob).hexdigest()[:16]})")
    print(f"vocab size {tok.get_vocab_size()}; specials {[(s, tok.token_to_id(s)) for s in SPECIALS]}")
    print(f"train: {len(train):,} chars -> {n_train:,} tokens ({len(train) / n_train:.2f} chars/token)")
    print(f"val:   {len(val):,} chars -> {n_val:,} tokens ({len(val) / n_val:.2f} chars/token)")
    print(f"round trip OK on {len(samples)} samples (incl. all of val.txt)")
    print("example:", enc.tokens, enc.ids)


if __name__ == "__main__":
    main()
