"""Registration of compress's torch operators written in Python (`torch.ops.compress.*`), so compiled graphs call
them whole; the C kernels register theirs in `csrc/ops.cpp`.

Why not `torch.library.custom_op`: its Python wrapper costs ~10 µs a call on our CPU, ~15 µs inside a
compiled graph, against ~2 / ~5 µs for a plain `torch.library` definition with a CPU kernel and a fake
(shape-only) kernel. A SmolLM2 decode step makes ~210 such calls, so the wrapper alone was ~3 ms a token.
"""
from __future__ import annotations

from typing import Callable

import torch

_LIB = torch.library.Library("compress", "FRAGMENT")


def cpu_op(schema: str, fake: Callable[..., torch.Tensor]) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Define `compress::<schema>` with the decorated function as its CPU kernel and `fake` for tracing; the
    decorated name becomes the op (called like the function, positionally or by keyword)."""
    name = schema.split("(", 1)[0]

    def register(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        _LIB.define(schema)
        _LIB.impl(name, fn, "CPU")
        torch.library.register_fake(f"compress::{name}", fake, lib=_LIB)
        return getattr(torch.ops.compress, name)

    return register
