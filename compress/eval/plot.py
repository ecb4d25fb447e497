"""Perplexity vs decode tokens/s: the accuracy/latency trade-off of a bench run at a glance."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.errors import CompressError


def plot_tradeoff(report: dict[str, Any], path: str | Path, batch: str = "1") -> Path:
    """Write a PNG scatter (x: decode tok/s at `batch`, y: perplexity), one labelled point per model, base starred."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    pts = [(r["name"], r["decode_tokens_per_s"][batch]["median"], r["perplexity"], i == 0)
           for i, r in enumerate(report["results"])
           if r.get("perplexity") is not None and batch in r.get("decode_tokens_per_s", {})]
    if not pts:
        raise CompressError(f"plot: no row has both a perplexity and a batch-{batch} decode speed (random-weight rows have no perplexity)")
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, x, y, is_base in pts:
        ax.scatter([x], [y], s=160 if is_base else 60, marker="*" if is_base else "o",
                   color="tab:red" if is_base else "tab:blue", zorder=3)
        ax.annotate(("base: " if is_base else "") + Path(name).name, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    env = report.get("env", {})
    ax.set_xlabel(f"decode tokens/s (batch {batch}, {env.get('decode_mode', '?')})  → faster")
    ax.set_ylabel("perplexity  ↓ better")
    ax.set_title(f"accuracy vs latency — {env.get('device_name', '?')}", fontsize=9)
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
