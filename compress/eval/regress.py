"""`compress regress`: re-run a baseline's entries and fail on regressions beyond per-metric tolerances.

Perplexity is compared as a relative increase over the baseline's own value. Latency, size and
memory are compared as ratios to the base (first entry) measured in the same run, because
absolute times on shared machines move with the neighbours, while ratios mostly do not.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from compress.errors import CompressError

# perplexity: max relative increase; latency: max relative worsening of a ratio to the base;
# size: max relative growth of the size/memory ratio to the base.
# latency 0.2: a 25% decode slowdown (ratio × 0.75) fails; interleaved CPU ratios moved < 10% between clean runs.
DEFAULT_TOLERANCES: dict[str, float] = {"perplexity": 0.02, "latency": 0.2, "size": 0.01}


@dataclass(frozen=True)
class Check:
    """One metric of one entry: baseline vs current, the limit, and the verdict."""

    entry: str
    metric: str
    baseline: float
    current: float
    limit: float
    higher_is_worse: bool

    @property
    def ok(self) -> bool:
        return self.current <= self.limit if self.higher_is_worse else self.current >= self.limit

    @property
    def change(self) -> float:
        """Relative change of current vs baseline (+0.10 = 10% higher)."""
        return self.current / self.baseline - 1 if self.baseline else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "change": self.change}


def load_report(path: str | Path, what: str = "baseline") -> dict[str, Any]:
    """A bench JSON (baseline or results) with the keys the gate needs, or a one-line error."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CompressError(f"{what} {path}: file not found (write one with `compress bench ... --save-baseline {path}`)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise CompressError(f"{what} {path}: not readable JSON ({e.__class__.__name__}: {e})") from None
    missing = [k for k in ("results", "entries", "settings", "env") if k not in data] if isinstance(data, dict) else ["results"]
    if missing or not data["results"]:
        raise CompressError(f"{what} {path}: not a bench report (missing {', '.join(missing) or 'results'}); expected the JSON of `compress bench`")
    shapes = {"results": list, "entries": list, "settings": dict, "env": dict, "tolerances": dict}
    for key, kind in shapes.items():
        if key in data and not isinstance(data[key], kind):
            raise CompressError(f"{what} {path}: field {key!r} must be a {kind.__name__}, got {type(data[key]).__name__}")
    for i, row in enumerate(data["results"]):
        if not isinstance(row, dict) or not isinstance(row.get("name"), str) or not isinstance(row.get("ratios", {}), dict):
            raise CompressError(f"{what} {path}: results[{i}] must be a row with a 'name' and a 'ratios' mapping")
        bad = [k for k, v in row.get("ratios", {}).items() if isinstance(v, bool) or not isinstance(v, (int, float))]
        if bad or (row.get("perplexity") is not None and not isinstance(row["perplexity"], (int, float))):
            raise CompressError(f"{what} {path}: results[{i}] ({row['name']}): non-numeric {', '.join(bad) or 'perplexity'}")
    if not all(isinstance(e, str) for e in data["entries"]):
        raise CompressError(f"{what} {path}: field 'entries' must be a list of model/recipe names")
    return data


def locate_entries(entries: list[str], baseline_path: Path) -> list[str]:
    """Entries as the baseline names them, relative to the working directory; one not found there is looked up
    beside the baseline and in its parent folders (a baseline in benchmarks/ names recipes/ of the repo root)."""
    from compress.eval.entries import split_dtype

    out = []
    for e in entries:
        name = split_dtype(e)[0]
        suffix = e[len(name):]  # '@bf16' or ''
        p = Path(name)
        if not p.is_absolute() and not p.exists() and (p.suffix or "/" in name):
            found = next((root / p for root in list(Path(baseline_path).resolve().parents)[:4] if (root / p).exists()), None)
            name = str(found) if found is not None else name
        out.append(name + suffix)
    return out


