"""`awq`: activation-aware scaling folded into the preceding norm/linear; a quantizer pass follows.

The model computes the same function after this pass (up to float rounding): it only moves
magnitude from activations into weights so the next pass (rtn or gptq) rounds the salient
input channels more finely.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from compress.algorithms.awq import awq_search
from compress.context import Context
from compress.errors import CompressError
from compress.formats.base import PackedLinear, refuse_packed
from compress.layerwise import decoder_layers, run_layerwise, watch_inputs
from compress.passes.rtn import GridConfig
from compress.registry import option, register_pass
from compress.select import select_modules


@dataclass(frozen=True, kw_only=True)
class AWQConfig(GridConfig):
    """bits / group_size / symmetric: the grid of the quantizer that follows (the search simulates it)."""

    grid: int = option(20, "number of α steps searched in [0, 1]", min=1, max=100)
    max_tokens: int = option(4096, "calibration tokens kept per layer input to score each α", min=16)


def scale_groups(layer: nn.Module) -> list[tuple[nn.Module, list[nn.Linear]]]:
    """(previous module, linears reading its output) pairs of a Llama-like decoder layer.

    v_proj → o_proj is included only without grouped-query attention (shapes must match).
    """
    try:
        attn, mlp = layer.self_attn, layer.mlp
        groups = [(layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj]),
                  (layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj]),
                  (mlp.up_proj, [mlp.down_proj])]
    except AttributeError as e:
        raise CompressError(f"awq: decoder layer {type(layer).__name__} is not Llama-like ({e})") from None
    if attn.v_proj.out_features == attn.o_proj.in_features:
        groups.append((attn.v_proj, [attn.o_proj]))
    return groups


@torch.no_grad()
def fold_scales(prev: nn.Module, linears: list[nn.Linear], s: torch.Tensor) -> None:
    """prev's output /= s, each linear's input columns *= s: the composition is unchanged."""
    s = s.to(linears[0].weight.device)
    if isinstance(prev, nn.Linear):
        prev.weight.div_(s.unsqueeze(1).to(prev.weight.dtype))
        if prev.bias is not None:
            prev.bias.div_(s.to(prev.bias.dtype))
    else:  # RMSNorm / LayerNorm: an elementwise weight (and maybe bias) on the output
        prev.weight.div_(s.to(prev.weight.dtype))
        if getattr(prev, "bias", None) is not None:
            prev.bias.div_(s.to(prev.bias.dtype))
    for lin in linears:
        lin.weight.mul_(s.unsqueeze(0).to(lin.weight.dtype))


class AWQLayers:
    """Layer algorithm for `run_layerwise`: input statistics while the layer runs, scales when done."""

    def __init__(self, chosen: dict[str, nn.Linear], cfg: AWQConfig, batches: int, seed: int = 0) -> None:
        self.chosen_ids = {id(m) for m in chosen.values()}
        self.cfg = cfg
        self.per_batch = -(-cfg.max_tokens // max(batches, 1))
        self.gen = torch.Generator().manual_seed(seed)
        self.alphas: list[float] = []
        self.gain: list[float] = []

    def prepare(self, index: int, layer: nn.Module) -> None:
        self.groups = [(p, [l for l in ls if id(l) in self.chosen_ids]) for p, ls in scale_groups(layer)]
        self.groups = [(p, ls) for p, ls in self.groups if ls]
        self.sums: dict[int, torch.Tensor] = {}
        self.count: dict[int, int] = {}
        self.samples: dict[int, list[torch.Tensor]] = {}
        watched = {str(i): ls[0] for i, (_, ls) in enumerate(self.groups)}
        self._watch = watch_inputs(watched, self._add)
        self._watch.__enter__()

    def _add(self, name: str, x: torch.Tensor) -> None:
        i = int(name)
        x = x.float()
        self.sums[i] = self.sums.get(i, 0) + x.abs().sum(0)
        self.count[i] = self.count.get(i, 0) + x.shape[0]
        rows = torch.randperm(x.shape[0], generator=self.gen)[: self.per_batch].to(x.device)
        self.samples.setdefault(i, []).append(x[rows])

    def finish(self, index: int, layer: nn.Module) -> None:
        self._watch.__exit__(None, None, None)
        for i, (prev, linears) in enumerate(self.groups):
            x = torch.cat(self.samples[i])[: self.cfg.max_tokens]
            res = awq_search(x, self.sums[i] / self.count[i], [l.weight for l in linears], self.cfg.spec(), self.cfg.grid)
            fold_scales(prev, linears, res.scales)
            self.alphas.append(res.alpha)
            self.gain.append(res.loss / res.loss_rtn if res.loss_rtn > 0 else 1.0)
        self.samples = {}


@register_pass("awq", AWQConfig, needs_calibration=True)
def awq(model: nn.Module, cfg: AWQConfig, ctx: Context) -> nn.Module:
    """Activation-aware scales folded into the model; bits/group_size/symmetric: the rtn or gptq pass that follows."""
    refuse_packed(dict(model.named_modules()), ctx.where, (PackedLinear,),
                  "awq rescales dense weights: put it before pruning and quantization passes")
    chosen = select_modules(model, cfg.targets, cfg.ignore, ctx.where)
    decoder_layers(model)  # a clear error for non-Llama-like models before any work
    ids = ctx.calibration()
    algo = AWQLayers(chosen, cfg, ids.shape[0], ctx.calibration_cfg.seed)
    run_layerwise(model, ids, algo, ctx.device, progress=ctx.progress, desc="awq")
    n = max(len(algo.alphas), 1)
    ctx.stats.update(scaled_groups=len(algo.alphas), mean_alpha=round(sum(algo.alphas) / n, 3),
                     loss_vs_rtn=round(sum(algo.gain) / n, 4), calibration_tokens=int(ids.numel()))
    return model
