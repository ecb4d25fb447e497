"""Text sources (WikiText-2 from ../shared/data, local files, hub datasets) → token windows."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from compress.errors import CompressError

WIKITEXT = {
    "wikitext2-test": "wikitext-2-raw/wiki.test.raw",
    "wikitext2-valid": "wikitext-2/valid.txt",
}


def data_dir() -> Path:
    """Where WikiText-2 lives: $COMPRESS_DATA_DIR, else ../shared/data beside the checkout or cwd."""
    env = os.environ.get("COMPRESS_DATA_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parent.parent
    for cand in (repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data", Path.cwd() / "shared" / "data"):
        if cand.is_dir():
            return cand
    return repo.parent / "shared" / "data"


def source_path(source: str) -> Path | None:
    """The local file behind a source (None for hub datasets); a clear error if it is missing.

    Cheap, so the driver checks every source of a recipe before loading the model.
    """
    if source.startswith("hf:"):
        return None
    if source in WIKITEXT:
        path = data_dir() / WIKITEXT[source]
        if not path.is_file():
            raise CompressError(f"data source {source!r}: {path} not found; set COMPRESS_DATA_DIR to the folder holding {WIKITEXT[source]}")
        return path
    path = Path(source).expanduser()
    if not path.is_file():
        allowed = ", ".join(WIKITEXT)
        raise CompressError(f"data source {source!r}: no such file; allowed: a text file path, {allowed}, or hf:NAME[:CONFIG[:SPLIT]]")
    if not os.access(path, os.R_OK):
        raise CompressError(f"data source {source!r}: {path} is not readable")
    return path


def read_text(source: str) -> str:
    """The raw text of a source: a WikiText-2 name, a local file path, or hf:NAME[:CONFIG[:SPLIT]]."""
    path = source_path(source)
    return _read_hub(source) if path is None else _read_file(path, source)


def _read_file(path: Path, source: str) -> str:
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CompressError(f"data source {source!r}: cannot read {path}: {e.__class__.__name__}: {e}") from None
    if path.name == "wiki.test.raw":
        return standard_wikitext_join(raw)
    return raw


def standard_wikitext_join(raw: str) -> str:
    """The perplexity protocol of GPTQ/AWQ: rows as the HF dataset has them, joined with blank lines.

    Each non-blank line keeps its trailing newline, each blank line (a lone space in the raw
    file) becomes an empty row; rows are joined with "\\n\\n".
    """
    rows = [line if line.strip() else "" for line in raw.splitlines(keepends=True)]
    return "\n\n".join(rows)


def _read_hub(source: str) -> str:
    parts = source[3:].split(":")
    name, config, split = parts[0], (parts[1] if len(parts) > 1 else None), (parts[2] if len(parts) > 2 else "train")
    try:
        import datasets

        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # offline, unknown name, … : the user's data spec, not our bug
        raise CompressError(f"data source {source!r}: could not load from the hub ({e.__class__.__name__}); offline? use a local file instead") from None
    col = "text" if "text" in ds.column_names else ds.column_names[0]
    return "\n\n".join(str(t) for t in ds[col])


def tokenize(tokenizer, text: str) -> torch.Tensor:
    """The whole text as one 1-D tensor of token ids (tokenized once, as the protocol says)."""
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False, verbose=False).input_ids
    return ids[0]


def eval_windows(tokens: torch.Tensor, seq_len: int, max_windows: int | None = None) -> torch.Tensor:
    """Non-overlapping windows [n, seq_len]; the ragged tail is dropped (standard protocol)."""
    n = tokens.numel() // seq_len
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise CompressError(f"text has {tokens.numel()} tokens, fewer than one window of {seq_len}")
    return tokens[: n * seq_len].view(n, seq_len)


def calibration_windows(tokens: torch.Tensor, samples: int, seq_len: int, seed: int) -> torch.Tensor:
    """`samples` windows of `seq_len` tokens at seeded random offsets: [samples, seq_len]."""
    if tokens.numel() <= seq_len:
        raise CompressError(f"calibration text has {tokens.numel()} tokens, fewer than one window of {seq_len}")
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, tokens.numel() - seq_len, (samples,), generator=g)
    return torch.stack([tokens[s : s + seq_len] for s in starts.tolist()])
