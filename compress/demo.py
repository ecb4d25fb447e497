"""The demo: fetch SmolLM2-135M, compress it with a recipe, print before/after."""
from __future__ import annotations

from pathlib import Path

from compress.errors import CompressError
from compress.models import fetch_smollm2, pick_device
from compress.report import before_after_table

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def recipe_path(name: str) -> Path:
    """A recipe by name (recipes/NAME.yaml in the checkout) or by path."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml"):
        return p
    cand = RECIPES / f"{name}.yaml"
    if not cand.is_file():
        known = ", ".join(sorted(f.stem for f in RECIPES.glob("*.yaml"))) or "none found"
        raise CompressError(f"demo: recipe {name!r} not found in {RECIPES}; known: {known}")
    return cand


def run_demo(recipe: str, out: Path, max_windows: int | None, device: str | None) -> str:
    """Run the demo and return the table to print."""
    from compress.api import run

    dev = pick_device(device)
    if max_windows is None and dev.type == "cpu":
        max_windows = 8  # a CPU scores a 2048-token window in seconds; 8 windows keep the demo to minutes
    base = fetch_smollm2()
    sets = ["evaluate.perplexity.seq_len=2048"] + ([f"evaluate.perplexity.max_windows={max_windows}"] if max_windows else [])
    res = run(recipe_path(recipe), str(base), out=out, overrides=sets, force=True, device=dev)
    return f"base: {base}\n" + before_after_table(res.report) + f"\ncheckpoint: {out}  (see `compress inspect {out}`)"
