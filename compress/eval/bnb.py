"""`bnb:nf4`, `bnb:fp4`, `bnb:int8` bench rows: the base loaded through `transformers.BitsAndBytesConfig`.

bitsandbytes is the baseline a user would reach for, so every bench can show how we compare to it on
the same machine. It stays an optional extra (`pip install 'compress[bnb]'`), imported only when such a
row loads. Where it cannot run here (not installed, no backend for this device or quant type) the row
is skipped with a one-line reason (`Unavailable`), not a crash; a mistake in the entry is a CompressError.
"""
from __future__ import annotations

import importlib
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from compress.errors import CompressError

PREFIX = "bnb:"
QUANTS = ("nf4", "fp4", "int8")
USAGE = "bnb:nf4, bnb:fp4 or bnb:int8, optionally :MODEL (default: the base's model)"


class Unavailable(Exception):
    """bitsandbytes cannot run this row on this machine; the message is the one-line reason shown and recorded."""


def is_bnb(spec: str) -> bool:
    return spec.startswith(PREFIX)


def parse(spec: str) -> tuple[str, str | None]:
    """'bnb:nf4' → ('nf4', None): the base's model; 'bnb:int8:DIR' → ('int8', 'DIR'). `spec` has no '@dtype'."""
    quant, sep, model = spec[len(PREFIX):].partition(":")
    if quant not in QUANTS:
        raise CompressError(f"bench: entry {spec!r}: unknown bitsandbytes type {quant!r}; allowed: {USAGE}")
    if sep and not model:
        raise CompressError(f"bench: entry {spec!r}: empty model after {PREFIX}{quant}:; allowed: {USAGE}")
    return quant, model or None


def check(spec: str, base: str) -> str:
    """The model a bnb entry quantizes (cheap checks, before any model loads): a dense model, not a shape or recipe."""
    from compress.checkpoint import is_checkpoint

    quant, model = parse(spec)
    target = model or base
    if target.startswith("random:") or Path(target).suffix in (".yaml", ".yml") or is_bnb(target):
        raise CompressError(f"bench: entry {spec!r} quantizes a model on disk, not {target!r}; write {PREFIX}{quant}:MODEL")
    if Path(target).is_dir() and is_checkpoint(Path(target)):
        raise CompressError(f"bench: entry {spec!r}: {target!r} is a compress checkpoint; bitsandbytes quantizes a dense "
                            f"model: write {PREFIX}{quant}:MODEL with the base it came from")
    return target


def config(quant: str, dtype: torch.dtype) -> Any:
    """What a user would write: nf4/fp4 computing in the row's dtype, or LLM.int8() with its defaults."""
    from transformers import BitsAndBytesConfig

    if quant == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant, bnb_4bit_compute_dtype=dtype)


