"""Choose the modules a pass acts on from `targets` / `ignore` fnmatch patterns over module names."""
from __future__ import annotations

from fnmatch import fnmatchcase

import torch.nn as nn

from compress.errors import CompressError


def decoder_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every nn.Linear in the model (the default set before `ignore` removes lm_head)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def select_modules(model: nn.Module, targets: tuple[str, ...], ignore: tuple[str, ...], where: str,
                   candidates: dict[str, nn.Module] | None = None) -> dict[str, nn.Module]:
    """Modules matched by `targets` (all candidates when empty) minus those matched by `ignore`.

    A `targets` pattern that matches no module is a user error: a typo would otherwise silently
    compress nothing. `ignore` patterns may match nothing (the default `lm_head` is absent in
    some models).
    """
    pool = decoder_linears(model) if candidates is None else candidates
    if targets:
        for pat in targets:
            if not any(fnmatchcase(n, pat) for n in pool):
                sample = ", ".join(list(pool)[:3])
                raise CompressError(f"{where}: targets pattern {pat!r} matches no module (names look like: {sample})")
        chosen = {n: m for n, m in pool.items() if any(fnmatchcase(n, p) for p in targets)}
    else:
        chosen = dict(pool)
    left = {n: m for n, m in chosen.items() if not any(fnmatchcase(n, p) for p in ignore)}
    if not left:  # e.g. every linear already packed by an earlier pass: say so instead of doing nothing
        raise CompressError(f"{where}: targets/ignore leave no module to work on ({len(pool)} dense candidates; "
                            "modules packed by an earlier pass are not candidates)")
    return left


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted path `name`."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
