"""Thin typer front end: parse, call the core, print. User mistakes exit 2 with one line on stderr."""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from compress.errors import CompressError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compress a language model with a recipe of passes (quantize, prune, distill), and prove it.")


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn CompressError into `error: …` on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CompressError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None

    return wrapper


@app.command()
@user_errors
def run(
    recipe: Path = typer.Argument(..., help="YAML recipe: an ordered list of passes (see `compress passes`)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model: local HF dir, .gguf file, compress checkpoint, hub id, or 'smollm2'. Overrides the recipe's model."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the compressed checkpoint here (atomically)."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe value, e.g. --set rtn.bits=4 (repeatable)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out directory."),
    device: Optional[str] = typer.Option(None, help="cuda or cpu (default: cuda when available)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Run RECIPE on a model; print the report, and save the checkpoint with --out."""
    from compress.api import run as run_recipe
    from compress.report import before_after_table

    res = run_recipe(recipe, model, out=out, overrides=set_, force=force, device=device, progress=not quiet)
    typer.echo(before_after_table(res.report))
    if res.out is not None:
        typer.echo(f"saved {res.out}")


@app.command("eval")
@user_errors
def eval_(
    model: str = typer.Argument(..., help="Model or checkpoint directory (or 'smollm2')."),
    data: str = typer.Option("wikitext2-test", help="Text: wikitext2-test, wikitext2-valid, a file path, or hf:NAME[:CONFIG[:SPLIT]]."),
    seq_len: int = typer.Option(2048, min=8, help="Tokens per window."),
    max_windows: Optional[int] = typer.Option(None, min=1, help="Score only the first N windows (quick runs)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    device: Optional[str] = typer.Option(None, help="cuda or cpu."),
) -> None:
    """Perplexity with the standard protocol (whole text tokenized once, non-overlapping windows)."""
    from compress.api import evaluate

    res = evaluate(model, data=data, seq_len=seq_len, max_windows=max_windows, device=device, progress=not as_json)
    typer.echo(json.dumps(res) if as_json else f"perplexity {res['perplexity']:.4f} ({res['windows']} windows of {seq_len}, {res['tokens']} tokens)")


@app.command()
@user_errors
def passes(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Every registered pass with its options, types, defaults and help."""
    from compress.report import describe_passes

    info = describe_passes()
    if as_json:
        typer.echo(json.dumps(info, indent=1, default=str))
        return
    for name, p in info.items():
        needs = ", ".join(k for k in ("needs_calibration", "needs_teacher") if p[k])
        typer.echo(f"{name}: {p['doc']}" + (f"  [{needs}]" if needs else ""))
        for o in p["options"]:
            allowed = f" (allowed: {', '.join(map(repr, o['choices']))})" if o["choices"] else ""
            rng = f" (range: {o['min']}..{o['max']})" if o["min"] is not None or o["max"] is not None else ""
            typer.echo(f"    {o['name']}: {o['type']} = {o['default']!r}{allowed}{rng}  — {o['help']}")


@app.command()
@user_errors
def inspect(
    path: Path = typer.Argument(..., help="Checkpoint directory."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Per-module format and bytes on disk, and the checkpoint's total size."""
    from compress.checkpoint import inspect as inspect_ckpt
    from compress.report import inspect_table

    info = inspect_ckpt(path)
    typer.echo(json.dumps(info, indent=1) if as_json else inspect_table(info))


@app.command()
@user_errors
def fetch(name: str = typer.Argument(..., help="Model to fetch: smollm2.")) -> None:
    """Fetch a demo model into the cache (converted once to bf16 safetensors); prints its path last."""
    from compress.models import ALIASES, fetch_smollm2

    if name.lower() not in ALIASES:
        raise CompressError(f"fetch: unknown model {name!r}; allowed: {', '.join(sorted(ALIASES))}")
    typer.echo(str(fetch_smollm2()))


@app.command()
@user_errors
def demo(
    recipe: str = typer.Option("demo", help="Recipe name in recipes/ or a path."),
    out: Path = typer.Option(Path("demo-out"), help="Where the compressed checkpoint goes (replaced)."),
    max_windows: Optional[int] = typer.Option(None, min=1, help="Perplexity windows (default: all on GPU, 8 on CPU)."),
    device: Optional[str] = typer.Option(None, help="cuda or cpu."),
) -> None:
    """Fetch SmolLM2-135M, compress it with the demo recipe, print a before/after table."""
    from compress.demo import run_demo

    typer.echo(run_demo(recipe, out, max_windows, device))


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    sys.exit(main())
