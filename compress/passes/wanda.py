"""`wanda`: prune by |W|·‖X‖ per output row, layer by layer on calibration data; N:M and OWL optional."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn as nn

from compress.algorithms.wanda import ActNorms, wanda_mask
from compress.context import Context
from compress.layerwise import run_layerwise
from compress.passes._owl import AllocatedPruneConfig, prepare_sweep
from compress.passes._pruning import LayerStats, apply_mask, record
from compress.registry import register_pass


@dataclass(frozen=True, kw_only=True)
class WandaConfig(AllocatedPruneConfig):
    pass


@register_pass("wanda", WandaConfig, needs_calibration=True)
def wanda(model: nn.Module, cfg: WandaConfig, ctx: Context) -> nn.Module:
    """Wanda pruning: weight magnitude times input activation norm, no weight update."""
    chosen, groups, ids, sparsity = prepare_sweep(model, cfg, ctx)
    tally = [0, 0]

    def prune(i: int, mods: dict[str, nn.Module], stats: dict[str, Any]) -> None:
        for name, lin in mods.items():
            w = lin.weight
            tally[0] += apply_mask(model, name, lin, w, wanda_mask(w, stats[name].norms(), sparsity[i], cfg.nm), cfg)
            tally[1] += w.numel()

    run_layerwise(model, ids, LayerStats(groups, ActNorms, prune, ctx.device), ctx.device, ctx.progress, desc="wanda")
    record(ctx.stats, tally[0], tally[1], len(chosen))
    return model
