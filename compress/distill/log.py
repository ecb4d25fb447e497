"""The training log: one row per step, written as JSON and CSV, and a loss-curve PNG."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


def write_logs(rows: list[dict[str, Any]], folder: Path) -> dict[str, str]:
    """log.json, log.csv and loss.png in `folder`; returns their paths by kind."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "log.json").write_text(json.dumps(rows, indent=1))
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(folder / "log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    plot_loss(rows, folder / "loss.png")
    return {"json": str(folder / "log.json"), "csv": str(folder / "log.csv"), "png": str(folder / "loss.png")}


def plot_loss(rows: list[dict[str, Any]], path: Path) -> None:
    """Training loss by step, and held-out perplexity (right axis) where it was measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    train = [r for r in rows if "loss" in r]
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="loss", color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("distillation loss")
    evals = [r for r in rows if r.get("eval_ppl") is not None]
    if evals:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in evals], [r["eval_ppl"] for r in evals], "o-", color="tab:orange", label="held-out ppl")
        ax2.set_ylabel("held-out perplexity")
        ax2.set_yscale("log")
    ax.set_title("distillation")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
