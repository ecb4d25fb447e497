"""Which student layer learns from which teacher layer (hidden-state loss), and capturing their outputs."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn

from compress.layerwise import decoder_layers


def proportional_layer_map(n_student: int, n_teacher: int) -> dict[int, int]:
    """Student layer i ↔ teacher layer round((i+1)·T/S) − 1: evenly spread, last ↔ last."""
    return {i: round((i + 1) * n_teacher / n_student) - 1 for i in range(n_student)}


def _norm_signature(layer: nn.Module) -> torch.Tensor | None:
    norms = [m.weight for n, m in layer.named_modules() if n.endswith("layernorm") and getattr(m, "weight", None) is not None]
    return torch.cat([w.detach().float().flatten().cpu() for w in norms]) if norms else None


def auto_layer_map(student: nn.Module, teacher: nn.Module) -> dict[int, int]:
    """Find each student layer's origin in the teacher by its norm weights (which pruning keeps and
    quantization does not touch); fall back to a proportional map when widths differ."""
    s_layers, t_layers = decoder_layers(student), decoder_layers(teacher)
    t_sigs = [_norm_signature(layer) for layer in t_layers]
    out: dict[int, int] = {}
    for i, layer in enumerate(s_layers):
        sig = _norm_signature(layer)
        dists = [float((sig - t).pow(2).sum()) if sig is not None and t is not None and t.shape == sig.shape else None
                 for t in t_sigs]
        if any(d is None for d in dists):
            return proportional_layer_map(len(s_layers), len(t_layers))
        out[i] = min(range(len(dists)), key=dists.__getitem__)
    ordered = list(out.values())
    if ordered != sorted(set(ordered)):  # ambiguous (e.g. untrained norms, all ones): keep the order sane
        return proportional_layer_map(len(s_layers), len(t_layers))
    return out


@contextmanager
def capture_layer_outputs(model: nn.Module, indices: list[int]) -> Iterator[dict[int, torch.Tensor]]:
    """While active, maps each decoder layer index in `indices` to its latest output hidden state."""
    layers = decoder_layers(model)
    seen: dict[int, torch.Tensor] = {}

    def hook(i: int):
        def fn(_m: nn.Module, _a: tuple, out: object) -> None:
            seen[i] = out[0] if isinstance(out, (tuple, list)) else out
        return fn

    handles = [layers[i].register_forward_hook(hook(i)) for i in indices]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


class DistillStudent(nn.Module):
    """The student plus learned projections (student width → teacher width) for the hidden loss.

    One module, so that data-parallel wrappers see every trained parameter in one forward call.
    """

    def __init__(self, model: nn.Module, layer_map: dict[int, int], student_width: int, teacher_width: int) -> None:
        super().__init__()
        self.model = model
        self.layer_map = dict(layer_map)
        self.proj = nn.ModuleDict({str(i): nn.Linear(student_width, teacher_width, bias=False) for i in layer_map}
                                  if student_width != teacher_width else {})

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        with capture_layer_outputs(self.model, list(self.layer_map)) as seen:
            logits = self.model(input_ids=ids, use_cache=False).logits
            hidden = {i: (self.proj[str(i)](h) if str(i) in self.proj else h) for i, h in seen.items()}
        return logits, hidden
