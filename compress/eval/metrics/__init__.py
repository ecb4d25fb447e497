"""`evaluate` metrics that wrap compress's own evaluation, and `compress eval --metric` running them through `evaluate`.

A metric here is a folder holding a script of the same name, which is what `evaluate.load(PATH)` loads from a
local path without the hub. `evaluate` is imported only when a metric runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from compress.errors import CompressError

HERE = Path(__file__).resolve().parent
BUILTIN = {"perplexity_protocol": HERE / "perplexity_protocol"}  # by name, for `--metric perplexity_protocol`
PERPLEXITY_PROTOCOL = str(BUILTIN["perplexity_protocol"])  # evaluate.load(PERPLEXITY_PROTOCOL)


def score_texts(texts: list[str], model: str | nn.Module, tokenizer: Any = None, *, seq_len: int = 2048,
                max_windows: int | None = None, device: str | None = None, progress: bool = False) -> dict[str, Any]:
    """The standard protocol on texts given as rows (joined with blank lines): what the metric computes."""
    from compress.eval.perplexity import text_perplexity
    from compress.models import compute_dtype, load_model, pick_device

    if isinstance(model, nn.Module):
        if tokenizer is None:
            raise CompressError("perplexity_protocol: model=<nn.Module> needs tokenizer=")
        net, tok = model, tokenizer
    else:
        dev = pick_device(device)
        net, tok = load_model(model, dev, compute_dtype(dev))  # as `compress.evaluate` loads it
    return text_perplexity(net, tok, "\n\n".join(texts), seq_len, max_windows, progress)


def metric_path(name_or_path: str) -> Path:
    """A built-in metric's folder by name, or a local metric (a folder holding NAME.py, or a .py file)."""
    if name_or_path in BUILTIN:
        return BUILTIN[name_or_path]
    p = Path(name_or_path).expanduser()
    if p.is_file() and p.suffix == ".py" or p.is_dir() and (p / f"{p.name}.py").is_file():
        return p
    raise CompressError(f"--metric {name_or_path!r}: not a local evaluate metric (a folder holding "
                        f"{p.name or 'NAME'}.py, or a .py file) nor a built-in one ({', '.join(BUILTIN)}); "
                        f"metrics are not fetched from the hub")


def run_metric(name_or_path: str, model: str, data: str, seq_len: int, max_windows: int | None, device: str | None,
               progress: bool = False) -> dict[str, Any]:
    """Load a metric through `evaluate` (offline: a local path) and compute it on the text of `data` for `model`.

    A metric takes the text as `predictions` (one row) and model, seq_len, max_windows, device, progress as
    keyword arguments, like perplexity_protocol.
    """
    from compress.data import read_text

    path = metric_path(name_or_path)
    text = read_text(data)  # a missing data source fails before loading anything
    import evaluate

    try:
        metric = evaluate.load(str(path))
    except Exception as e:  # a broken script: the user's input, one line
        raise CompressError(f"--metric {name_or_path!r}: evaluate could not load {path}: {type(e).__name__}: {_first(e)}") from None
    try:
        out = metric.compute(predictions=[text], model=model, seq_len=seq_len, max_windows=max_windows, device=device,
                             progress=progress)
    except CompressError:
        raise
    except Exception as e:
        raise CompressError(f"--metric {name_or_path!r}: compute failed: {type(e).__name__}: {_first(e)} (a metric "
                            f"takes predictions=[text], model, seq_len, max_windows, device, progress)") from None
    if not isinstance(out, dict):
        raise CompressError(f"--metric {name_or_path!r}: compute returned {type(out).__name__}, not a dict of results")
    return out


def _first(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]
