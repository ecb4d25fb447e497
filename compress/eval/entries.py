"""What `compress bench` can measure: a model/checkpoint, a recipe applied to the base, a random-weight shape,
or the base through bitsandbytes (`bnb:nf4`, `compress.eval.bnb`).

Each entry is loaded only when its turn comes and dropped after, so one process can bench many.
"""
from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn

from compress.errors import CompressError
from compress.eval import bnb

RANDOM_PREFIX = "random:"
# ENTRY@DTYPE measures an entry in that compute dtype (e.g. the base as smollm2@bf16 beside smollm2@fp32)
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Llama shapes for speed-only runs (random weights: perplexity is meaningless and not measured).
RANDOM_SHAPES: dict[str, dict[str, Any]] = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
    "llama3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                        num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
}


@dataclass
class Loaded:
    """A model ready to measure, with what the row reports about where it came from."""

    model: nn.Module
    tokenizer: Any
    kind: str  # "model", "recipe", "random" or "bnb"
    size_bytes: int | None  # weights on disk; None when the model never was on disk
    random_weights: bool = False  # a random: shape, or a recipe applied to one (speed only)
    info: dict[str, Any] = field(default_factory=dict)  # extra row fields (a bnb row: its version and quant type)


@dataclass(frozen=True)
class Skipped:
    """An entry that cannot run on this machine (bitsandbytes missing, no backend): a row with the reason, not a crash."""

    reason: str


def split_dtype(spec: str) -> tuple[str, torch.dtype | None]:
    """'smollm2@bf16' → ('smollm2', bfloat16); no suffix → (spec, None): the entry's own compute dtype."""
    name, at, suffix = spec.rpartition("@")
    if not at:
        return spec, None
    if suffix not in DTYPES:
        raise CompressError(f"bench: entry {spec!r}: unknown dtype {suffix!r} after '@'; allowed: {', '.join(DTYPES)}")
    return name, DTYPES[suffix]


def is_recipe(spec: str) -> bool:
    return Path(split_dtype(spec)[0]).suffix in (".yaml", ".yml")


def check_entries(entries: list[str]) -> None:
    """Cheap checks before any model loads: a base first, recipes only after a real base, names that exist."""
    if not entries:
        raise CompressError("bench: give at least one model (the first one is the base)")
    if is_recipe(entries[0]):
        raise CompressError(f"bench: the first entry is the base and must be a model, not the recipe {entries[0]!r}")
    if bnb.is_bnb(entries[0]):
        raise CompressError(f"bench: the first entry is the base every ratio refers to and must be a model, not "
                            f"{entries[0]!r}; put the model first and the bnb entry after it")
    for e in entries:
        e = split_dtype(e)[0]
        if bnb.is_bnb(e):
            bnb.check(e, split_dtype(entries[0])[0])
            continue
        if e.startswith(RANDOM_PREFIX) and e[len(RANDOM_PREFIX):] not in RANDOM_SHAPES:
            raise CompressError(f"bench: unknown random shape {e!r}; allowed: {', '.join(RANDOM_PREFIX + k for k in RANDOM_SHAPES)}")
        if is_recipe(e):
            if not Path(e).is_file():
                raise CompressError(f"bench: recipe {e!r} not found")
            from compress.api import as_recipe, reads_text

            recipe = dataclasses.replace(as_recipe(e), evaluate=None)  # validated now, not after earlier entries ran
            if entries[0].startswith(RANDOM_PREFIX) and reads_text(recipe):
                raise CompressError(f"bench: recipe {e!r} reads text (calibration or a teacher), so it needs a real "
                                    f"base model with a tokenizer, not {entries[0]!r}; data-free recipes (rtn, magnitude) work")


def disk_size(spec: str) -> int | None:
    """Bytes of the weight files of a model directory (*.safetensors/*.bin); None for a .gguf file or a hub id."""
    from compress.models import resolve_model

    where, gguf = resolve_model(spec)
    if not isinstance(where, Path):
        return None
    if gguf:
        return None  # a GGUF holds its own quantization; the loaded model's bytes are what compare
    files = [f for f in where.iterdir() if f.suffix in (".safetensors", ".bin") and f.is_file()]
    return sum(f.stat().st_size for f in files) or None


def random_model(shape: str, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """A Llama of a known shape with random weights, built directly on the device."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(max_position_embeddings=8192, **RANDOM_SHAPES[shape])
    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()


def _recipe_entry(path: str, base: str, device: torch.device, dtype: torch.dtype | None, progress: bool) -> Loaded:
    """Run a recipe on the base (its evaluate section skipped: bench measures), save it to measure the bytes;
    the result is measured in `dtype`, else in the compute dtype a saved checkpoint of it would load in, with the
    scales it would hold."""
    from compress.api import as_recipe, run
    from compress.formats.quant_linear import QuantLinear
    from compress.models import compute_dtype, has_packed_int, storage_dtype

    recipe = dataclasses.replace(as_recipe(path), evaluate=None)
    base, _ = split_dtype(base)
    on_random = base.startswith(RANDOM_PREFIX)
    model: str | nn.Module = random_model(base[len(RANDOM_PREFIX):], device, compute_dtype(device)) if on_random else base
    with tempfile.TemporaryDirectory(prefix="compress-bench-") as td:
        res = run(recipe, model, out=Path(td) / "ckpt", device=device, progress=progress)
        size = (Path(td) / "ckpt" / "model.safetensors").stat().st_size
    res.model.to(dtype or compute_dtype(device, has_packed_int(res.model)))
    stored = storage_dtype(res.model)
    for mod in res.model.modules():
        if isinstance(mod, QuantLinear):
            mod.hold_params_in(stored)  # the scales its checkpoint saved (bf16 for SmolLM2), as `checkpoint.load` does
    return Loaded(res.model, res.tokenizer, "recipe", size, random_weights=on_random)


def load_entry(spec: str, base: str, device: torch.device, progress: bool = False) -> Loaded:
    """Load one bench entry on `device`, in the dtype after its '@' or else its compute dtype (`compute_dtype`)."""
    from compress.models import compute_dtype, load_model

    spec, dtype = split_dtype(spec)
    if bnb.is_bnb(spec):
        model, tok, info = bnb.load(spec, split_dtype(base)[0], device, dtype)
        return Loaded(model, tok, "bnb", None, info=info)  # quantized while loading: never on disk
    if spec.startswith(RANDOM_PREFIX):
        return Loaded(random_model(spec[len(RANDOM_PREFIX):], device, dtype or compute_dtype(device)), None, "random", None, True)
    if is_recipe(spec):
        return _recipe_entry(spec, base, device, dtype, progress)
    model, tok = load_model(spec, device, dtype)
    size = disk_size(spec)
    if size is None:  # a .gguf or hub model: the bytes its tensors take in the dtype a checkpoint would store
        from compress.api import weight_bytes
        from compress.models import storage_dtype

        size = weight_bytes(model, storage_dtype(model))
    return Loaded(model, tok, "model", size)


def iter_entries(entries: list[str], device: torch.device, progress: bool = False) -> Iterator[tuple[str, Loaded | Skipped]]:
    """Each entry loaded in turn (or Skipped, with why); the previous one is released before the next loads."""
    import gc

    for spec in entries:  # benchmark() has run check_entries
        try:
            loaded: Loaded | Skipped = load_entry(spec, entries[0], device, progress)
        except bnb.Unavailable as e:
            loaded = Skipped(str(e))
        yield spec, loaded
        del loaded
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
