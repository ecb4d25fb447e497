"""Human-readable renderings of reports, pass descriptions and checkpoint inspections."""
from __future__ import annotations

import dataclasses
import typing
from typing import Any

from compress.registry import list_passes
from compress.typecheck import type_name


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def before_after_table(report: dict[str, Any]) -> str:
    """Perplexity and size before/after, and the time each pass took."""
    size = report.get("size", {})
    before_ppl = report.get("perplexity_before", {}).get("perplexity")
    after_ppl = report.get("perplexity_after", {}).get("perplexity")
    after_bytes = size.get("on_disk_bytes", size.get("after_bytes"))
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else "—"  # noqa: E731
    rows = [["before", fmt(before_ppl), human_bytes(size.get("before_bytes", 0)), "—"],
            ["after", fmt(after_ppl), human_bytes(after_bytes or 0), f"{report.get('seconds_total', 0):.1f}s"]]
    if isinstance(before_ppl, float) and isinstance(after_ppl, float):
        rows.append(["change", f"{(after_ppl / before_ppl - 1) * 100:+.2f}%",
                     f"{after_bytes / size['before_bytes'] * 100:.1f}% of before", ""])
    windows = report.get("perplexity_after", {}).get("windows")
    title = f"model: {report.get('model')}" + (f"   (perplexity over {windows} windows)" if windows else "")
    passes = "  ".join(f"{p['name']} {p['seconds']:.1f}s" for p in report.get("passes", []))
    return "\n".join([title, markdown_table(["", "perplexity", "weights", "time"], rows), f"passes: {passes}"])


def describe_passes() -> dict[str, dict[str, Any]]:
    """Every pass with options, types, defaults, allowed values and help (feeds `compress passes`)."""
    out: dict[str, dict[str, Any]] = {}
    for name, spec in list_passes().items():
        hints = typing.get_type_hints(spec.config_cls)
        opts = []
        for f in dataclasses.fields(spec.config_cls):
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            opts.append({"name": f.name, "type": type_name(hints[f.name]), "default": default,
                         "help": f.metadata.get("help", ""), "choices": f.metadata.get("choices"),
                         "min": f.metadata.get("min"), "max": f.metadata.get("max")})
        out[name] = {"doc": spec.doc, "needs_calibration": spec.needs_calibration,
                     "needs_teacher": spec.needs_teacher, "options": opts}
    return out


def inspect_table(info: dict[str, Any]) -> str:
    """Per-module rows (format, tensors, bytes) and the totals."""
    rows = []
    sparse = any(m.get("sparsity") for m in info["modules"].values())  # a column only when something is pruned
    for name, m in info["modules"].items():
        tensors = ", ".join(f"{k}:{v['dtype']}{list(v['shape'])}" for k, v in m["tensors"].items())
        zeros = [f"{m['sparsity']:.1%}" if "sparsity" in m else ""] if sparse else []
        rows.append([name or "(root)", m["format"], *zeros, human_bytes(m["bytes"]), tensors])
    by_format: dict[str, int] = {}
    for m in info["modules"].values():
        key = m["format"].split(":")[0] if m["format"] != "dense" else "dense"
        by_format[key] = by_format.get(key, 0) + m["bytes"]
    totals = ", ".join(f"{k}: {human_bytes(v)}" for k, v in sorted(by_format.items()))
    return "\n".join([markdown_table(["module", "format", *(["sparsity"] if sparse else []), "bytes", "tensors"], rows),
                      f"weights file: {human_bytes(info['weights_bytes'])} ({totals}); directory total: {human_bytes(info['total_bytes'])}"])
