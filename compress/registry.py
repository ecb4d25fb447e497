"""Explicit pass registration: a pass is a config dataclass plus a function, registered by name."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch.nn as nn

    from compress.context import Context


def option(default: Any, help: str, *, choices: tuple | None = None,
           min: float | None = None, max: float | None = None) -> Any:
    """A config field carrying its help text and allowed values (read by validation and `compress passes`)."""
    meta = {"help": help, "choices": choices, "min": min, "max": max}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, kw_only=True)
class PassConfig:
    """Options every pass shares: which modules it touches."""

    targets: tuple[str, ...] = option((), "module name patterns (fnmatch) to act on; empty = the pass's default set")
    ignore: tuple[str, ...] = option(("lm_head",), "module name patterns to leave alone")

    def check(self) -> None:
        """Cross-field checks beyond types and ranges; raise ValueError('key: why')."""


PassFn = Callable[["nn.Module", Any, "Context"], "nn.Module"]


@dataclass(frozen=True)
class PassSpec:
    """What the driver needs to know about a pass before running it."""

    name: str
    config_cls: type[PassConfig]
    fn: PassFn
    needs_calibration: bool = False
    needs_teacher: bool = False
    doc: str = ""


_PASSES: dict[str, PassSpec] = {}


def register_pass(name: str, config_cls: type[PassConfig], *, needs_calibration: bool = False,
                  needs_teacher: bool = False) -> Callable[[PassFn], PassFn]:
    """Register `fn` under `name`; a duplicate name is a programming error."""
    if not (dataclasses.is_dataclass(config_cls) and issubclass(config_cls, PassConfig)):
        raise TypeError(f"pass {name!r}: config must be a PassConfig dataclass")

    def wrap(fn: PassFn) -> PassFn:
        if name in _PASSES:
            raise ValueError(f"pass {name!r} is already registered")
        doc = (fn.__doc__ or "").strip().splitlines()
        _PASSES[name] = PassSpec(name, config_cls, fn, needs_calibration, needs_teacher, doc[0] if doc else "")
        return fn

    return wrap


def get_pass(name: str) -> PassSpec:
    """Look up a registered pass (KeyError if unknown: callers turn that into a user error)."""
    _load_builtin()
    return _PASSES[name]


def list_passes() -> dict[str, PassSpec]:
    """All registered passes, built-in ones included, by name."""
    _load_builtin()
    return dict(sorted(_PASSES.items()))


def _load_builtin() -> None:
    import compress.passes  # noqa: F401  (its __init__ imports each pass module explicitly)
