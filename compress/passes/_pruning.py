"""Shared by the unstructured/N:M pruning passes: common options, grouping modules by decoder
layer for the layer-by-layer driver, and swapping a pruned weight into compact storage."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn

from compress.algorithms.masks import parse_pattern
from compress.errors import CompressError
from compress.formats.sparse import SparseLinear
from compress.layerwise import decoder_layers, watch_inputs
from compress.registry import PassConfig, option
from compress.select import set_module


@dataclass(frozen=True, kw_only=True)
class PruneConfig(PassConfig):
    """Options every weight-pruning pass shares."""

    sparsity: float = option(0.5, "fraction of each targeted weight matrix set to zero (ignored when pattern is set)", min=0.0, max=0.99)
    pattern: str | None = option(None, "semi-structured 'N:M' (keep N of every M consecutive inputs), e.g. '2:4'; null = unstructured")
    storage: str = option("sparse", "'sparse': bitmask + non-zero values in memory and on disk; 'dense': a dense weight holding zeros",
                          choices=("sparse", "dense"))

    def check(self) -> None:
        if self.pattern is not None:
            parse_pattern(self.pattern)

    @property
    def nm(self) -> tuple[int, int] | None:
        return parse_pattern(self.pattern) if self.pattern else None

    @property
    def effective_sparsity(self) -> float:
        nm = self.nm
        return 1 - nm[0] / nm[1] if nm else self.sparsity


def check_nm_shapes(modules: dict[str, nn.Module], nm: tuple[int, int] | None, where: str) -> None:
    """An N:M pattern needs in_features divisible by M: say which module breaks it, before any work."""
    if nm is None:
        return
    for name, m in modules.items():
        if m.in_features % nm[1]:
            raise CompressError(f"{where}: pattern '{nm[0]}:{nm[1]}' needs in_features divisible by {nm[1]}; "
                                f"{name} has {m.in_features} (add it to ignore)")


def by_layer(model: nn.Module, chosen: dict[str, nn.Module], where: str) -> dict[int, dict[str, nn.Module]]:
    """Chosen modules grouped by decoder layer index; a module outside the layers is a user error."""
    layers = decoder_layers(model)
    prefix = next(n for n, m in model.named_modules() if m is layers)
    out: dict[int, dict[str, nn.Module]] = {}
    for name, mod in chosen.items():
        head, _, rest = name.removeprefix(prefix + ".").partition(".")
        if not name.startswith(prefix + ".") or not head.isdigit() or not rest:
            raise CompressError(f"{where}: module {name!r} is outside the decoder layers ({prefix}.N.*); "
                                f"layer-by-layer pruning acts only inside them (add it to ignore)")
        out.setdefault(int(head), {})[name] = mod
    return out


def apply_mask(model: nn.Module, name: str, lin: nn.Module, weight: torch.Tensor, mask: torch.Tensor,
               cfg: PruneConfig) -> int:
    """Install weight·mask at `name` in the configured storage; returns the number of zeros."""
    w = (weight.to(mask.device) * mask).to(lin.weight.dtype)
    bias = lin.bias
    if cfg.storage == "sparse":
        set_module(model, name, SparseLinear.from_dense(w, bias, cfg.pattern))
    else:
        new = nn.Linear(lin.in_features, lin.out_features, bias=bias is not None, dtype=w.dtype, device=w.device)
        with torch.no_grad():
            new.weight.copy_(w)
            if bias is not None:
                new.bias.copy_(bias)
        set_module(model, name, new)
    return int((w == 0).sum())


def record(ctx_stats: dict, zeros: int, total: int, modules: int) -> None:
    """Model-wide sparsity of the targeted weights, into the pass report."""
    ctx_stats["modules"] = modules
    ctx_stats["sparsity"] = round(zeros / max(1, total), 6)


class LayerStats:
    """A layer-by-layer algorithm: collect one statistic per targeted module while the layer runs
    over the calibration set (`make(in_features, device)` with an `add_batch(x)`), then hand them to
    `done(index, modules, stats)`, which rewrites the modules (or only records something)."""

    def __init__(self, groups: dict[int, dict[str, nn.Module]], make: Callable[[int, torch.device], Any],
                 done: Callable[[int, dict[str, nn.Module], dict[str, Any]], None], device: torch.device) -> None:
        self.groups, self.make, self.done, self.device = groups, make, done, device
        self._stats: dict[str, Any] = {}
        self._watch: Any = None

    def prepare(self, index: int, layer: nn.Module) -> None:
        mods = self.groups.get(index, {})
        self._stats = {n: self.make(m.in_features, self.device) for n, m in mods.items()}
        self._watch = watch_inputs(mods, lambda n, x: self._stats[n].add_batch(x))
        self._watch.__enter__()

    def finish(self, index: int, layer: nn.Module) -> None:
        self._watch.__exit__(None, None, None)
        if self._stats:
            self.done(index, self.groups[index], self._stats)
