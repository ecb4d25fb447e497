"""`rotate`: an orthogonal rotation of the residual stream (and of each head's values), folded into the weights.

The model computes the same function afterwards (up to float rounding) and stays a plain transformers
model; quantizing passes that follow see weights without outlier channels. Every RMSNorm weight is
folded into the linears that read it (and set to 1) first, because an elementwise weight does not
commute with a rotation. A tied lm_head is untied: the final norm folds into the head but not into the
embedding (config.tie_word_embeddings becomes false; the checkpoint holds a second vocab × hidden matrix).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from compress.algorithms.rotate import (fold_norm, orthogonal_keeping, orthogonal_matrix, rotate_head_inputs, rotate_head_outputs,
                                        rotate_input, rotate_output, rotate_rows)
from compress.context import Context
from compress.errors import CompressError
from compress.formats.base import PackedLinear, refuse_packed
from compress.formats.tied_embedding import QuantEmbedding
from compress.models import head_dim
from compress.registry import PassConfig, option, register_pass

SUPPORTED = ("llama", "mistral", "qwen2")
SUPPORTED_TEXT = ("Llama/Mistral/Qwen2-style decoders (model.layers, RMSNorm without bias before q/k/v and "
                  "gate/up, nn.Linear projections)")


@dataclass(frozen=True, kw_only=True)
class RotateConfig(PassConfig):
    kind: str = option("hadamard", "'hadamard': randomized Hadamard where the size allows (else random); "
                       "'random': seeded random orthogonal (QR)", choices=("hadamard", "random"))
    seed: int = option(0, "seed of the Hadamard's random signs / of the random matrix", min=0)
    heads: bool = option(True, "also rotate each attention head's values (v_proj rows, o_proj columns; exact, online-free)")
    keep: tuple[int, ...] = option((), "residual channels left unrotated (e.g. an attention sink's massive channel)")

    def check(self) -> None:
        if self.targets:
            raise ValueError("targets: rotate acts on the whole residual stream; leave targets empty")
        if tuple(self.ignore) != ("lm_head",):
            raise ValueError("ignore: rotate acts on every module that reads or writes the residual stream; leave ignore unset")


def _linear(mod: nn.Module, attr: str, where: str) -> nn.Linear:
    lin = getattr(mod, attr, None)
    if not isinstance(lin, nn.Linear):
        raise CompressError(f"{where}: {type(mod).__name__}.{attr} is {type(lin).__name__}, not nn.Linear; "
                            f"rotate supports {SUPPORTED_TEXT}")
    return lin


def _rmsnorm(mod: nn.Module | None, name: str, where: str) -> nn.Module:
    ok = (mod is not None and type(mod).__name__.endswith("RMSNorm") and isinstance(getattr(mod, "weight", None), nn.Parameter)
          and getattr(mod, "bias", None) is None)
    if not ok:
        raise CompressError(f"{where}: {name} is {type(mod).__name__}, not an RMSNorm without bias; "
                            f"rotate supports {SUPPORTED_TEXT}")
    return mod


def check_architecture(model: nn.Module, where: str) -> None:
    """One line naming what is supported unless `model` is a Llama/Mistral/Qwen2-style causal LM."""
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind not in SUPPORTED:
        raise CompressError(f"{where}: model type {kind!r} ({type(model).__name__}) is not supported; "
                            f"rotate supports {SUPPORTED_TEXT}: model types {', '.join(SUPPORTED)}")
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not isinstance(getattr(inner, "embed_tokens", None), nn.Embedding):
        raise CompressError(f"{where}: {type(model).__name__} has no model.layers / model.embed_tokens; rotate supports {SUPPORTED_TEXT}")
    _rmsnorm(getattr(inner, "norm", None), "model.norm", where)
    _linear(model, "lm_head", where)
    for i, layer in enumerate(layers):
        _rmsnorm(getattr(layer, "input_layernorm", None), f"model.layers.{i}.input_layernorm", where)
        _rmsnorm(getattr(layer, "post_attention_layernorm", None), f"model.layers.{i}.post_attention_layernorm", where)
        for owner, attrs in (("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")), ("mlp", ("gate_proj", "up_proj", "down_proj"))):
            sub = getattr(layer, owner, None)
            if sub is None:
                raise CompressError(f"{where}: model.layers.{i} has no {owner}; rotate supports {SUPPORTED_TEXT}")
            for a in attrs:
                _linear(sub, a, where)


def _set(p: torch.Tensor, value: torch.Tensor) -> None:
    p.data.copy_(value.to(p.dtype))


def _readers(norm: nn.Module, linears: list[nn.Linear], q: torch.Tensor) -> None:
    """Fold the norm's weight into the linears that read it, rotate their inputs, set the norm to 1."""
    for lin in linears:
        _set(lin.weight, rotate_input(fold_norm(lin.weight, norm.weight), q))
    norm.weight.data.fill_(1.0)