def _import() -> Any:
    """The bitsandbytes module, or Unavailable with why (missing, or an import that fails: no usable backend)."""
    try:
        return importlib.import_module("bitsandbytes")
    except ImportError:
        raise Unavailable("bitsandbytes is not installed (pip install 'compress[bnb]')") from None
    except Exception as e:  # old releases raise at import on machines without their CUDA library
        raise Unavailable(f"bitsandbytes does not import here: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"


class _DropCastNotice(logging.Filter):
    """LLM.int8() logs 'inputs will be cast … to float16' on every matmul of a non-fp16 model (thousands of lines
    per perplexity pass); docs/benchmarking.md says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("MatMul8bitLt: inputs will be cast")


_DROP_CAST_NOTICE = _DropCastNotice()  # one instance: adding it again is a no-op


def load(spec: str, base: str, device: torch.device, dtype: torch.dtype | None) -> tuple[nn.Module, Any, dict[str, Any]]:
    """(model, tokenizer, row info) for a bnb entry; Unavailable where bitsandbytes cannot run it here.

    Default dtype: bf16, the compute dtype of our packed int models (`compute_dtype`), so the rows compare.
    A .gguf model is dequantized to a temporary bf16 directory first (transformers loads no bnb from GGUF).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from compress.models import _hub_reachable, load_model, resolve_model

    quant, _ = parse(spec)
    target = check(spec, base)
    dtype = dtype or torch.bfloat16
    where, gguf = resolve_model(target)  # a missing path is the user's mistake: CompressError, not a skip
    if isinstance(where, str) and not _hub_reachable():
        raise CompressError(f"bench: entry {spec!r}: {target!r} is not a local path and the model hub is unreachable")
    bnb = _import()
    logging.getLogger("bitsandbytes.autograd._functions").addFilter(_DROP_CAST_NOTICE)
    with tempfile.TemporaryDirectory(prefix="compress-bnb-") as td:
        if gguf:
            dense, tok = load_model(target, torch.device("cpu"), torch.bfloat16)
            dense.save_pretrained(td)
            tok.save_pretrained(td)
            del dense
            where = td
        try:
            tok = AutoTokenizer.from_pretrained(str(where))
        except Exception as e:  # not bitsandbytes' fault: the model directory's
            raise CompressError(f"bench: entry {spec!r}: cannot load the tokenizer of {target!r}: {_first_line(e)}") from None
        hf_logging.disable_progress_bar()  # as `load_model`: stderr stays for our messages
        try:
            model = AutoModelForCausalLM.from_pretrained(str(where), quantization_config=config(quant, dtype), dtype=dtype,
                                                         device_map={"": str(device) if device.type == "cpu" else device.index or 0})
            with torch.no_grad():  # a backend may load but lack the kernel for this device or shape: find out now
                model(torch.tensor([[0, 1]], device=device), use_cache=False)
        except Exception as e:
            raise Unavailable(f"bitsandbytes {bnb.__version__} cannot run {quant} on {device.type} here: {_first_line(e)}") from None
        finally:
            hf_logging.enable_progress_bar()
    info = {"bitsandbytes": bnb.__version__, "quant_type": quant, "model": target,
            "compute_dtype": str(dtype).removeprefix("torch.")}
    return model.eval(), tok, {"bnb": info}


def _side_tensors(m: nn.Module) -> list[torch.Tensor]:
    """Tensors a bnb layer holds outside parameters and buffers: 4-bit absmax/code (nested too), int8 row scales."""
    qs = getattr(m.weight, "quant_state", None)
    holders = [m.weight, getattr(m, "state", None), qs, getattr(qs, "state2", None)]
    return [v for h in holders for v in getattr(h, "__dict__", {}).values() if isinstance(v, torch.Tensor)]


def footprint(model: nn.Module) -> tuple[int, dict[str, int]]:
    """(bytes bitsandbytes holds outside parameters/buffers, bytes per bnb format including them).

    Without this a 4-bit row would hide its fp32 absmax (1/8 of the packed bytes at block 64). Imports
    nothing: a process that never loaded bitsandbytes has no bnb layers.
    """
    nn_mod = getattr(sys.modules.get("bitsandbytes"), "nn", None)
    if nn_mod is None:  # never imported (or blocked): no bnb layers
        return 0, {}
    seen = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()] if t.numel()}
    side = 0
    by_format: dict[str, int] = {}
    for m in model.modules():
        if isinstance(m, nn_mod.Linear4bit):
            key = f"bnb-{getattr(m.weight, 'quant_type', '4bit')}"
        elif isinstance(m, nn_mod.Linear8bitLt):
            key = "bnb-int8"
        else:
            continue
        own = m.weight.untyped_storage().nbytes()
        for t in _side_tensors(m):
            ptr = t.untyped_storage().data_ptr()
            if t.numel() and ptr not in seen:
                seen.add(ptr)
                side += t.untyped_storage().nbytes()
                own += t.untyped_storage().nbytes()
        by_format[key] = by_format.get(key, 0) + own
    return side, by_format
