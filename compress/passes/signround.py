"""`signround`: learned rounding and clipping (AutoRound's SignRound), one decoder layer at a time, into packed storage."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from compress.algorithms.rtn import rtn_quantize
from compress.algorithms.signround import SignRoundLinear, sign_step
from compress.context import Context
from compress.formats.base import PackedLinear, refuse_packed
from compress.layerwise import decoder_layers, hidden_states, run_layerwise
from compress.passes._layer_state import LayerState, tokens_digest
from compress.passes.rtn import GridConfig, quantize_linear
from compress.registry import option, register_pass
from compress.select import select_modules, set_module


@dataclass(frozen=True, kw_only=True)
class SignRoundConfig(GridConfig):
    iters: int = option(200, "signed-gradient steps per decoder layer", min=1)
    lr: float = option(0.0, "step size of each signed step, decayed linearly to 0; 0 = 1/iters (AutoRound's)", min=0.0, max=0.5)
    batch: int = option(4, "calibration windows per step", min=1)
    min_range: float = option(0.5, "smallest factor on a group's min/max (learned clipping); 1 = no clipping", min=0.1, max=1.0)
    seed: int = option(0, "seed of the minibatch order")
    state_dir: str | None = option(None, "folder for the per-layer resume state; null = none")
    resume: bool = option(False, "reuse the layers finished in state_dir (same options and calibration required)")

    def check(self) -> None:
        if self.resume and not self.state_dir:
            raise ValueError("option 'resume' needs 'state_dir' (where the finished layers are kept)")


class SignRoundLayers:
    """The layer algorithm for `run_layerwise`: record the layer's inputs and outputs, then tune its grids to them.

    The inputs are those the driver feeds (the outputs of the layers already quantized), the
    targets the unquantized layer's outputs on them, so each layer also absorbs the error of
    the layers before it.
    """

    def __init__(self, model: nn.Module, chosen: dict[str, nn.Linear], cfg: SignRoundConfig, progress: bool = False,
                 state: LayerState | None = None) -> None:
        self.model, self.cfg, self.progress = model, cfg, progress
        self.state, self.resumed = state, 0
        names = {id(m): n for n, m in model.named_modules()}
        self.per_layer = [{n: m for n, m in chosen.items() if n.startswith(names[id(layer)] + ".")}
                          for layer in decoder_layers(model)]
        self.loss_rtn = self.loss_tuned = 0.0

    def prepare(self, index: int, layer: nn.Module) -> None:
        self.inputs: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.kwargs: dict[str, Any] = {}
        self._hook = layer.register_forward_hook(self._grab, with_kwargs=True)

    def _grab(self, _mod: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        self.inputs.append(args[0] if args else kwargs["hidden_states"])
        self.targets.append(hidden_states(out))
        if not self.kwargs:
            self.kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}

    def finish(self, index: int, layer: nn.Module) -> None:
        self._hook.remove()
        if not self.per_layer[index]:
            return
        spec = self.cfg.spec()
        saved = self.state.load(index) if self.state else None
        if saved is not None:
            for name, lin in self.per_layer[index].items():
                set_module(self.model, name, quantize_linear(lin, saved[f"{name}.codes"], saved[f"{name}.scale"],
                                                             saved[f"{name}.zero"], spec))
            self.resumed += 1
            self.inputs, self.targets = [], []
            return
        tuned = {n: SignRoundLinear(lin, spec, self.cfg.min_range) for n, lin in self.per_layer[index].items()}
        frozen = [(p, p.requires_grad) for p in layer.parameters()]
        for p, _ in frozen:
            p.requires_grad_(False)
        for name, mod in tuned.items():
            set_module(self.model, name, mod)
        try:
            self.loss_rtn += self._loss(layer)
            self._tune(index, layer, tuned)
            self.loss_tuned += self._loss(layer)
        except BaseException:  # a NaN error, Ctrl-C: leave the in-memory model with its own linears, not our wrappers
            for name, lin in self.per_layer[index].items():
                set_module(self.model, name, lin)
            raise
        finally:
            for p, flag in frozen:
                p.requires_grad_(flag)
        done: dict[str, torch.Tensor] = {}
        for name, mod in tuned.items():
            codes, scale, zero = mod.codes()
            set_module(self.model, name, quantize_linear(self.per_layer[index][name], codes, scale, zero, spec))
            done.update({f"{name}.codes": codes, f"{name}.scale": scale, f"{name}.zero": zero})
        if self.state:
            self.state.save(index, done)
        self.inputs, self.targets = [], []

    def _loss(self, layer: nn.Module) -> float:
        """Mean squared error of the layer's output over every recorded window."""
        with torch.no_grad():
            errs = [F.mse_loss(hidden_states(layer(h, **self.kwargs)).float(), t.float()).item()
                    for h, t in zip(self.inputs, self.targets)]
        return sum(errs) / len(errs)

    def _tune(self, index: int, layer: nn.Module, tuned: dict[str, SignRoundLinear]) -> None:
        """`iters` signed steps on random minibatches; the parameters of the lowest minibatch loss are kept."""
        cfg = self.cfg
        params = [p for m in tuned.values() for p in (m.v, m.alpha, m.beta)]
        lr = cfg.lr or 1.0 / cfg.iters
        gen = torch.Generator().manual_seed(cfg.seed)
        best, best_loss = [p.detach().clone() for p in params], float("inf")
        bar = tqdm(range(cfg.iters), desc=f"signround layer {index}", leave=False, disable=not self.progress)
        with torch.enable_grad():
            for it in bar:
                pick = torch.randperm(len(self.inputs), generator=gen)[: cfg.batch].tolist()
                h = torch.cat([self.inputs[i] for i in pick])
                t = torch.cat([self.targets[i] for i in pick])
                loss = F.mse_loss(hidden_states(layer(h, **self.kwargs)).float(), t.float())
                if loss.item() < best_loss:
                    best_loss, best = loss.item(), [p.detach().clone() for p in params]
                    bar.set_postfix(best_loss=f"{best_loss:.3g}", refresh=False)
                loss.backward()
                sign_step(params, lr * (1 - it / cfg.iters))
                for m in tuned.values():
                    m.clamp_()
        with torch.no_grad():
            for p, b in zip(params, best):
                p.copy_(b)


