"""`compress bench`: perplexity, prefill, decode, memory and size of several models, side by side.

One process, one run: every row is measured under the same settings and environment, and carries
its ratios to the first row (the base), which are what the regression gate compares — absolute
times on shared machines are noise, ratios measured in the same run are not (much).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import platform
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from compress.errors import CompressError
from compress.eval import speed
from compress.eval.bnb import footprint
from compress.eval.entries import Skipped, check_entries, iter_entries
from compress.eval.fast_decode import MODES, resolve_mode

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class BenchSettings:
    """Everything that decides what a bench run measures; stored in its JSON so a rerun matches it."""

    data: str = "wikitext2-test"
    seq_len: int = 2048
    max_windows: int | None = None
    prefill: tuple[int, ...] = (512, 2048)
    batches: tuple[int, ...] | None = None  # None: (1, 8) on CUDA, (1,) on CPU
    prompt_len: int = 32
    new_tokens: int | None = None  # None: 128 on CUDA, 32 on CPU
    warmup: int | None = None  # None: 3 on CUDA (compiles, graph capture), 1 on CPU
    repeats: int | None = None  # None: 10 on CUDA, 3 on CPU
    decode_mode: str = "auto"
    interleave: bool = False  # time all models round-robin (all in memory at once; eager decode only)
    threads: int | None = None  # CPU threads (None: torch's default); 1 keeps timings stable on a busy CPU
    skip_perplexity: bool = field(default=False)

    def resolved(self, device: torch.device) -> "BenchSettings":
        """Fill the device-dependent defaults and check values (a bad one is a user error)."""
        cuda = device.type == "cuda"
        s = dataclasses.replace(
            self, batches=self.batches or ((1, 8) if cuda else (1,)), new_tokens=(128 if cuda else 32) if self.new_tokens is None else self.new_tokens,
            repeats=(10 if cuda else 3) if self.repeats is None else self.repeats,
            warmup=(3 if cuda else 1) if self.warmup is None else self.warmup)
        resolve_mode(s.decode_mode, device)  # checked now; `auto` stays, so a failed compile can fall back to eager
        for name in ("prefill", "batches"):
            if not getattr(s, name) or any(v < 1 for v in getattr(s, name)):
                raise CompressError(f"bench: {name} must be positive integers, got {getattr(s, name)}")
        if s.threads is not None and s.threads < 1:
            raise CompressError(f"bench: threads must be ≥ 1, got {s.threads}")
        if s.warmup < 0:
            raise CompressError(f"bench: warmup must be ≥ 0, got {s.warmup}")
        for name in ("seq_len", "prompt_len", "new_tokens", "repeats"):
            if getattr(s, name) < 1:
                raise CompressError(f"bench: {name} must be ≥ 1, got {getattr(s, name)}")
        return s

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "settings") -> "BenchSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise CompressError(f"{where}: unknown bench setting(s) {unknown}; allowed: {', '.join(sorted(known))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    """'512,2048' → (512, 2048); anything else is a one-line error naming the option."""
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        vals = ()
    if not vals or any(v < 1 for v in vals):
        raise CompressError(f"bench: {option} {text!r}: expected positive integers separated by commas, e.g. 512,2048")
    return vals


def environment(device: torch.device, s: BenchSettings) -> dict[str, Any]:
    """Where and how the numbers were taken."""
    import transformers

    from compress.models import cpu_has_bf16

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
    from compress.kernels import native

    # which kernels ran: see check_same_setup; gemv_q8: the bit widths whose decode GEMVs round x to int8 blocks
    cpu = {"cpu_bf16": cpu_has_bf16(), "gemv_q8": sorted(native.GEMV_Q8)} if device.type == "cpu" else {}
    return {"device": str(device), "device_name": name, "label": "CUDA" if device.type == "cuda" else "CPU", **cpu,
            "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "warmup": s.warmup, "repeats": s.repeats,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def measure(model: nn.Module, tokenizer: Any, s: BenchSettings, progress: bool = False, timings: bool = True) -> dict[str, Any]:
    """One row's measurements (perplexity only when there is a tokenizer and it is not skipped;
    latency unless `timings` is False, when the caller times the models interleaved)."""
    from compress.eval.perplexity import perplexity

    from compress.eval.perplexity import check_positions

    dev = speed.model_device(model)
    if timings:
        check_positions(model, max(s.prefill), "bench --prefill")
        check_positions(model, s.prompt_len + s.new_tokens + 1, "bench --prompt-len + --new-tokens")
    row: dict[str, Any] = {"dtype": str(next(model.parameters()).dtype).removeprefix("torch."), "perplexity": None,
                           "perplexity_windows": None}
    if tokenizer is not None and not s.skip_perplexity:
        ppl = perplexity(model, tokenizer, s.data, s.seq_len, s.max_windows, progress)
        row.update(perplexity=ppl["perplexity"], perplexity_windows=ppl["windows"])
    speed.reset_peak(dev)  # the peak of the timed phases (prefill, decode), not of the perplexity pass
    row["prefill_ms"] = {str(n): speed.prefill_ms(model, n, s.warmup, s.repeats) for n in s.prefill} if timings else {}
    row["decode_tokens_per_s"] = {}
    for b in s.batches if timings else ():
        r = speed.decode_tokens_per_s(model, b, s.prompt_len, s.new_tokens, s.warmup, s.repeats, s.decode_mode)
        row["decode_mode"] = r.pop("mode")
        row["decode_tokens_per_s"][str(b)] = r
    row["peak_memory_bytes"] = speed.peak_memory(dev) if timings else None
    side, bnb_formats = footprint(model)  # bitsandbytes keeps its scales outside parameters and buffers
    row["memory_bytes"] = speed.memory_bytes(model) + side
    row["weight_bytes_by_format"] = ({**bnb_formats, "dense": row["memory_bytes"] - sum(bnb_formats.values())}
                                     if bnb_formats else speed.bytes_by_format(model))
    fallback_note(row, s)
    return row


def fallback_note(row: dict[str, Any], s: BenchSettings) -> None:
    """Say so in the row when `auto` could not compile the decode step and timed it eagerly (a bnb layer, say)."""
    if s.decode_mode == "auto" and row.get("decode_mode") == "eager":
        row["note"] = "compiled decode failed (see the warning); decode timed eagerly"


def skipped_row(spec: str, reason: str) -> dict[str, Any]:
    """A row for an entry that cannot run here: its reason, and no metrics (ratios and the gate ignore it)."""
    return {"name": spec, "kind": "bnb" if spec.startswith("bnb:") else "model", "skipped": reason, "random_weights": False,
            "dtype": None, "size_bytes": None, "perplexity": None, "perplexity_windows": None, "prefill_ms": {},
            "decode_tokens_per_s": {}, "peak_memory_bytes": None, "memory_bytes": None, "weight_bytes_by_format": {}}


def flat_metrics(row: dict[str, Any]) -> dict[str, float | None]:
    """Scalar view of a row: 'perplexity', 'size_bytes', 'memory_bytes', 'prefill_ms:512', 'decode_tokens_per_s:1' (medians)."""
    out: dict[str, float | None] = {k: row.get(k) for k in ("perplexity", "size_bytes", "memory_bytes", "peak_memory_bytes")}
    for key in ("prefill_ms", "decode_tokens_per_s"):
        for n, v in (row.get(key) or {}).items():
            out[f"{key}:{n}"] = v["median"] if isinstance(v, dict) else v
    return out


def ratios(row: dict[str, Any], base: dict[str, Any]) -> dict[str, float]:
    """Each metric divided by the base's (value / base value), where both exist and the base is non-zero."""
    mine, ref = flat_metrics(row), flat_metrics(base)
    return {k: v / ref[k] for k, v in mine.items() if v is not None and ref.get(k) not in (None, 0)}


