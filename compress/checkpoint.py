"""Compressed checkpoints: safetensors + config + tokenizer + manifest, written atomically.

A checkpoint is a Hugging Face model directory (model.safetensors with the usual names, so a model
with no packed modules loads in plain transformers) plus `compress.json`, which names the format
and parameters of every packed module, and the resolved `recipe.yaml` and `report.json`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from compress.errors import CompressError
from compress.formats import FORMATS, PackedLinear
from compress.formats.quant_linear import QuantLinear
from compress.formats.tied_embedding import QuantEmbedding, tied_names
from compress.fsutil import atomic_dir
from compress.select import set_module

MANIFEST = "compress.json"
WEIGHTS = "model.safetensors"
NONUNIFORM_ATTR = "compress_nonuniform"  # set on models whose layers differ in width (structured pruning)


def is_checkpoint(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def manifest_of(model: nn.Module, dtype: torch.dtype) -> dict[str, Any]:
    """What the loader needs beyond config.json: packed modules and their specs."""
    formats = {n: {"format": m.format, "spec": m.spec()} for n, m in model.named_modules() if isinstance(m, PackedLinear)}
    out = {"version": 1, "dtype": str(dtype).removeprefix("torch."), "formats": formats}
    tied = tied_names(model)
    if tied:  # embeddings that read a packed head (formats/tied_embedding.py)
        out["tied_embeddings"] = tied
    if getattr(model, NONUNIFORM_ATTR, False):  # per-layer widths config.json cannot express
        out["shapes"] = {n: [m.out_features, m.in_features] for n, m in model.named_modules()
                         if isinstance(m, (nn.Linear, PackedLinear))}
    return out


def _apply_shapes(model: nn.Module, shapes: dict[str, list[int]], dtype: torch.dtype) -> None:
    """Resize linears to the widths recorded in the manifest, and keep attention's GQA ratio in step."""
    for name, (out_f, in_f) in shapes.items():
        lin = model.get_submodule(name)
        if (lin.out_features, lin.in_features) != (out_f, in_f):
            set_module(model, name, nn.Linear(in_f, out_f, bias=lin.bias is not None, dtype=dtype))
    for mod in model.modules():
        q, k = getattr(mod, "q_proj", None), getattr(mod, "k_proj", None)
        if q is not None and k is not None and hasattr(mod, "num_key_value_groups"):
            mod.num_key_value_groups = q.out_features // k.out_features
    setattr(model, NONUNIFORM_ATTR, True)