def tolerances_of(baseline: dict[str, Any], overrides: dict[str, float | None] | None = None) -> dict[str, float]:
    """Defaults, then the baseline's own tolerances, then explicit overrides (None = keep)."""
    tol = {**DEFAULT_TOLERANCES, **baseline.get("tolerances", {})}
    for k, v in (overrides or {}).items():
        if v is not None:
            tol[k] = v
    unknown = sorted(set(tol) - set(DEFAULT_TOLERANCES))
    if unknown:
        raise CompressError(f"tolerances: unknown key(s) {unknown}; allowed: {', '.join(DEFAULT_TOLERANCES)}")
    for k, v in tol.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise CompressError(f"tolerances: {k} = {v!r}; allowed: a finite number ≥ 0 (e.g. 0.2 = 20%)")
    return tol


def is_base_in_other_dtype(row: dict[str, Any], base: dict[str, Any]) -> bool:
    """The base model itself under another `@dtype` (`smollm2@fp32` beside `smollm2@bf16`), told by the entry
    names: a copy of the base, a pruned model or a recipe is another entry and stays speed-gated."""
    from compress.eval.entries import split_dtype

    (name, dtype), (base_name, base_dtype) = split_dtype(row["name"]), split_dtype(base["name"])
    return row.get("kind", "model") == "model" and name == base_name and dtype != base_dtype


def _row_checks(name: str, is_base: bool, old: dict[str, Any], new: dict[str, Any], tol: dict[str, float],
                gate_peak: bool = True, base: dict[str, Any] | None = None) -> list[Check]:
    checks = []
    po, pn = old.get("perplexity"), new.get("perplexity")
    if po is not None and pn is not None:
        checks.append(Check(name, "perplexity", po, pn, po * (1 + tol["perplexity"]), True))
    if is_base:
        return checks  # the base's own ratios are 1 by definition
    # the base in another dtype: its speed ratio measures the BLAS library's fp32 vs bf16 on this CPU
    # (fp32 prefill ÷ bf16 moved 1.65 → 2.41 between two CI machines), not this project's code: not gated
    timed = base is None or not is_base_in_other_dtype(new, base)
    ro, rn = old.get("ratios", {}), new.get("ratios", {})
    for key in sorted(set(ro) & set(rn)):
        if key.startswith(LATENCY) and not timed:
            continue
        if key.startswith("decode_tokens_per_s:"):
            checks.append(Check(name, f"{key} ÷ base", ro[key], rn[key], ro[key] * (1 - tol["latency"]), False))
        elif key.startswith("prefill_ms:"):
            checks.append(Check(name, f"{key} ÷ base", ro[key], rn[key], ro[key] * (1 + tol["latency"]), True))
        elif key in ("size_bytes", "memory_bytes") or (key == "peak_memory_bytes" and gate_peak):
            checks.append(Check(name, f"{key} ÷ base", ro[key], rn[key], ro[key] * (1 + tol["size"]), True))
    return checks


def compare(baseline: dict[str, Any], current: dict[str, Any], tol: dict[str, float]) -> list[Check]:
    """Every check of `current` against `baseline`, matched by entry name; a missing entry is an error."""
    now = {r["name"]: r for r in current["results"]}
    checks: list[Check] = []
    for i, old in enumerate(baseline["results"]):
        if old["name"] not in now:
            raise CompressError(f"regress: entry {old['name']!r} of the baseline is missing from the current results")
        # the CUDA allocator's peak is exact; a CPU process's resident peak moves by a few % between runs: shown, not gated
        checks += _row_checks(old["name"], i == 0, old, now[old["name"]], tol, baseline["env"].get("label") == "CUDA",
                              now.get(baseline["results"][0]["name"]))
    return checks


MEASURED_SETTINGS = ("data", "seq_len", "max_windows", "prefill", "batches", "prompt_len", "new_tokens", "decode_mode", "threads")


