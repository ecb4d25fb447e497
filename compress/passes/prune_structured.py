"""`prune_structured`: remove FFN channels, attention heads (GQA-consistent) and whole layers.

The model gets physically smaller. Uniform widths update config.json, so the checkpoint is a
plain Hugging Face model; per-layer widths (ffn_scope: global, or targets naming some layers)
are recorded in compress.json and load through `compress.load`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from compress.algorithms import structured as S
from compress.algorithms.structured_slice import drop_layers, prune_attention, prune_mlp
from compress.checkpoint import NONUNIFORM_ATTR
from compress.context import Context
from compress.errors import CompressError
from compress.formats.base import PackedLinear
from compress.layerwise import decoder_layers
from compress.passes._structured_stats import collect
from compress.registry import PassConfig, option, register_pass
from compress.select import select_modules


@dataclass(frozen=True, kw_only=True)
class PruneStructuredConfig(PassConfig):
    ffn_sparsity: float = option(0.0, "fraction of MLP intermediate channels removed (gate/up rows and down columns together)", min=0.0, max=0.95)
    head_sparsity: float = option(0.0, "fraction of attention heads removed in each targeted layer", min=0.0, max=0.95)
    gqa: str = option("heads", "grouped-query attention: 'heads' removes query heads evenly from every KV group; "
                      "'groups' removes whole KV groups (their query heads and K/V)", choices=("heads", "groups"))
    drop_layers: int | tuple[int, ...] = option((), "decoder layers removed: a list of indices, or N = the N of least "
                                                "block influence (1 - cos(in, out)) on calibration data")
    importance: str = option("activation", "how channels/heads are ranked: weight 'magnitude', calibration 'activation' "
                             "norms, or first-order 'taylor' |Σ g·w|", choices=("magnitude", "activation", "taylor"))
    ffn_scope: str = option("layer", "'layer': every layer loses ffn_sparsity (uniform, plain HF checkpoint); 'global': "
                            "rank channels across layers (per-layer widths, loads through compress.load)", choices=("layer", "global"))
    round_to: int = option(8, "kept FFN channels per layer rounded to a multiple of this (kernel-friendly widths)", min=1)
    targets: tuple[str, ...] = option((), "patterns over '<layers>.N.mlp' / '<layers>.N.self_attn' names; empty = all layers")

    def check(self) -> None:
        if isinstance(self.drop_layers, int) and self.drop_layers < 0:
            raise ValueError(f"drop_layers: expected a list of layer indices or a count >= 0, got {self.drop_layers}")
        if not (self.ffn_sparsity or self.head_sparsity or self.drop_layers):
            raise ValueError("nothing to prune: set ffn_sparsity, head_sparsity or drop_layers")


def _units(model: nn.Module, cfg: PruneStructuredConfig, where: str) -> tuple[str, dict[str, nn.Module]]:
    """Targeted MLP and attention blocks by name; they must still be dense nn.Linear."""
    layers = decoder_layers(model)
    prefix = next(n for n, m in model.named_modules() if m is layers)
    pool: dict[str, nn.Module] = {}
    for i, layer in enumerate(layers):
        pool[f"{prefix}.{i}.mlp"], pool[f"{prefix}.{i}.self_attn"] = layer.mlp, layer.self_attn
    chosen = select_modules(model, cfg.targets, cfg.ignore, where, candidates=pool)
    for name, unit in chosen.items():
        for sub_name, sub in unit.named_children():
            if isinstance(sub, PackedLinear) or (isinstance(sub, nn.Linear) and type(sub) is not nn.Linear):
                raise CompressError(f"{where}: {name}.{sub_name} is already packed ({type(sub).__name__}); "
                                    "run prune_structured before pruning or quantization passes")
    return prefix, chosen


def _grad(lin: nn.Linear) -> torch.Tensor:
    g = lin.weight.grad
    lin.weight.grad = None
    return g if g is not None else torch.zeros_like(lin.weight)


def _ffn_scores(i: int, mlp: nn.Module, cfg: PruneStructuredConfig, stats: dict[str, Any]) -> torch.Tensor:
    g, u, d = mlp.gate_proj.weight.detach(), mlp.up_proj.weight.detach(), mlp.down_proj.weight.detach()
    if cfg.importance == "activation":
        return S.ffn_activation(stats["act"][("mlp", i)], d)
    if cfg.importance == "taylor":
        return S.ffn_taylor(g, u, d, _grad(mlp.gate_proj), _grad(mlp.up_proj), _grad(mlp.down_proj))
    return S.ffn_magnitude(g, u, d)


def _head_scores(i: int, attn: nn.Module, heads: int, cfg: PruneStructuredConfig, stats: dict[str, Any]) -> torch.Tensor:
    q, o = attn.q_proj.weight.detach(), attn.o_proj.weight.detach()
    if cfg.importance == "activation":
        return S.head_activation(stats["act"][("attn", i)], o, heads)
    if cfg.importance == "taylor":
        return S.head_taylor(q, o, _grad(attn.q_proj), _grad(attn.o_proj), heads)
    return S.head_magnitude(q, o, heads)


def _layer_index(name: str, prefix: str) -> int:
    return int(name.removeprefix(prefix + ".").split(".")[0])


@register_pass("prune_structured", PruneStructuredConfig, needs_calibration=True)
def prune_structured(model: nn.Module, cfg: PruneStructuredConfig, ctx: Context) -> nn.Module:
    """Structured pruning: FFN channels, attention heads and whole layers; the model gets smaller."""
    layers = decoder_layers(model)
    n_layers = len(layers)
    drop = list(cfg.drop_layers) if isinstance(cfg.drop_layers, tuple) else []
    bad = [i for i in drop if not 0 <= i < n_layers]
    if bad or len(set(drop)) != len(drop) or (isinstance(cfg.drop_layers, int) and cfg.drop_layers >= n_layers):
        raise CompressError(f"{ctx.where}: drop_layers: expected distinct indices in 0..{n_layers - 1} or a count "
                            f"below {n_layers}, got {cfg.drop_layers!r}")
    prefix, chosen = _units(model, cfg, ctx.where)
    params_before = sum(p.numel() for p in model.parameters())
    by_data = cfg.importance != "magnitude" and bool(cfg.ffn_sparsity or cfg.head_sparsity)
    needs_data = by_data or (isinstance(cfg.drop_layers, int) and cfg.drop_layers > 0)
    stats = collect(model, ctx.calibration(), cfg, ctx.progress) if needs_data else {"act": {}, "bi": []}
    if isinstance(cfg.drop_layers, int) and cfg.drop_layers > 0:
        influence = torch.tensor([s / max(n, 1) for s, n in stats["bi"]])
        drop = sorted(int(i) for i in torch.topk(-influence, cfg.drop_layers).indices)
        ctx.stats["block_influence"] = [round(float(v), 5) for v in influence]
    with torch.no_grad():
        chosen = {n: m for n, m in chosen.items() if _layer_index(n, prefix) not in drop}  # no work on dropped layers
        mlps = {_layer_index(n, prefix): m for n, m in chosen.items() if n.endswith(".mlp")}
        if cfg.ffn_sparsity:
            scores = {i: _ffn_scores(i, m, cfg, stats) for i, m in mlps.items()}
            if cfg.ffn_scope == "global":
                flat = torch.cat([scores[i] for i in sorted(scores)])
                cut = torch.topk(flat.float(), S.keep_count(flat.numel(), cfg.ffn_sparsity)).values.min()
                keep = {i: max(1, int((s >= cut).sum())) for i, s in scores.items()}
            else:
                keep = {i: S.keep_count(s.numel(), cfg.ffn_sparsity, cfg.round_to) for i, s in scores.items()}
            for i, m in mlps.items():
                prune_mlp(m, S.top_indices(scores[i], keep[i]))
        if cfg.head_sparsity:
            for name, attn in chosen.items():
                if not name.endswith(".self_attn"):
                    continue
                i = _layer_index(name, prefix)
                hd = attn.head_dim
                heads, kv = attn.q_proj.out_features // hd, attn.k_proj.out_features // hd
                mode = "groups" if heads == kv else cfg.gqa
                q_keep, kv_keep = S.kept_heads(_head_scores(i, attn, heads, cfg, stats), kv, cfg.head_sparsity, mode)
                prune_attention(attn, q_keep, kv_keep)
    for p in model.parameters():
        p.grad = None
    if drop:
        model.model.layers = drop_layers(layers, drop)
        ctx.stats["dropped_layers"] = drop
    _update_config(model, drop)
    ctx.stats["params_before"] = params_before
    ctx.stats["params_after"] = sum(p.numel() for p in model.parameters())
    return model


def _update_config(model: nn.Module, dropped: list[int]) -> None:
    """Write uniform widths into the config (plain HF checkpoint); flag per-layer widths for compress.load."""
    cfg = model.config
    layers = decoder_layers(model)
    cfg.num_hidden_layers = len(layers)
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = [t for i, t in enumerate(cfg.layer_types) if i not in dropped]
    ffn = {layer.mlp.down_proj.in_features for layer in layers}
    attn = {(layer.self_attn.q_proj.out_features, layer.self_attn.k_proj.out_features) for layer in layers}
    hd = layers[0].self_attn.head_dim
    cfg.head_dim = hd  # explicit: hidden_size / num_attention_heads no longer gives it
    if len(ffn) == 1:
        cfg.intermediate_size = ffn.pop()
    if len(attn) == 1:
        q, k = attn.pop()
        cfg.num_attention_heads, cfg.num_key_value_heads = q // hd, k // hd
    setattr(model, NONUNIFORM_ATTR, bool(len(ffn) > 1 or len(attn) > 1) or getattr(model, NONUNIFORM_ATTR, False))
