"""Interleaved timing: each round times every model once, so load drifts on a busy CPU hit all rows alike.

Sequential timing measures the base at minute 1 and the last model at minute 5; on a shared
machine the neighbours' load changes in between and the ratios drift with it. Round-robin over
models that sit in memory together keeps the ratios honest. Each model keeps one decoder per batch
size over the rounds, so a compiled step is built once (in round one, untimed).
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from compress.eval import speed
from compress.eval.fast_decode import StaticDecoder


def timed_rounds(models: list[nn.Module], prefill: tuple[int, ...], batches: tuple[int, ...], prompt_len: int,
                 new_tokens: int, warmup: int, repeats: int, mode: str = "eager") -> list[dict[str, Any]]:
    """Per model: prefill_ms spreads over `repeats` rounds and decode_tokens_per_s over every step of them (warm-up in round one)."""
    pre: list[dict[int, list[float]]] = [{n: [] for n in prefill} for _ in models]
    steps: list[dict[int, list[float]]] = [{b: [] for b in batches} for _ in models]  # every timed step, pooled
    decoders = [{b: StaticDecoder(m, prompt_len + new_tokens + 1, mode) for b in batches} for m in models]
    for r in range(repeats):
        w = warmup if r == 0 else 0
        for i, m in enumerate(models):
            for n in prefill:
                pre[i][n].append(speed.prefill_ms(m, n, w, 1)["median"])
            for b in batches:
                steps[i][b] += speed.decode_step_seconds(m, b, prompt_len, new_tokens, w, 1, mode, decoders[i][b])[0]
    return [{"prefill_ms": {str(n): speed.spread(v) for n, v in p.items()},
             "decode_tokens_per_s": {str(b): speed.tokens_per_s(b, v, ds[b].mode) for b, v in d.items()},
             "decode_mode": getattr(next(iter(ds.values()), None), "mode", mode)}  # what ran (auto may have fallen back)
            for p, d, ds in zip(pre, steps, decoders)]