@register_pass("signround", SignRoundConfig, needs_calibration=True)
def signround(model: nn.Module, cfg: SignRoundConfig, ctx: Context) -> nn.Module:
    """Learned rounding and clipping (AutoRound's SignRound), layer by layer over calibration data."""
    chosen = select_modules(model, cfg.targets, cfg.ignore, ctx.where)
    refuse_packed(chosen, ctx.where, (PackedLinear,), "signround tunes the rounding of dense weights; run it before "
                  "pruning or other quantizers (awq before it is fine: awq only rescales)")
    ids = ctx.calibration()
    options = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("state_dir", "resume")}
    state = LayerState(cfg.state_dir, cfg.resume, {"options": options, "modules": sorted(chosen),
                                                   "calibration": tokens_digest(ids)}, ctx.where)
    algo = SignRoundLayers(model, chosen, cfg, ctx.progress, state)
    in_layers = {n for per in algo.per_layer for n in per}
    run_layerwise(model, ids, algo, ctx.device, progress=ctx.progress, desc="signround")
    outside = [n for n in chosen if n not in in_layers]  # e.g. lm_head when targeted: no layer inputs, RTN
    for name in outside:
        codes, scale, zero = rtn_quantize(chosen[name].weight, cfg.spec())
        set_module(model, name, quantize_linear(chosen[name], codes, scale, zero, cfg.spec()))
    ctx.stats.update(modules=len(chosen), rtn_fallback=outside, calibration_tokens=int(ids.numel()),
                     layer_loss_rtn=round(algo.loss_rtn, 6), layer_loss=round(algo.loss_tuned, 6),
                     resumed_layers=algo.resumed)
    return model
