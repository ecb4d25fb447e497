"""A Context with fixed calibration windows, so a test can compute the same statistics independently."""
from __future__ import annotations

import torch

from compress.context import Context


def fixed_context(tokenizer, ids: torch.Tensor) -> Context:
    ctx = Context(tokenizer, torch.device("cpu"), where="test.yaml: pass", progress=False)
    ctx._calib = ids
    return ctx


def layer0_inputs(model, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Inputs [tokens, in] of every layer-0 linear over the windows, from plain forwards of the model."""
    seen: dict[str, list[torch.Tensor]] = {}
    layer = model.model.layers[0]
    hooks = [m.register_forward_hook(lambda mod, a, o, n=n: seen.setdefault(n, []).append(a[0].reshape(-1, a[0].shape[-1]).clone()))
             for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for row in ids:
            model(row[None])
    for h in hooks:
        h.remove()
    return {f"model.layers.0.{n}": torch.cat(v) for n, v in seen.items()}
