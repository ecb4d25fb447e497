"""`magnitude`: zero the smallest-|w| weights, per matrix or with one global threshold; N:M optional."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from compress.algorithms.magnitude import global_threshold, magnitude_mask
from compress.context import Context
from compress.passes._pruning import PruneConfig, apply_mask, check_nm_shapes, record
from compress.registry import option, register_pass
from compress.select import select_modules


@dataclass(frozen=True, kw_only=True)
class MagnitudeConfig(PruneConfig):
    scope: str = option("layer", "'layer': each matrix loses `sparsity` of its weights; 'global': one |w| threshold over all targets",
                        choices=("layer", "global"))

    def check(self) -> None:
        super().check()
        if self.scope == "global" and self.pattern:
            raise ValueError("scope: 'global' is for unstructured sparsity; an N:M pattern is always per group (use scope: layer)")


@register_pass("magnitude", MagnitudeConfig)
def magnitude(model: nn.Module, cfg: MagnitudeConfig, ctx: Context) -> nn.Module:
    """Magnitude pruning (data-free baseline)."""
    chosen = select_modules(model, cfg.targets, cfg.ignore, ctx.where)
    check_nm_shapes(chosen, cfg.nm, ctx.where)
    thresh = global_threshold([m.weight for m in chosen.values()], cfg.sparsity) if cfg.scope == "global" else None
    zeros = total = 0
    with torch.no_grad():
        for name, lin in chosen.items():
            w = lin.weight
            mask = w.abs() > thresh if thresh is not None else magnitude_mask(w, cfg.sparsity, cfg.nm)
            zeros += apply_mask(model, name, lin, w, mask, cfg)
            total += w.numel()
    record(ctx.stats, zeros, total, len(chosen))
    return model
