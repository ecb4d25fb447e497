"""`sparsegpt`: second-order pruning with weight updates, layer by layer; N:M, OWL and same-sweep quantization."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn as nn

from compress.algorithms.grid import QuantSpec
from compress.algorithms.hessian import Hessian
from compress.algorithms.sparsegpt import sparsegpt_prune
from compress.context import Context
from compress.layerwise import run_layerwise
from compress.passes._hessian import module_named, require_finite
from compress.passes._owl import AllocatedPruneConfig, prepare_sweep
from compress.passes._pruning import LayerStats, apply_mask, record
from compress.passes.rtn import quantize_linear
from compress.registry import option, register_pass
from compress.select import set_module


@dataclass(frozen=True, kw_only=True)
class SparseGPTConfig(AllocatedPruneConfig):
    blocksize: int = option(128, "columns per lazy-update block (a multiple of M for N:M)", choices=(32, 64, 128, 256))
    damp: float = option(0.01, "Hessian dampening, fraction of its mean diagonal", min=0.0, max=1.0)
    bits: int = option(0, "quantize in the same sweep to this many bits (packed int format); 0 = keep float", choices=(0, 4, 8))
    group_size: int = option(-1, "with bits: weights per scale along the input dim; -1 = per output channel", choices=(-1, 32, 64, 128, 256))
    symmetric: bool = option(True, "with bits: symmetric grid; false stores an integer zero point per group")

    def check(self) -> None:
        super().check()
        nm = self.nm
        if nm and self.blocksize % nm[1]:
            raise ValueError(f"blocksize: must be a multiple of M={nm[1]} for pattern {self.pattern!r}")

    def quant(self) -> QuantSpec | None:
        return QuantSpec(self.bits, self.group_size, self.symmetric) if self.bits else None


@register_pass("sparsegpt", SparseGPTConfig, needs_calibration=True)
def sparsegpt(model: nn.Module, cfg: SparseGPTConfig, ctx: Context) -> nn.Module:
    """SparseGPT pruning (Hessian-based, with weight reconstruction); optionally quantizes in the same sweep."""
    chosen, groups, ids, sparsity = prepare_sweep(model, cfg, ctx)
    spec = cfg.quant()
    tally = [0, 0]

    def prune(i: int, mods: dict[str, nn.Module], stats: dict[str, Any]) -> None:
        for name, lin in mods.items():
            require_finite(stats[name].H, [name], ctx.where)
            with module_named([name], ctx.where):
                res = sparsegpt_prune(lin.weight, stats[name].H, sparsity[i], cfg.nm, cfg.blocksize, cfg.damp, spec)
            if spec is None:
                tally[0] += apply_mask(model, name, lin, res.weight, res.mask, cfg)
            else:
                set_module(model, name, quantize_linear(lin, res.codes, res.scale, res.zero, spec))
                tally[0] += int((~res.mask).sum())
            tally[1] += res.mask.numel()

    run_layerwise(model, ids, LayerStats(groups, Hessian, prune, ctx.device), ctx.device, ctx.progress, desc="sparsegpt")
    record(ctx.stats, tally[0], tally[1], len(chosen))
    return model
