"""Dense export: every packed module back to a plain nn.Linear, saved as a Hugging Face directory.

The weights are the quantized/pruned values (not the original ones), so the exported model computes
what the checkpoint computes, and loads in anything that reads safetensors + config.json.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from compress.checkpoint import NONUNIFORM_ATTR
from compress.errors import CompressError
from compress.export.registry import Exporter, register_exporter
from compress.formats import PackedLinear
from compress.models import storage_dtype
from compress.select import set_module


def check_uniform(model: nn.Module, fmt: str) -> None:
    """Per-layer widths (structured pruning with a global scope) are not expressible in config.json."""
    if getattr(model, NONUNIFORM_ATTR, False):
        raise CompressError(f"export --format {fmt}: layers of this model differ in width (structured pruning with "
                            f"ffn_scope: global), which config.json cannot describe; prune with ffn_scope: layer")


def densify(model: nn.Module, dtype: torch.dtype) -> dict[str, str]:
    """Replace packed modules in place by nn.Linear holding their effective weights; {name: 'dense'}."""
    done: dict[str, str] = {}
    for name, mod in list(model.named_modules()):
        if isinstance(mod, PackedLinear):
            lin = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None, dtype=dtype)
            with torch.no_grad():
                lin.weight.copy_(mod.dense_weight().to(dtype))
                if mod.bias is not None:
                    lin.bias.copy_(mod.bias.to(dtype))
            set_module(model, name, lin)
            done[name] = "dense"
    return done


def save_hf(model: nn.Module, tokenizer: Any, out: Path, dtype: torch.dtype) -> None:
    """save_pretrained with no stale quantization_config and config.dtype saying what the weights are."""
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.dtype = dtype
    model.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)


def write_dense(model: nn.Module, tokenizer: Any, out: Path) -> dict[str, str]:
    dtype = storage_dtype(model)
    modules = densify(model, dtype)
    model.to(dtype)
    save_hf(model, tokenizer, out, dtype)
    return modules


register_exporter(Exporter(
    "dense", "plain Hugging Face safetensors with the compressed weights' values (loads anywhere; not smaller)",
    check=lambda m: check_uniform(m, "dense"), write=write_dense,
    load_hint="from transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained('{out}')"))
