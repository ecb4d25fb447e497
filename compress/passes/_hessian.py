"""Hessian-based passes (gptq, sparsegpt): say which module's Hessian failed, and whether damp can help.

`damp` cures a finite Hessian that is singular (too few calibration tokens); it cannot cure one that holds
NaN/inf, which comes from non-finite activations: advising "raise damp" there sends the user the wrong way.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from compress.errors import CompressError


def require_finite(H: torch.Tensor, names: list[str], where: str) -> None:
    """Refuse a Hessian with NaN/inf by module name, before the solver turns it into a misleading error."""
    if not bool(torch.isfinite(H).all()):
        raise CompressError(f"{where}: module {', '.join(names)}: its calibration activations hold NaN/inf (the Hessian "
                            f"is not finite); damp cannot fix that: check the calibration data, and the weights of "
                            f"the layers before it")


@contextmanager
def module_named(names: list[str], where: str) -> Iterator[None]:
    """Prefix a solver's one-line error (e.g. 'raise damp') with the pass and the module it failed on."""
    try:
        yield
    except CompressError as e:
        if str(e).startswith(where):
            raise
        raise CompressError(f"{where}: module {', '.join(names)}: {e}") from None