def _unique_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of the state dict with tied tensors once (the first name that holds them)."""
    seen: set[tuple[int, int]] = set()
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else (id(t), 0)
        if key not in seen:
            seen.add(key)
            yield name, t


def unique_state(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """State dict with tied tensors stored once and floating tensors cast to the storage dtype."""
    return {name: (t.detach().to(dtype) if t.is_floating_point() else t.detach()).contiguous().cpu()
            for name, t in _unique_tensors(model)}


def state_bytes(model: nn.Module, dtype: torch.dtype) -> int:
    """Bytes `unique_state` would hold, without making it."""
    return sum(t.numel() * (dtype.itemsize if t.is_floating_point() else t.element_size())
               for _, t in _unique_tensors(model))


SIDE_FILES_BYTES = 16 << 20  # config, tokenizer (a large vocabulary's tokenizer.json is ~10 MB), manifest, report


def needed_bytes(model: nn.Module, dtype: torch.dtype) -> int:
    """What a checkpoint of `model` will take on disk, a little over: weights plus the side files."""
    return state_bytes(model, dtype) + SIDE_FILES_BYTES


def round_to_storage(model: nn.Module, dtype: torch.dtype) -> None:
    """Round saved floating tensors to what the checkpoint will hold, so the evaluated model is the saved one.

    Only state-dict tensors: non-persistent buffers (rotary frequencies) are rebuilt at load, never saved.
    """
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point() and t.dtype != dtype:
                t.copy_(t.to(dtype).to(t.dtype))


def write_dir(model: nn.Module, tokenizer: Any, d: Path, dtype: torch.dtype) -> None:
    """Write weights, config, generation config, tokenizer and manifest into an existing directory."""
    cfg = model.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    cfg.dtype = dtype
    cfg.save_pretrained(d)
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.save_pretrained(d)
    if tokenizer is not None:
        tokenizer.save_pretrained(d)
    save_file(unique_state(model, dtype), str(d / WEIGHTS), metadata={"format": "pt"})
    (d / MANIFEST).write_text(json.dumps(manifest_of(model, dtype), indent=1))


def save(model: nn.Module, tokenizer: Any, out: str | Path, *, dtype: torch.dtype | None = None,
         recipe_yaml: str | None = None, report: dict | None = None, force: bool = False) -> Path:
    """Save atomically: everything goes to a temporary sibling, renamed to `out` at the end; refused before
    writing when the disk has too little space, and a disk that fills up anyway leaves the old `out` as it was."""
    from compress.models import storage_dtype

    out = Path(out)
    dtype = dtype or storage_dtype(model)
    with atomic_dir(out, force, needed_bytes(model, dtype)) as tmp:
        write_dir(model, tokenizer, tmp, dtype)
        if recipe_yaml is not None:
            (tmp / "recipe.yaml").write_text(recipe_yaml)
        if report is not None:
            report.setdefault("size", {})["on_disk_bytes"] = (tmp / WEIGHTS).stat().st_size
            (tmp / "report.json").write_text(json.dumps(report, indent=1, default=str))
    return out


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CompressError(f"{path / MANIFEST}: unreadable manifest: {e}") from None


DAMAGE = (KeyError, TypeError, AttributeError, ValueError, RuntimeError, OSError, IndexError, SafetensorError)


def damaged(path: Path, e: BaseException) -> CompressError:
    """One line for a checkpoint whose files do not fit together (truncated, edited, from another version)."""
    first = (str(e).strip().splitlines() or [""])[0][:160]
    return CompressError(f"{path}: damaged or inconsistent checkpoint ({type(e).__name__}: {first}); "
                         f"re-create it with `compress run RECIPE --out {path} --force`")


def load(path: str | Path, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> nn.Module:
    """Rebuild a model saved by `save`: same modules, same buffers, same logits."""
    path = Path(path)
    if not (path / WEIGHTS).is_file():
        raise CompressError(f"{path}: not a compress checkpoint (no {WEIGHTS})")
    try:
        return _load(path, device, dtype)
    except CompressError:
        raise
    except DAMAGE as e:
        raise damaged(path, e) from None


def _load(path: Path, device: torch.device | str | None, dtype: torch.dtype | None) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    from compress.models import STORAGE_ATTR, config_dtype, compute_dtype, pick_device

    device = pick_device(device)
    manifest = _read_manifest(path) if is_checkpoint(path) else {"formats": {}}
    dtype = dtype or compute_dtype(device, any(e.get("format") == "int" for e in manifest["formats"].values()))
    config = AutoConfig.from_pretrained(path)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if manifest.get("shapes"):
        _apply_shapes(model, manifest["shapes"], dtype)
    for name, entry in manifest["formats"].items():
        if entry["format"] not in FORMATS:
            raise CompressError(f"{path}: module {name} uses format {entry['format']!r}, unknown to this version; known: {', '.join(FORMATS)}")
        lin = model.get_submodule(name)
        cls = FORMATS[entry["format"]]
        set_module(model, name, cls.from_spec(lin.in_features, lin.out_features, lin.bias is not None, dtype, entry["spec"]))
    for emb_name, head_name in manifest.get("tied_embeddings", {}).items():
        emb = model.get_submodule(emb_name)
        set_module(model, emb_name, QuantEmbedding(model.get_submodule(head_name), getattr(emb, "padding_idx", None)))
    state = load_file(str(path / WEIGHTS))
    raw_dtypes = {k: v.dtype for k, v in state.items()}
    own = model.state_dict()
    state = {k: (v.to(own[k].dtype) if v.is_floating_point() and k in own else v) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    for name in manifest["formats"]:
        mod, stored = model.get_submodule(name), raw_dtypes.get(f"{name}.scales")
        if isinstance(mod, QuantLinear) and stored is not None:
            mod.hold_params_in(stored)  # not widened: see QuantLinear._apply
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied and not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise CompressError(f"{path}: checkpoint does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if config.tie_word_embeddings and not manifest.get("tied_embeddings"):
        model.tie_weights()
    model = model.to(device).eval()
    setattr(model, STORAGE_ATTR, config_dtype(path))
    return model


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def inspect(path: str | Path) -> dict[str, Any]:
    """Per-module format and bytes on disk from the safetensors header; the zero fraction of dense weights
    is read too, for weight files up to 2 GiB."""
    path = Path(path)
    if not (path / WEIGHTS).is_file():
        raise CompressError(f"{path}: not a checkpoint directory (no {WEIGHTS})")
    try:
        return _inspect(path)
    except CompressError:
        raise
    except DAMAGE as e:
        raise damaged(path, e) from None


def _inspect(path: Path) -> dict[str, Any]:
    formats = _read_manifest(path)["formats"] if is_checkpoint(path) else {}
    modules: dict[str, dict[str, Any]] = {}
    with safe_open(str(path / WEIGHTS), "pt") as f:
        for key in f.keys():
            sl = f.get_slice(key)
            shape = sl.get_shape()
            dt = sl.get_dtype()
            nbytes = _DTYPE_BYTES.get(dt, 4) * int(torch.tensor(shape).prod().item() if shape else 1)
            mod = key.rpartition(".")[0]
            row = modules.setdefault(mod, {"format": "dense", "bytes": 0, "tensors": {}})
            row["bytes"] += nbytes
            row["tensors"][key.rpartition(".")[2]] = {"dtype": dt, "shape": shape}
    for name, entry in formats.items():
        if name in modules:
            modules[name]["format"] = f"{entry['format']}:" + ",".join(f"{k}={v}" for k, v in entry["spec"].items())
            if "sparsity" in entry["spec"]:
                modules[name]["sparsity"] = entry["spec"]["sparsity"]
    _dense_sparsity(path / WEIGHTS, modules)
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {"path": str(path), "total_bytes": total, "weights_bytes": (path / WEIGHTS).stat().st_size, "modules": modules}


def _dense_sparsity(weights: Path, modules: dict[str, dict[str, Any]]) -> None:
    """Fraction of exact zeros in each dense 2-D weight up to 64M entries (pruned-but-dense modules show up too).

    Skipped for weight files over 2 GiB: reading every weight of a large model would make inspect slow."""
    if weights.stat().st_size > DENSE_SCAN_BYTES:
        return
    with safe_open(str(weights), "pt") as f:
        for name, row in modules.items():
            t = row["tensors"].get("weight")
            if row["format"] == "dense" and t is not None and len(t["shape"]) == 2 and t["shape"][0] * t["shape"][1] <= 2**26:
                w = f.get_tensor(f"{name}.weight" if name else "weight")
                row["sparsity"] = round(float((w == 0).float().mean()), 6)


DENSE_SCAN_BYTES = 2**31
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
