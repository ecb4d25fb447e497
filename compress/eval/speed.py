"""Latency and memory of one model: prefill ms, decode tokens/s (static cache), bytes by format.

Prefill timings are medians of `repeats` runs after `warmup` runs; CPU decode rates are medians over
every timed step (one step is the unit a user waits for, and the median step shrugs off a burst of
load that moves the total of a short run by 20%), CUDA ones medians of whole runs (a sync per step
would stall the GPU's queue). Min and max are kept so the spread is visible; on
CUDA every timed region ends with a synchronize.
"""
from __future__ import annotations

import inspect
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from compress.eval.fast_decode import StaticDecoder
from compress.formats import PackedLinear


def spread(values: list[float]) -> dict[str, float]:
    """min / median / max of a list of measurements."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_runs(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Wall seconds of `repeats` calls of fn, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def prompt_ids(model: nn.Module, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """Fixed pseudo-random token ids [batch, length] (timing does not depend on which tokens)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (batch, length), generator=g).to(model_device(model))


@torch.no_grad()
def prefill_ms(model: nn.Module, length: int, warmup: int, repeats: int) -> dict[str, float]:
    """Batch-1 forward over a prompt of `length` tokens up to the first token's logits, ms (min/median/max):
    time to first token, computed as `generate` does (only the last position goes through lm_head)."""
    ids = prompt_ids(model, 1, length)
    last = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    secs = time_runs(lambda: model(input_ids=ids, use_cache=False, **last), model_device(model), warmup, repeats)
    return spread([s * 1000 for s in secs])


@torch.no_grad()
def decode_step_seconds(model: nn.Module, batch: int, prompt_len: int, new_tokens: int, warmup: int, repeats: int,
                        mode: str = "auto", dec: StaticDecoder | None = None) -> tuple[list[float], str]:
    """Wall seconds of every static-cache decode step in `repeats` runs of `new_tokens` steps, and the mode that ran
    (on CUDA each run's mean step, `new_tokens` times: the median is then the median run).

    The prompt is prefilled outside the timed region; each timed run decodes the same steps. Pass
    the same `dec` again to time more rounds without building (compiling) its step again.
    """
    dec = dec or StaticDecoder(model, prompt_len + new_tokens + 1, mode)
    ids = prompt_ids(model, batch, prompt_len)
    first = dec.prefill(ids)
    warm = warmup if dec.mode == "eager" or dec.built else max(warmup, 1)  # a compiled step is built on its first run
    for _ in range(warm):
        dec.decode(first, prompt_len, new_tokens)
    device = model_device(model)
    if device.type == "cuda":  # a sync per step would stall the queue the GPU decodes from: whole runs, per step
        runs = time_runs(lambda: dec.decode(first, prompt_len, new_tokens), device, 0, repeats)
        return [r / new_tokens for r in runs for _ in range(new_tokens)], dec.mode
    steps: list[float] = []
    for _ in range(repeats):
        dec.decode(first, prompt_len, new_tokens, steps)
    return steps, dec.mode


def tokens_per_s(batch: int, step_seconds: list[float], mode: str) -> dict[str, Any]:
    """Spread of tokens/s over single steps (all rows together): the median is the median step's rate."""
    return {**spread([batch / s for s in step_seconds]), "mode": mode, "steps": len(step_seconds)}


def decode_tokens_per_s(model: nn.Module, batch: int, prompt_len: int, new_tokens: int, warmup: int, repeats: int,
                        mode: str = "auto", dec: StaticDecoder | None = None) -> dict[str, Any]:
    """Greedy decode tokens/s of the median step (min/median/max over every timed step)."""
    return tokens_per_s(batch, *decode_step_seconds(model, batch, prompt_len, new_tokens, warmup, repeats, mode, dec))


def memory_bytes(model: nn.Module) -> int:
    """Bytes of the model's tensors in memory (shared tensors once): shows packing is real in memory."""
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen or t.numel() == 0:
            continue
        seen.add(ptr)
        total += t.untyped_storage().nbytes()
    if any(t.is_cuda for t in model.buffers()):
        from compress.formats.int4_layout import cache_bytes

        total += cache_bytes()  # the shared inverse of tinygemm's CUDA layout, once built (prefill, saving)
    return total


def bytes_by_format(model: nn.Module) -> dict[str, int]:
    """In-memory weight bytes per storage format: 'int4/g64', 'int8/g-1', …, and 'dense' for the rest."""
    out: dict[str, int] = {}
    for m in model.modules():
        if isinstance(m, PackedLinear):
            spec = m.spec()
            key = m.format + (f"{spec['bits']}/g{spec['group_size']}" if "bits" in spec else "")
            for t in m.buffers(recurse=False):
                out[key] = out.get(key, 0) + t.untyped_storage().nbytes()
    out["dense"] = memory_bytes(model) - sum(out.values())
    return out


def reset_peak(device: torch.device) -> None:
    """Start a peak-memory window: the CUDA allocator's peak, or on Linux CPUs the process's peak RSS."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux ≥ 4.0)
    except OSError:
        pass


def peak_memory(device: torch.device) -> int | None:
    """Peak bytes since `reset_peak`: allocated on the GPU, or resident (VmHWM) on a Linux CPU; None elsewhere."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