def _writer(lin: nn.Linear, q: torch.Tensor) -> None:
    _set(lin.weight, rotate_output(lin.weight, q))
    if lin.bias is not None:
        _set(lin.bias, rotate_rows(lin.bias, q))


def untie_head(model: nn.Module) -> bool:
    """Give lm_head its own copy of the embedding matrix (the final norm is folded into the head only)."""
    head, emb = model.lm_head, model.model.embed_tokens
    if head.weight is not emb.weight and head.weight.data_ptr() != emb.weight.data_ptr():
        model.config.tie_word_embeddings = False  # already separate matrices: make sure nothing re-ties them
        return False
    head.weight = nn.Parameter(emb.weight.detach().clone(), requires_grad=emb.weight.requires_grad)
    model.config.tie_word_embeddings = False
    text = getattr(model.config, "get_text_config", None)
    if text is not None and text() is not model.config:
        text().tie_word_embeddings = False
    return True


@torch.no_grad()
def rotate_model(model: nn.Module, kind: str, seed: int, heads: bool, keep: tuple[int, ...] = ()) -> dict:
    """Rotate a checked model in place; returns what the report shows."""
    inner = model.model
    n = inner.embed_tokens.weight.shape[1]
    q, how = orthogonal_keeping(n, keep, kind, seed)
    untied = untie_head(model)
    _set(inner.embed_tokens.weight, rotate_rows(inner.embed_tokens.weight, q))
    head_how = None
    for layer in inner.layers:
        attn, mlp = layer.self_attn, layer.mlp
        _readers(layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj], q)
        _writer(attn.o_proj, q)
        _readers(layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj], q)
        _writer(mlp.down_proj, q)
        if heads:
            hd = head_dim(model.config)
            r, head_how = orthogonal_matrix(hd, kind, seed + 1)
            _set(attn.v_proj.weight, rotate_head_outputs(attn.v_proj.weight, r, hd))
            if attn.v_proj.bias is not None:
                _set(attn.v_proj.bias, rotate_head_inputs(attn.v_proj.bias.view(1, -1), r, hd).view(-1))
            _set(attn.o_proj.weight, rotate_head_inputs(attn.o_proj.weight, r, hd))
    _readers(inner.norm, [model.lm_head], q)
    return {"matrix": how, "hidden": n, "head_matrix": head_how, "layers": len(inner.layers), "untied_head": untied}


@register_pass("rotate", RotateConfig)
def rotate(model: nn.Module, cfg: RotateConfig, ctx: Context) -> nn.Module:
    """Orthogonal rotation of the residual stream, norms folded first (same function; put it before quantizing)."""
    mods = dict(model.named_modules())
    refuse_packed(mods, ctx.where, (PackedLinear,), "rotate rewrites dense weights: put it first, before pruning and quantization passes")
    if any(isinstance(m, QuantEmbedding) for m in mods.values()):
        raise CompressError(f"{ctx.where}: the embedding reads a packed lm_head; rotate must come before quantization passes")
    check_architecture(model, ctx.where)
    n = model.model.embed_tokens.weight.shape[1]
    for c in cfg.keep:
        if not 0 <= c < n:
            raise CompressError(f"{ctx.where}: keep: channel {c} is outside the residual stream's 0..{n - 1}")
    ctx.stats.update(rotate_model(model, cfg.kind, cfg.seed, cfg.heads, tuple(cfg.keep)))
    return model
