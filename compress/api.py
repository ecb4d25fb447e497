"""The one core loop: load model → build context → run passes in order → evaluate → save → report.

The CLI and notebooks both call `run`, `evaluate` and `load` from here.
"""
from __future__ import annotations

import copy
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from compress import checkpoint
from compress.context import Context
from compress.data import source_path
from compress.errors import CompressError
from compress.eval.perplexity import perplexity
from compress.formats.tied_embedding import tie_quantized_head
from compress.fsutil import check_free_space, check_out_dir
from compress.models import compute_dtype, load_model, pick_device, storage_dtype
from compress.recipe import PerplexityConfig, Recipe, apply_overrides, load_recipe, recipe_from_dict
from compress.registry import get_pass


@dataclass
class RunResult:
    """What `run` returns: the compressed model (in memory), its tokenizer and the report."""

    model: nn.Module
    tokenizer: Any
    report: dict[str, Any]
    out: Path | None = None


def as_recipe(recipe: Recipe | str | Path | dict, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """A Recipe from a path, a dict or a Recipe, with `--set` style overrides applied."""
    if isinstance(recipe, Recipe):
        r = recipe
    elif isinstance(recipe, dict):
        r = recipe_from_dict(recipe)
    else:
        r = load_recipe(recipe)
    return apply_overrides(r, list(overrides)) if overrides else r


def versions() -> dict[str, str]:
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}


def weight_bytes(model: nn.Module, dtype: torch.dtype) -> int:
    """Bytes the model's tensors take once stored (tied tensors once, floats in `dtype`)."""
    return checkpoint.state_bytes(model, dtype)


def run(recipe: Recipe | str | Path | dict, model: str | nn.Module | None = None, *, tokenizer: Any = None,
        out: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), force: bool = False,
        device: str | torch.device | None = None, progress: bool = True) -> RunResult:
    """Run a recipe on a model; optionally evaluate before/after and save a checkpoint to `out`."""
    t_start = time.perf_counter()
    r = as_recipe(recipe, overrides)
    out_path = Path(out) if out is not None else None
    if out_path is not None:  # before any work: a refused run costs nothing
        given = model if model is not None else r.model
        inputs = tuple(Path(p) for p in (given,) if isinstance(p, (str, Path)) and Path(p).exists())
        check_out_dir(out_path, force, inputs)
    for source in _sources(r):
        source_path(source)  # a missing data file fails now, not after loading the model
    dev = pick_device(device)
    model_spec = model if model is not None else r.model
    if model_spec is None:
        raise CompressError(f"{r.source}: no model given; pass --model or set 'model:' in the recipe")
    if isinstance(model_spec, nn.Module):
        if tokenizer is None and reads_text(r):
            raise CompressError("run(model=<nn.Module>) needs tokenizer= (the recipe calibrates, distills or evaluates)")
        net, tok, name = model_spec, tokenizer, type(model_spec).__name__
    else:
        net, tok = load_model(model_spec, dev, compute_dtype(dev))
        name = str(model_spec)
    bad = non_finite(net)
    if bad:
        raise CompressError(f"model {name}: {bad} before any pass; compressing it would spread NaN into scales and "
                            f"checkpoints; fix or re-export the model")
    store = storage_dtype(net)
    needs_teacher = any(get_pass(s.name).needs_teacher for s in r.steps)
    original = copy.deepcopy(net).eval() if needs_teacher else None
    for p in (original.parameters() if original is not None else ()):
        p.requires_grad_(False)
    ctx = Context(tok, dev, r.calibration, teacher_fn=(lambda: original) if original is not None else None,
                  where=r.source, progress=progress)
    report: dict[str, Any] = {"model": name, "recipe": r.to_dict(), "device": str(dev), "versions": versions()}
    report["size"] = {"before_bytes": weight_bytes(net, store)}
    ppl_cfg = r.evaluate.perplexity if r.evaluate else None
    if ppl_cfg is not None and r.evaluate.baseline:
        report["perplexity_before"] = _ppl(net, tok, ppl_cfg, progress)
    report["passes"] = []
    for i, step in enumerate(r.steps):
        spec = get_pass(step.name)
        ctx.where = f"{r.source}: pass {step.name!r} (#{i + 1})"
        ctx.stats = {}
        t0 = time.perf_counter()
        try:
            net = spec.fn(net, step.config, ctx) or net
        except CompressError as e:
            raise in_pass(e, ctx.where) from None
        tie_quantized_head(net)
        bad = non_finite(net)
        if bad:
            raise CompressError(f"{ctx.where}: produced {bad}; nothing was saved ({nan_hint(step.name)})")
        report["passes"].append({"name": step.name, "seconds": round(time.perf_counter() - t0, 3), **ctx.stats})
        if progress:
            print(f"[{i + 1}/{len(r.steps)}] {step.name}: {report['passes'][-1]['seconds']:.1f}s", flush=True)
    checkpoint.round_to_storage(net, store)
    report["size"]["after_bytes"] = weight_bytes(net, store)
    if out_path is not None:  # the size is known now: a full disk is found before the evaluation, not after
        check_free_space(out_path, checkpoint.needed_bytes(net, store))
    if ppl_cfg is not None:
        report["perplexity_after"] = _ppl(net, tok, ppl_cfg, progress)
    report["seconds_total"] = round(time.perf_counter() - t_start, 3)
    if out_path is not None:
        checkpoint.save(net, tok, out_path, dtype=store, recipe_yaml=r.to_yaml(), report=report, force=force)
    return RunResult(net, tok, report, out_path)


