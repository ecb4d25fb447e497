"""Calibration statistics for `prune_structured`, gathered in one sweep of full-model forwards
(plus backwards for Taylor importance): per-channel/per-head activation norms and block influence."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from compress.algorithms import structured as S
from compress.layerwise import decoder_layers

if TYPE_CHECKING:
    from compress.passes.prune_structured import PruneStructuredConfig


def collect(model: nn.Module, ids: torch.Tensor, cfg: "PruneStructuredConfig", progress: bool) -> dict[str, Any]:
    """One sweep over calibration windows: activation norms, gradients and/or block influence."""
    layers = decoder_layers(model)
    want_act = cfg.importance == "activation" and (cfg.ffn_sparsity or cfg.head_sparsity)
    want_grad = cfg.importance == "taylor" and (cfg.ffn_sparsity or cfg.head_sparsity)
    want_bi = isinstance(cfg.drop_layers, int) and cfg.drop_layers > 0
    out: dict[str, Any] = {"act": {}, "bi": [[0.0, 0] for _ in layers]}
    hooks = []

    def sq_hook(key: tuple[str, int]) -> Any:
        def f(mod: nn.Module, args: tuple) -> None:
            x = args[0].detach().float()
            s = (x * x).reshape(-1, x.shape[-1]).sum(0)
            out["act"][key] = out["act"].get(key, 0) + s
        return f

    def bi_hook(i: int) -> Any:
        def f(mod: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            h_in = args[0] if args else kwargs["hidden_states"]
            h_out = output[0] if isinstance(output, (tuple, list)) else output
            s, n = S.block_influence(h_in.detach(), h_out.detach())
            out["bi"][i][0] += s
            out["bi"][i][1] += n
        return f

    for i, layer in enumerate(layers):
        if want_act:
            hooks.append(layer.mlp.down_proj.register_forward_pre_hook(sq_hook(("mlp", i))))
            hooks.append(layer.self_attn.o_proj.register_forward_pre_hook(sq_hook(("attn", i))))
        if want_bi:
            hooks.append(layer.register_forward_hook(bi_hook(i), with_kwargs=True))
    flags = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    if want_grad:
        for layer in layers:
            for lin in (*layer.mlp.children(), layer.self_attn.q_proj, layer.self_attn.o_proj):
                if isinstance(lin, nn.Linear):
                    lin.weight.requires_grad_(True)
                    lin.weight.grad = None
    device = next(model.parameters()).device
    try:
        for row in tqdm(ids, desc="prune_structured: calibration", disable=not progress, leave=False):
            x = row.unsqueeze(0).to(device)
            with torch.set_grad_enabled(bool(want_grad)):
                res = model(x, labels=x if want_grad else None, use_cache=False)
                if want_grad:
                    res.loss.backward()
    finally:
        for h in hooks:
            h.remove()
        for p, f in flags.items():
            p.requires_grad_(f)
    return out