def add_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every row its ratios to the first row, in place; returns the rows."""
    for r in rows:
        r["ratios"] = ratios(r, rows[0])
    return rows


def benchmark(entries: list[str], settings: BenchSettings | None = None, device: str | torch.device | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Measure every entry (model, checkpoint, recipe on the base, or random:SHAPE); the first is the base.

    Returns {"results": [row, ...], "env": {...}, "settings": {...}, "entries": [...]}.
    """
    from compress.data import source_path
    from compress.models import pick_device

    check_entries(list(entries))
    dev = pick_device(device)
    s = (settings or BenchSettings()).resolved(dev)
    if not s.skip_perplexity:
        source_path(s.data)  # a missing data file fails before any model loads
    threads = torch.get_num_threads()
    if s.threads is not None:
        torch.set_num_threads(s.threads)
    try:
        rows = _measure_all(list(entries), s, dev, progress)
        env = {**environment(dev, s), "dtype": ", ".join(sorted({r["dtype"] for r in rows if r["dtype"]})),  # each row says its own
               "decode_mode": ", ".join(sorted({r["decode_mode"] for r in rows if r.get("decode_mode")})) or s.decode_mode}
    finally:
        torch.set_num_threads(threads)
    return {"schema": SCHEMA_VERSION, "results": add_ratios(rows), "env": env, "settings": s.to_dict(),
            "entries": list(entries)}


def _measure_all(entries: list[str], s: BenchSettings, dev: torch.device, progress: bool) -> list[dict[str, Any]]:
    """One row per entry, each model loaded in turn and released before the next (or all kept, to interleave)."""
    from compress.eval.interleave import timed_rounds

    rows, kept, timed_rows = [], [], []
    for spec, loaded in iter_entries(entries, dev, progress):
        if isinstance(loaded, Skipped):
            print(f"bench: skipping {spec}: {loaded.reason}", file=sys.stderr, flush=True)  # even with --quiet
            rows.append(skipped_row(spec, loaded.reason))
            continue
        if progress:
            print(f"bench: measuring {spec} …", file=sys.stderr, flush=True)
        row = {"name": spec, "kind": loaded.kind, "random_weights": loaded.random_weights, "size_bytes": loaded.size_bytes,
               **loaded.info}
        row.update(measure(loaded.model, loaded.tokenizer, s, progress, timings=not s.interleave))
        rows.append(row)
        if s.interleave:
            kept.append(loaded.model)
            timed_rows.append(row)
        del loaded
        if not s.interleave:
            torch._dynamo.reset()  # compiled steps hold the previous model alive
    if s.interleave:
        if progress:
            print(f"bench: timing {len(kept)} models interleaved, {s.repeats} rounds …", file=sys.stderr, flush=True)
        with torch._dynamo.config.patch(cache_size_limit=max(8, 2 * len(kept) * len(s.batches))):  # one step per model
            timed = timed_rounds(kept, s.prefill, s.batches, s.prompt_len, s.new_tokens, s.warmup, s.repeats, s.decode_mode)
        for row, t in zip(timed_rows, timed):
            row.update(t, peak_memory_bytes=None)  # every model is resident: no per-model peak
            fallback_note(row, s)
    return rows


__all__ = ["MODES", "BenchSettings", "add_ratios", "benchmark", "flat_metrics", "measure", "parse_ints", "ratios"]
