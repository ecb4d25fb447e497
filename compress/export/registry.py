"""Explicit registration of export formats."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch.nn as nn

from compress.errors import CompressError

Check = Callable[[nn.Module], None]
Write = Callable[[nn.Module, Any, Path], dict[str, str]]  # (model, tokenizer, dir) → {module: what it became}


@dataclass(frozen=True)
class Exporter:
    """A target format: `check` raises CompressError naming a module it cannot represent; `write` writes it."""

    name: str
    doc: str
    check: Check
    write: Write
    load_hint: str  # how to load / serve the exported directory, for the model card ({out} is its path)


EXPORTERS: dict[str, Exporter] = {}


def register_exporter(exporter: Exporter) -> Exporter:
    if exporter.name in EXPORTERS:
        raise ValueError(f"exporter {exporter.name!r} already registered")
    EXPORTERS[exporter.name] = exporter
    return exporter


def get_exporter(name: str) -> Exporter:
    from compress.export import formats  # noqa: F401  (registers the built-in formats)

    if name not in EXPORTERS:
        raise CompressError(f"export --format {name!r}: unknown; allowed: {', '.join(sorted(EXPORTERS))}")
    return EXPORTERS[name]


@contextmanager
def quiet_hf() -> Iterator[None]:
    """No transformers progress bars while writing: the CLI prints one line per export."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()
