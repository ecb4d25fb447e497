"""`compress export`: load a checkpoint, check the target can represent it, write atomically, add a model card."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from compress.export.card import model_card
from compress.export.registry import get_exporter, quiet_hf
from compress.fsutil import atomic_dir, check_out_dir

MARKER = "compress-export.json"  # provenance of an exported directory; also what lets --force replace it


@dataclass
class ExportResult:
    out: Path
    format: str
    modules: dict[str, str]  # module name → what it became in the target format


def export(source: str | Path, fmt: str, out: str | Path, *, force: bool = False) -> ExportResult:
    """Export `source` (a compress checkpoint or model directory) to `fmt` in `out`, all or nothing."""
    exporter = get_exporter(fmt)
    out = Path(out)
    src = Path(source)
    check_out_dir(out, force, (src,) if src.exists() else ())
    model, tok = _load(source)
    exporter.check(model)
    with atomic_dir(out, force) as tmp, quiet_hf():
        modules = exporter.write(model, tok, tmp)
        (tmp / "README.md").write_text(model_card(src, exporter, modules, tmp, str(out)))
        (tmp / MARKER).write_text(json.dumps({"source": str(source), "format": fmt, "modules": modules}, indent=1))
    return ExportResult(out, fmt, modules)


def _load(source: str | Path) -> tuple[torch.nn.Module, Any]:
    """On the CPU in fp32 (which holds bf16 scales exactly); a checkpoint saved without a tokenizer gives None."""
    from compress import checkpoint
    from compress.models import load_model

    src = Path(source)
    cpu = torch.device("cpu")
    if checkpoint.is_checkpoint(src) and not (src / "tokenizer_config.json").is_file():
        return checkpoint.load(src, cpu, torch.float32), None
    return load_model(str(source), cpu, torch.float32)
