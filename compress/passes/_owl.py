"""Sparsity allocation across layers for the calibrated pruning passes: uniform or OWL."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from compress.algorithms.owl import outlier_ratio, owl_sparsities
from compress.algorithms.wanda import ActNorms, wanda_scores
from compress.context import Context
from compress.layerwise import run_layerwise
from compress.passes._pruning import LayerStats, PruneConfig, by_layer, check_nm_shapes
from compress.registry import option
from compress.select import select_modules


@dataclass(frozen=True, kw_only=True)
class AllocatedPruneConfig(PruneConfig):
    """Pruning options plus how the sparsity is spread over layers."""

    allocation: str = option("uniform", "'uniform': every layer gets `sparsity`; 'owl': outlier-weighted per-layer "
                             "sparsities with the same model-wide ratio", choices=("uniform", "owl"))
    owl_threshold: float = option(5.0, "OWL's M: a Wanda score above M × its layer's mean counts as an outlier", min=1.0)
    owl_lambda: float = option(0.08, "OWL's λ: layer sparsities spread within ±λ of `sparsity`", min=0.0, max=0.5)

    def check(self) -> None:
        super().check()
        if self.allocation == "owl" and self.pattern:
            raise ValueError("allocation: 'owl' is for unstructured sparsity; with an N:M pattern use 'uniform'")
        if self.allocation == "owl" and not self.owl_lambda < self.sparsity < 1 - self.owl_lambda:
            raise ValueError(f"owl_lambda: layer sparsities sparsity ± owl_lambda must stay inside (0, 1); "
                             f"got sparsity {self.sparsity} and owl_lambda {self.owl_lambda}")


def layer_sparsities(model: nn.Module, groups: dict[int, dict[str, nn.Module]], cfg: AllocatedPruneConfig,
                     ctx: Context, ids: torch.Tensor) -> dict[int, float]:
    """Sparsity per decoder layer index; OWL runs one extra, read-only sweep over the dense model."""
    if cfg.allocation == "uniform":
        return {i: cfg.effective_sparsity for i in groups}
    ratios: dict[int, float] = {}

    def measure(i: int, mods: dict[str, nn.Module], stats: dict[str, Any]) -> None:
        scores = torch.cat([wanda_scores(m.weight, stats[n].norms()).reshape(-1) for n, m in mods.items()])
        ratios[i] = outlier_ratio(scores, cfg.owl_threshold)

    run_layerwise(model, ids, LayerStats(groups, ActNorms, measure, ctx.device), ctx.device, ctx.progress, desc="owl")
    order = sorted(groups)
    sizes = [sum(m.weight.numel() for m in groups[i].values()) for i in order]
    alloc = owl_sparsities([ratios[i] for i in order], sizes, cfg.sparsity, cfg.owl_lambda)
    ctx.stats["layer_sparsity"] = [round(s, 4) for s in alloc]
    return dict(zip(order, alloc))


def prepare_sweep(model: nn.Module, cfg: AllocatedPruneConfig, ctx: Context
                  ) -> tuple[dict[str, nn.Module], dict[int, dict[str, nn.Module]], torch.Tensor, dict[int, float]]:
    """What every calibrated pruning pass needs before its sweep: the chosen linears (checked for N:M),
    the same grouped by decoder layer, the calibration ids and each layer's sparsity."""
    chosen = select_modules(model, cfg.targets, cfg.ignore, ctx.where)
    check_nm_shapes(chosen, cfg.nm, ctx.where)
    groups = by_layer(model, chosen, ctx.where)
    ids = ctx.calibration()
    return chosen, groups, ids, layer_sparsities(model, groups, cfg, ctx, ids)