def in_pass(e: CompressError, where: str) -> CompressError:
    """A pass's one-line error, prefixed with the recipe and pass when the pass did not say so itself."""
    return e if str(e).startswith(where) else type(e)(f"{where}: {e}")


NAN_HINTS = {  # what can cure NaN/inf that a pass made from finite weights (each pass's input is checked first)
    "distill": "lower distill.lr or raise warmup_steps, keep max_grad_norm > 0, and check the training data; "
               "damp plays no part in distill",
    "gptq": "raise gptq.damp or give more calibration tokens (calibration.samples / seq_len)",
    "sparsegpt": "raise sparsegpt.damp or give more calibration tokens (calibration.samples / seq_len)",
    "awq": "check the calibration data: its activations set awq's scales",
    "wanda": "check the calibration data: its activations rank wanda's weights",
    "signround": "lower signround.lr (0 = 1/iters) and check the calibration data: its layer outputs are the targets",
}


def nan_hint(pass_name: str) -> str:
    """The advice for NaN/inf made by `pass_name`, for that pass only (not a list of every pass's knobs)."""
    return NAN_HINTS.get(pass_name, f"{pass_name} made them from finite weights, which it should not: check its "
                                    f"options, or report the recipe as a bug")


def non_finite(model: nn.Module) -> str | None:
    """'tensor NAME holds N NaN/inf value(s)' for the first floating tensor that does, else None."""
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            return f"tensor {name} holds {int((~torch.isfinite(t)).sum())} NaN/inf value(s)"
    return None


def reads_text(r: Recipe) -> bool:
    """Whether the recipe needs a tokenizer: calibration data, a teacher to distill from, or an evaluation."""
    return r.needs_calibration or r.evaluate is not None or any(get_pass(s.name).needs_teacher for s in r.steps)


def _sources(r: Recipe) -> list[str]:
    out = [r.calibration.source] if r.needs_calibration else []
    if r.evaluate is not None and r.evaluate.perplexity is not None:
        out.append(r.evaluate.perplexity.source)
    return out


def _ppl(net: nn.Module, tok: Any, cfg: PerplexityConfig, progress: bool) -> dict[str, Any]:
    return perplexity(net, tok, cfg.source, cfg.seq_len, cfg.max_windows, progress)


def evaluate(model: str | nn.Module, tokenizer: Any = None, *, data: str = "wikitext2-test", seq_len: int = 2048,
             max_windows: int | None = None, device: str | torch.device | None = None, progress: bool = True) -> dict[str, Any]:
    """Perplexity of a model (path, checkpoint or module) with the standard protocol."""
    if isinstance(model, nn.Module):
        if tokenizer is None:
            raise CompressError("evaluate(model=<nn.Module>) needs tokenizer=")
        net, tok = model, tokenizer
    else:
        source_path(data)
        dev = pick_device(device)
        net, tok = load_model(model, dev, compute_dtype(dev))
    return perplexity(net, tok, data, seq_len, max_windows, progress)


def load(path: str | Path, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> nn.Module:
    """Load a compressed checkpoint written by `run(..., out=...)`."""
    return checkpoint.load(path, device=device, dtype=dtype)
