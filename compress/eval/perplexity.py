"""Perplexity with the standard protocol: the whole text tokenized once, non-overlapping windows."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from compress.data import eval_windows, read_text, tokenize
from compress.errors import CompressError


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def check_positions(model: nn.Module, length: int, what: str) -> None:
    """A window longer than the model's positions is a user error (RoPE extrapolates to garbage silently)."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(limit, int) and length > limit:
        raise CompressError(f"{what} {length}: longer than the model's {limit} positions (max_position_embeddings); use ≤ {limit}")


@torch.no_grad()
def perplexity(model: nn.Module, tokenizer: Any, source: str = "wikitext2-test", seq_len: int = 2048,
               max_windows: int | None = None, progress: bool = True) -> dict[str, Any]:
    """exp(mean next-token NLL) over windows of `seq_len` tokens, each scored on its own.

    As in GPTQ/AWQ: window i covers tokens [i*L, (i+1)*L); the first token of a window has no
    context and is not scored. Returns perplexity, total tokens of the text, windows scored.
    """
    check_positions(model, seq_len, "perplexity seq_len")  # before reading the text, as before
    return {**text_perplexity(model, tokenizer, read_text(source), seq_len, max_windows, progress, source), "source": source}


@torch.no_grad()
def text_perplexity(model: nn.Module, tokenizer: Any, text: str, seq_len: int = 2048, max_windows: int | None = None,
                    progress: bool = True, label: str = "text") -> dict[str, Any]:
    """The protocol on a text already read (the `evaluate` metric scores texts it is given, not sources)."""
    check_positions(model, seq_len, "perplexity seq_len")
    tokens = tokenize(tokenizer, text)
    windows = eval_windows(tokens, seq_len, max_windows)
    device = model_device(model)
    was_training = model.training
    model.eval()
    nll_sum, count = 0.0, 0
    for w in tqdm(windows, desc=f"perplexity ({label})", disable=not progress, leave=False):
        ids = w.unsqueeze(0).to(device)
        logits = model(ids, use_cache=False).logits[0, :-1].float()
        nll_sum += F.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        count += ids.shape[1] - 1
    model.train(was_training)
    return {"perplexity": math.exp(nll_sum / count), "tokens": int(tokens.numel()), "windows": int(windows.shape[0]),
            "seq_len": seq_len}