def check_same_setup(baseline: dict[str, Any], current: dict[str, Any]) -> None:
    """Ratios are only comparable on the same kind of device with the same base, measured the same way (a
    `--current` report of another prefill length or thread count would be compared ratio by ratio, wrongly)."""
    old, new = baseline.get("settings", {}), current.get("settings", {})
    differ = [f"{k} {old[k]!r} vs {new[k]!r}" for k in MEASURED_SETTINGS if k in old and k in new and old[k] != new[k]]
    if differ:
        raise CompressError(f"regress: the current results were measured with other settings than the baseline "
                            f"({'; '.join(differ)}); re-run bench with the baseline's settings, or omit --current")
    if baseline["env"].get("label") != current["env"].get("label"):
        raise CompressError(f"regress: baseline was measured on {baseline['env'].get('label')}, the current run on "
                            f"{current['env'].get('label')}; compare like with like (--device)")
    bf16 = [r["env"].get("cpu_bf16") for r in (baseline, current)]
    if None not in bf16 and bf16[0] != bf16[1]:
        has = {True: "with", False: "without"}
        raise CompressError(f"regress: baseline was measured on a CPU {has[bf16[0]]} bf16 hardware, this one is "
                            f"{has[bf16[1]]} (other kernels and compute dtype: ratios do not compare); use "
                            f"{cpu_baseline(bf16[1])}")
    if baseline["results"][0]["name"] != current["results"][0]["name"]:
        raise CompressError(f"regress: the base differs ({baseline['results'][0]['name']!r} vs {current['results'][0]['name']!r})")


def cpu_baseline(bf16: bool) -> str:
    """The CI gate's baseline for a CPU with or without bf16 hardware (scripts/ci_gate.sh picks it)."""
    return "benchmarks/baseline-cpu.json" if bf16 else "benchmarks/baseline-cpu-avx2.json"


def regress_table(checks: list[Check]) -> str:
    """Pass/fail table, worst first within each verdict, and a summary line."""
    from compress.report import markdown_table

    rows = [[c.entry, c.metric, f"{c.baseline:.4g}", f"{c.current:.4g}", f"{c.change * 100:+.1f}%",
             ("≤ " if c.higher_is_worse else "≥ ") + f"{c.limit:.4g}", "pass" if c.ok else "FAIL"]
            for c in sorted(checks, key=lambda c: c.ok)]
    failed = sum(not c.ok for c in checks)
    summary = f"{len(checks) - failed}/{len(checks)} checks passed" + (f"; {failed} REGRESSION(S)" if failed else "")
    return markdown_table(["entry", "metric", "baseline", "current", "change", "limit", "verdict"], rows) + "\n" + summary


