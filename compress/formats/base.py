"""The contract between a storage format, the checkpoint writer and the loader."""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn as nn

from compress.errors import CompressError


class PackedLinear(nn.Module):
    """A linear layer whose weight is stored in a compressed form.

    Everything needed to rebuild it lives in its buffers (saved to safetensors) and in
    `spec()` (saved to the checkpoint's manifest), so `from_spec` + `load_state_dict` restores it.
    """

    format: ClassVar[str] = ""
    in_features: int
    out_features: int

    def spec(self) -> dict[str, Any]:
        """JSON-able parameters that, with the shapes, rebuild an empty module of this format."""
        raise NotImplementedError

    @classmethod
    def from_spec(cls, in_features: int, out_features: int, bias: bool, dtype: torch.dtype,
                  spec: dict[str, Any]) -> "PackedLinear":
        """An empty module with correctly shaped buffers, ready for `load_state_dict`."""
        raise NotImplementedError

    def dense_weight(self) -> torch.Tensor:
        """The weight as a dense [out, in] float tensor (the reference the kernels are tested against)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, format={self.format}, {self.spec()}"


FORMATS: dict[str, type[PackedLinear]] = {}


def register_format(cls: type[PackedLinear]) -> type[PackedLinear]:
    """Register a format class under its `format` name (the loader finds it by that name)."""
    if not cls.format or cls.format in FORMATS:
        raise ValueError(f"format {cls.format!r} is empty or already registered")
    FORMATS[cls.format] = cls
    return cls


def refuse_packed(modules: dict[str, nn.Module], where: str, kinds: tuple[type, ...], advice: str) -> None:
    """A pass that rewrites dense weights must not silently skip or densify packed ones: one-line error."""
    for name, mod in modules.items():
        if isinstance(mod, kinds):
            raise CompressError(f"{where}: {name} is already {type(mod).__name__} (format {mod.format!r}); {advice}")
