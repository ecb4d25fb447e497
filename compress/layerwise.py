"""The layer-by-layer calibration driver shared by GPTQ, AWQ, Wanda and SparseGPT.

Capture the inputs of decoder layer 0 once, then for each layer: onload it, let the algorithm
watch it run over every calibration window (hooks), let it rewrite the layer's weights, and feed
the rewritten layer's outputs to the next layer. Peak memory is one layer plus activations, so a
model larger than the GPU can be compressed with the rest of it left on the CPU.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Protocol

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from compress.errors import CompressError


class LayerAlgorithm(Protocol):
    """What an algorithm supplies to the driver for one decoder layer at a time."""

    def prepare(self, index: int, layer: nn.Module) -> None:
        """Install hooks that collect statistics while the layer runs over the calibration set."""

    def finish(self, index: int, layer: nn.Module) -> None:
        """Remove hooks and write the layer's new weights (or modules)."""


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a HF causal LM (Llama/Mistral/Qwen layout: model.model.layers)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise CompressError(f"{type(model).__name__}: layer-by-layer passes need a model with model.layers (Llama-like)")
    return layers


class _Stop(Exception):
    pass


@torch.no_grad()
def capture_inputs(model: nn.Module, ids: torch.Tensor, device: torch.device, batch_size: int = 1
                   ) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """Hidden states entering layer 0 for each batch of windows, and the layer's keyword arguments
    (rotary embeddings, mask), which are the same for every batch of equal shape."""
    layers = decoder_layers(model)
    inputs: list[torch.Tensor] = []
    kwargs: dict[str, Any] = {}

    def grab(_mod: nn.Module, args: tuple, kw: dict) -> None:
        hidden = args[0] if args else kw.pop("hidden_states")
        inputs.append(hidden)
        if not kwargs:
            kwargs.update({k: v for k, v in kw.items() if k not in ("hidden_states", "past_key_values", "past_key_value")})
        raise _Stop

    handle = layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    moved = _onload_non_layers(model, device)
    try:
        for start in range(0, ids.shape[0], batch_size):
            try:
                model(ids[start : start + batch_size].to(device), use_cache=False)
            except _Stop:
                pass
    finally:
        handle.remove()
        for mod, dev in moved:
            mod.to(dev)
    kwargs["use_cache"] = False
    return inputs, kwargs


def _onload_non_layers(model: nn.Module, device: torch.device) -> list[tuple[nn.Module, torch.device]]:
    """Move embeddings and rotary tables (everything before layer 0) to the device for capture."""
    moved = []
    for name, mod in model.model.named_children():
        if name == "layers":
            continue
        p = next(iter(mod.parameters()), None)
        p = next(iter(mod.buffers()), None) if p is None else p
        if p is not None and p.device != device:
            moved.append((mod, p.device))
            mod.to(device)
    return moved


def hidden_states(out: Any) -> torch.Tensor:
    """The hidden states of a decoder layer's output (a tensor, or a tuple that starts with one)."""
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def run_layerwise(model: nn.Module, ids: torch.Tensor, algo: LayerAlgorithm, device: torch.device,
                  progress: bool = True, desc: str = "layers", batch_size: int = 1) -> None:
    """Drive `algo` over every decoder layer in order (see the module docstring)."""
    layers = decoder_layers(model)
    inputs, kwargs = capture_inputs(model, ids, device, batch_size)
    kwargs = {k: _to(v, device) for k, v in kwargs.items()}
    for i, layer in enumerate(tqdm(layers, desc=desc, disable=not progress, leave=False)):
        require_finite_inputs(model, i, inputs)
        home = next(layer.parameters()).device
        layer.to(device)
        algo.prepare(i, layer)
        for h in inputs:
            layer(h.to(device), **kwargs)
        algo.finish(i, layer)
        inputs = [hidden_states(layer(h.to(device), **kwargs)).to(h.device) for h in inputs]
        layer.to(home)


def require_finite_inputs(model: nn.Module, index: int, inputs: list[torch.Tensor]) -> None:
    """Refuse NaN/inf calibration activations by the layer they enter, before any statistic is built from
    them: no option of a pass (damp included) can repair them, and a NaN Hessian or norm poisons every weight."""
    bad = sum(int((~torch.isfinite(h)).sum()) for h in inputs)
    if bad:
        name = next((n for n, m in model.named_modules() if m is decoder_layers(model)[index]), f"layer {index}")
        source = "the embeddings" if index == 0 else f"decoder layer {index - 1}"
        raise CompressError(f"module {name}: its calibration input (the output of {source}) holds {bad} NaN/inf "
                            f"value(s); no option of the pass can fix that (damp included): check the calibration "
                            f"data and the weights before this layer")


def _to(v: Any, device: torch.device) -> Any:
    if isinstance(v, torch.Tensor):
        return v.to(device)
    if isinstance(v, tuple):
        return tuple(_to(x, device) for x in v)
    return v


@contextmanager
def watch_inputs(modules: dict[str, nn.Module], fn: Callable[[str, torch.Tensor], None]) -> Iterator[None]:
    """Call fn(name, x) with each module's input flattened to [tokens, in_features] while active."""
    handles = [m.register_forward_hook(lambda mod, args, out, n=n: fn(n, args[0].reshape(-1, args[0].shape[-1])))
               for n, m in modules.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