def save_baseline(report: dict[str, Any], path: str | Path, tolerances: dict[str, float] | None = None) -> Path:
    """Write a bench report as a baseline, with the tolerances the gate will apply."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**report, "tolerances": {**DEFAULT_TOLERANCES, **(tolerances or {})}}, indent=1))
    return path


def regress(baseline_path: str | Path, current_path: str | Path | None = None, device: str | None = None,
            tolerances: dict[str, float | None] | None = None, progress: bool = True,
            confirm: int = 1, reference: str | None = None) -> tuple[list[Check], dict[str, Any]]:
    """Re-run the baseline's entries with its settings (or read `current_path`) and compare.

    With `reference` (a commit), latency is gated A/B instead of by the stored ratios: every entry is
    timed under that commit's code and the current code in one run (`ab.ab_checks`); perplexity, sizes
    and memory are still compared with the baseline's numbers.

    The device defaults to the baseline's kind (cpu for a CPU baseline), so ratios stay comparable.
    A latency check that fails is timed again up to `confirm` times (perplexity, sizes and memory
    are deterministic and not re-run) and the best ratio of the runs is gated: a real slowdown
    fails every run, a burst of a neighbour's load on a shared machine rarely hits two.
    """
    from compress.eval.bench import BenchSettings, benchmark
    from compress.models import pick_device

    baseline = load_report(baseline_path)
    tol = tolerances_of(baseline, tolerances)
    if current_path is not None and reference is not None:
        raise CompressError("regress: --reference times the current code itself; it cannot gate a --current report")
    if current_path is not None:
        current = load_report(current_path, "results")
        rerun = None
    else:
        settings = BenchSettings.from_dict(baseline["settings"], f"baseline {baseline_path}")
        label = baseline["env"].get("label")
        dev = pick_device(device or ("cuda" if label == "CUDA" else "cpu"))
        if dev.type.upper() != label:  # fail before minutes of measuring, not after
            raise CompressError(f"regress: baseline was measured on {label}, --device {device!r} is not; compare like with like")
        if reference is not None:
            from compress.eval.ab import resolve_commit

            if dev.type != "cpu":
                raise CompressError(f"regress --reference: A/B timing runs on CPU only (this baseline is {label}); "
                                    f"omit --reference to gate latency by the stored ratios")
            resolve_commit(reference)  # an unknown commit fails now, not after minutes of measuring
        entries = locate_entries(baseline["entries"], Path(baseline_path))

        def rerun(s: BenchSettings) -> dict[str, Any]:
            report = benchmark(entries, s, dev, progress)
            report["entries"] = baseline["entries"]  # compared by the baseline's names
            for row, name in zip(report["results"], baseline["entries"]):
                row["name"] = name
            return report

        current = rerun(settings)
    check_same_setup(baseline, current)
    checks = compare(baseline, current, tol)
    if not checks:
        raise CompressError(f"regress: nothing to compare between {baseline_path} and the current run (no metric "
                            f"present in both); a gate that checks nothing must not pass")
    if reference is not None and rerun is not None:
        return _with_ab(baseline, checks, current, settings, reference, tol["latency"], confirm, progress), current
    for attempt in range(confirm if rerun is not None else 0):
        failed = [c for c in checks if not c.ok]
        if not failed or any(not c.metric.startswith(LATENCY) for c in failed):
            break  # nothing to confirm, or a deterministic metric failed: more timing cannot change the verdict
        slow = ", ".join(f"{c.entry} {c.metric} {c.current:.4g} (limit {c.limit:.4g})" for c in failed)
        print(f"regress: {slow}; timing again to confirm ({attempt + 1}/{confirm}) …", file=sys.stderr, flush=True)
        keep_best_latency(current, rerun(replace(settings, skip_perplexity=True)))
        checks = compare(baseline, current, tol)
    return checks, current


LATENCY = ("decode_tokens_per_s:", "prefill_ms:")


def _with_ab(baseline: dict[str, Any], checks: list[Check], current: dict[str, Any], settings: Any, reference: str,
             tol: float, confirm: int, progress: bool) -> list[Check]:
    """The baseline's non-latency checks plus A/B latency checks against `reference` (batch-1 decode, prefill)."""
    import torch

    from compress.eval.ab import ab_checks

    s = settings.resolved(torch.device("cpu"))
    cfg = {"threads": s.threads or torch.get_num_threads(), "prompt_len": s.prompt_len, "new_tokens": s.new_tokens,
           "prefill": list(s.prefill), "mode": s.decode_mode}
    ab, current["ab"] = ab_checks(baseline["entries"], cfg, reference, tol, confirm, repeats=s.repeats, progress=progress)
    return [c for c in checks if not c.metric.startswith(LATENCY)] + ab


def keep_best_latency(current: dict[str, Any], again: dict[str, Any]) -> None:
    """Per row, the better latency ratio of two runs (higher tokens/s, lower ms), in place; counts the runs."""
    now = {r["name"]: r for r in again["results"]}
    for row in current["results"]:
        new = now.get(row["name"], {}).get("ratios", {})
        ratios = row.setdefault("ratios", {})
        for key, v in new.items():
            if key in ratios and key.startswith("decode_tokens_per_s:"):
                ratios[key] = max(ratios[key], v)
            elif key in ratios and key.startswith("prefill_ms:"):
                ratios[key] = min(ratios[key], v)
        row["latency_runs"] = row.get("latency_runs", 1) + 1


__all__ = ["DEFAULT_TOLERANCES", "Check", "check_same_setup", "compare", "cpu_baseline", "load_report", "regress",
           "regress_table", "save_baseline", "tolerances_of"]
