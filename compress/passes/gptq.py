"""`gptq`: Hessian-aware int4/int8 quantization, one decoder layer at a time, into packed storage."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from compress.algorithms.gptq import gptq_quantize
from compress.algorithms.hessian import Hessian
from compress.algorithms.rtn import rtn_quantize
from compress.context import Context
from compress.formats.base import PackedLinear, refuse_packed
from compress.layerwise import decoder_layers, run_layerwise, watch_inputs
from compress.passes._hessian import module_named, require_finite
from compress.passes.rtn import GridConfig, quantize_linear
from compress.registry import option, register_pass
from compress.select import select_modules, set_module


@dataclass(frozen=True, kw_only=True)
class GPTQConfig(GridConfig):
    damp: float = option(0.01, "Hessian dampening, as a fraction of its mean diagonal", min=0.0, max=1.0)
    act_order: bool = option(True, "quantize columns by decreasing activation energy (implies static groups)")
    static_groups: bool = option(False, "group ranges from the original weight rather than the error-updated one")
    block_size: int = option(128, "columns updated lazily together (speed only)", min=1)
    clip_search: bool = option(False, "MSE-searched group ranges instead of min/max")


class GPTQLayers:
    """The layer algorithm for `run_layerwise`: Hessians while the layer runs, GPTQ when it is done."""

    def __init__(self, model: nn.Module, chosen: dict[str, nn.Linear], cfg: GPTQConfig, where: str = "gptq") -> None:
        self.model, self.cfg, self.where = model, cfg, where
        names = {id(m): n for n, m in model.named_modules()}
        self.per_layer: list[dict[str, nn.Linear]] = []
        for layer in decoder_layers(model):
            prefix = names[id(layer)] + "."
            self.per_layer.append({n: m for n, m in chosen.items() if n.startswith(prefix)})
        self.losses: dict[str, float] = {}

    def prepare(self, index: int, layer: nn.Module) -> None:
        self.hessians: dict[str, Hessian] = {}
        self._shared: set[str] = set()
        self._last: tuple[tuple, str, torch.Tensor] | None = None
        self._watch = watch_inputs(self.per_layer[index], self._add)
        self._watch.__enter__()

    def _add(self, name: str, x: torch.Tensor) -> None:
        """Accumulate x into the module's Hessian; q/k/v (and gate/up) see the same tensor, so
        consecutive calls with one input share one Hessian instead of recomputing it. The last input
        is kept alive so that a new tensor can never reuse its address and pass for it."""
        key = (x.data_ptr(), tuple(x.shape), x.stride())
        if name not in self.hessians:
            if self._last is not None and self._last[0] == key:
                self.hessians[name] = self.hessians[self._last[1]]
                self._shared.add(name)
            else:
                self.hessians[name] = Hessian(x.shape[1], x.device)
        if name not in self._shared:
            self.hessians[name].add_batch(x)
        self._last = (key, name, x)

    def finish(self, index: int, layer: nn.Module) -> None:
        self._watch.__exit__(None, None, None)
        cfg, spec = self.cfg, self.cfg.spec()
        by_hessian: dict[int, list[str]] = {}
        for name in self.per_layer[index]:
            by_hessian.setdefault(id(self.hessians[name]), []).append(name)
        for names in by_hessian.values():
            # Modules sharing a Hessian are one GPTQ problem with their rows stacked (rows are independent).
            lins = [self.per_layer[index][n] for n in names]
            w = torch.cat([lin.weight for lin in lins])
            H = self.hessians[names[0]].H
            require_finite(H, names, self.where)
            with module_named(names, self.where):
                res = gptq_quantize(w, H, spec, damp=cfg.damp, act_order=cfg.act_order, static_groups=cfg.static_groups,
                                    block_size=cfg.block_size, clip_search=cfg.clip_search)
            row = 0
            for name, lin in zip(names, lins):
                rows = slice(row, row + lin.out_features)
                set_module(self.model, name, quantize_linear(lin, res.codes[rows], res.scale[rows], res.zero[rows], spec))
                row += lin.out_features
            self.losses[",".join(names)] = res.loss
        self.hessians, self._last = {}, None


@register_pass("gptq", GPTQConfig, needs_calibration=True)
def gptq(model: nn.Module, cfg: GPTQConfig, ctx: Context) -> nn.Module:
    """GPTQ weight-only quantization, layer by layer over calibration data (peak memory: one layer)."""
    chosen = select_modules(model, cfg.targets, cfg.ignore, ctx.where)
    refuse_packed(chosen, ctx.where, (PackedLinear,), "gptq would fill pruned zeros or re-quantize; "
                  "run it before other passes, use sparsegpt with `bits` to prune and quantize, or rtn after pruning")
    algo = GPTQLayers(model, chosen, cfg, ctx.where)
    in_layers = {n for per in algo.per_layer for n in per}
    ids = ctx.calibration()
    run_layerwise(model, ids, algo, ctx.device, progress=ctx.progress, desc="gptq")
    outside = [n for n in chosen if n not in in_layers]  # e.g. lm_head when targeted: no layer inputs, RTN
    for name in outside:
        lin = chosen[name]
        codes, scale, zero = rtn_quantize(lin.weight, cfg.spec(), cfg.clip_search)
        set_module(model, name, quantize_linear(lin, codes, scale, zero, cfg.spec()))
    ctx.stats.update(modules=len(chosen), rtn_fallback=outside, calibration_tokens=int(ids.numel()),
                     layer_loss=round(sum(algo.losses.values()), 4))
    return model
