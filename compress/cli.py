"""Thin typer front end: parse, call the core, print. Every failure is one `error: …` line on stderr.

Exit codes: 0 success; 1 an environment fault (disk full, I/O error) or a regression found by `regress`;
2 a mistake in the input (recipe, option, path, damaged file), typer's usage errors included.
"""
from __future__ import annotations

import functools
import json
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Sequence

import typer
from typer.core import TyperGroup

from compress.errors import CompressError, os_fault

EXIT_CODES = ("Exit codes: 0 success; 1 an environment fault (disk full, I/O error) or a regression found by "
              "`regress`; 2 a mistake in the input. Errors are one `error: ...` line on stderr.")


def one_line(msg: str) -> str:
    """Join a message's lines: whatever raised it, the user sees exactly one line."""
    return " ".join(part.strip() for part in str(msg).splitlines() if part.strip())


def fail(msg: str, code: int) -> NoReturn:
    typer.echo(f"error: {one_line(msg)}", err=True)
    raise typer.Exit(code)


def _click_errors() -> tuple[type[Exception], type[Exception] | None]:
    """(ClickException, NoArgsIsHelpError) from the click typer runs on (vendored since typer 0.2x)."""
    try:
        from typer._click import exceptions as ex
    except ImportError:  # older typer: the click package
        from click import exceptions as ex  # type: ignore[no-redef]
    return ex.ClickException, getattr(ex, "NoArgsIsHelpError", None)


def usage_line(e: Exception) -> str:
    """A click usage error (missing argument, unknown option, bad int) as one line naming the command."""
    ctx = getattr(e, "ctx", None)
    cmd = ctx.command_path if ctx is not None else "compress"
    return f"error: {cmd}: {one_line(e.format_message())} (see `{cmd} --help`)"  # type: ignore[attr-defined]


class OneLineErrors(TyperGroup):
    """typer's group with usage errors as one `error:` line and their exit code (2), not a multi-line box."""

    def main(self, args: Optional[Sequence[str]] = None, prog_name: Optional[str] = None,
             complete_var: Optional[str] = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        click_error, help_error = _click_errors()
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_error as e:
            if help_error is not None and isinstance(e, help_error):
                e.show()  # `compress` alone: the help, as before
            else:
                typer.echo(usage_line(e), err=True)
            sys.exit(e.exit_code)  # type: ignore[attr-defined]
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(name="compress", cls=OneLineErrors, add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False,
                  help="Compress a language model with a recipe of passes (quantize, prune, distill), and prove it.",
                  epilog=EXIT_CODES)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """CompressError → one line, its exit code (2 a user mistake, 1 an environment fault); an OSError the
    core did not name (a disk that failed, a file that vanished) → one line, exit 1, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CompressError as e:
            fail(str(e), e.exit_code)
        except BrokenPipeError:
            raise  # `compress passes | head`: typer exits quietly
        except OSError as e:
            fail(f"{os_fault(e)} (the environment failed, not the command)", 1)

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
    metric: Optional[str] = typer.Option(None, help="Run this `evaluate` metric instead (offline): perplexity_protocol (ours, through evaluate) or a local metric folder/.py whose compute takes predictions (the text as one row), model, seq_len, max_windows, device, progress. Default: ours, directly."),
) -> None:
    """Perplexity with the standard protocol (whole text tokenized once, non-overlapping windows)."""
    from compress.api import evaluate

    if metric is not None:
        from compress.eval.metrics import run_metric

        res = {**run_metric(metric, model, data, seq_len, max_windows, device, progress=not as_json), "source": data, "metric": metric}
    else:
        res = evaluate(model, data=data, seq_len=seq_len, max_windows=max_windows, device=device, progress=not as_json)
    if not {"perplexity", "windows", "tokens"} <= set(res):  # another metric's result: shown as it is
        typer.echo(json.dumps(res, default=str))
        return
    finite = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in res.items()}  # JSON has no NaN
    typer.echo(json.dumps(finite, allow_nan=False) if as_json else f"perplexity {res['perplexity']:.4f} ({res['windows']} windows of {seq_len}, {res['tokens']} tokens)")


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
def export(
    source: str = typer.Argument(..., help="Compress checkpoint (or model directory) to export."),
    fmt: str = typer.Option(..., "--format", "-f", help="Target: compressed-tensors (vLLM / SGLang / transformers), gguf (llama.cpp / Ollama), dense (plain safetensors)."),
    out: Path = typer.Option(..., "--out", "-o", help="New directory for the exported model (written atomically)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing export or checkpoint at --out."),
) -> None:
    """Write SOURCE in a format serving engines load; a module the format cannot hold is refused by name."""
    from compress.export.driver import export as run_export

    res = run_export(source, fmt, out, force=force)
    kinds = ", ".join(f"{n} × {k}" for k, n in sorted(Counter(res.modules.values()).items())) or "no packed modules"
    typer.echo(f"exported {res.out} ({res.format}: {kinds})")


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
    out: Path = typer.Option(Path("demo-out"), help="Where the compressed checkpoint goes (an earlier compress checkpoint there is replaced; anything else is refused)."),
    max_windows: Optional[int] = typer.Option(None, min=1, help="Perplexity windows (default: all on GPU, 8 on CPU)."),
    device: Optional[str] = typer.Option(None, help="cuda or cpu."),
) -> None:
    """Fetch SmolLM2-135M, compress it with the demo recipe, print a before/after table."""
    from compress.demo import run_demo

    typer.echo(run_demo(recipe, out, max_windows, device))


@app.command()
@user_errors
def bench(
    models: list[str] = typer.Argument(..., help="Models, checkpoints, recipes (.yaml, run on the first model), random:SHAPE, or bnb:nf4|fp4|int8[:MODEL] (MODEL, default the first entry's model, loaded through transformers' BitsAndBytesConfig, bf16 compute; skipped with the reason where bitsandbytes cannot run here); the first is the base. ENTRY@fp32|bf16|fp16 measures it in that dtype (e.g. smollm2@bf16 smollm2@fp32)."),
    data: str = typer.Option("wikitext2-test", help="Perplexity text (as `compress eval --data`)."),
    seq_len: int = typer.Option(2048, min=8, help="Perplexity window length."),
    max_windows: Optional[int] = typer.Option(None, min=1, help="Score only the first N perplexity windows."),
    prefill: str = typer.Option("512,2048", help="Prompt lengths for prefill_ms, comma-separated."),
    batch: Optional[str] = typer.Option(None, help="Decode batch sizes, comma-separated (default: 1,8 on CUDA, 1 on CPU)."),
    new_tokens: Optional[int] = typer.Option(None, min=1, help="Decode steps timed per run (default: 128 CUDA, 32 CPU)."),
    prompt_len: int = typer.Option(32, min=1, help="Prompt tokens before the timed decode steps."),
    warmup: Optional[int] = typer.Option(None, min=0, help="Untimed runs first (default: 3 CUDA, 1 CPU)."),
    repeats: Optional[int] = typer.Option(None, min=1, help="Timed runs; the median is reported (default: 10 CUDA, 3 CPU)."),
    decode_mode: str = typer.Option("auto", help="auto, eager, graph, compile or max (auto: compile, torch.compile fullgraph; max: Inductor max-autotune, with freezing on a CPU: the fastest dense rows, slower to build; graph: CUDA only)."),
    interleave: bool = typer.Option(False, "--interleave", help="Time all models round-robin (all in memory; eager decode): ratios survive a busy CPU."),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads (default: torch's); 1 keeps CPU timings stable on a busy machine."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the JSON report here."),
    plot: Optional[Path] = typer.Option(None, help="Write a PNG of perplexity vs decode tokens/s here."),
    save_baseline: Optional[Path] = typer.Option(None, help="Write the report as a regression baseline here."),
    tol_perplexity: Optional[float] = typer.Option(None, min=0, help="Baseline tolerance: max relative perplexity increase (default 0.02)."),
    tol_latency: Optional[float] = typer.Option(None, min=0, help="Baseline tolerance: max relative worsening of a latency ratio to the base (default 0.2)."),
    tol_size: Optional[float] = typer.Option(None, min=0, help="Baseline tolerance: max relative growth of a size/memory ratio to the base (default 0.01)."),
    device: Optional[str] = typer.Option(None, help="cuda or cpu."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Perplexity, prefill ms, decode tok/s, memory and size of each model, with ratios to the first."""
    from compress.eval.bench import BenchSettings, benchmark, parse_ints
    from compress.eval.plot import plot_tradeoff
    from compress.eval.regress import save_baseline as write_baseline
    from compress.eval.table import bench_table

    settings = BenchSettings(data=data, seq_len=seq_len, max_windows=max_windows, prefill=parse_ints(prefill, "--prefill"),
                             batches=parse_ints(batch, "--batch") if batch else None, prompt_len=prompt_len,
                             new_tokens=new_tokens, warmup=warmup, repeats=repeats, decode_mode=decode_mode,
                             interleave=interleave, threads=threads)
    output_files(("--json", json_out), ("--plot", plot), ("--save-baseline", save_baseline))
    report = benchmark(models, settings, device, progress=not quiet)
    skipped = [r for r in report["results"] if r.get("skipped")]
    typer.echo(bench_table({**report, "results": [r for r in report["results"] if not r.get("skipped")]}))
    for r in skipped:
        typer.echo(f"skipped {r['name']}: {r['skipped']}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=1))
        typer.echo(f"wrote {json_out}")
    if plot is not None:
        typer.echo(f"wrote {plot_tradeoff(report, plot)}")
    if save_baseline is not None:
        tol = {k: v for k, v in {"perplexity": tol_perplexity, "latency": tol_latency, "size": tol_size}.items() if v is not None}
        typer.echo(f"wrote baseline {write_baseline(report, save_baseline, tol)}")


@app.command()
@user_errors
def regress(
    baseline: Path = typer.Option(..., help="Baseline JSON written by `compress bench --save-baseline`."),
    current: Optional[Path] = typer.Option(None, help="Compare this bench JSON instead of re-running the baseline's entries."),
    tol_perplexity: Optional[float] = typer.Option(None, min=0, help="Max relative perplexity increase (default 0.02, or the baseline's)."),
    tol_latency: Optional[float] = typer.Option(None, min=0, help="Max relative worsening of a latency ratio to the base (default 0.2: a 25% slower decode fails)."),
    tol_size: Optional[float] = typer.Option(None, min=0, help="Max relative growth of a size/memory ratio to the base (default 0.01)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the checks and the current report here."),
    device: Optional[str] = typer.Option(None, help="cuda or cpu (default: the baseline's kind)."),
    confirm: int = typer.Option(1, min=0, help="Time again this many times when only latency checks fail, gating each "
                                "ratio's best run (a real slowdown fails every run; 0: fail on the first)."),
    reference: Optional[str] = typer.Option(None, help="A git commit: gate latency A/B, timing every entry under that "
                                            "commit's code and the current code in one run (CPU; steadier than ratios "
                                            "to the base on a shared machine) instead of by the baseline's stored ratios."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Re-run a baseline's models/recipes and compare; exit 1 on any regression, 0 otherwise."""
    from compress.eval.regress import regress as run_regress
    from compress.eval.regress import regress_table

    tol = {"perplexity": tol_perplexity, "latency": tol_latency, "size": tol_size}
    output_files(("--json", json_out))
    checks, report = run_regress(baseline, current, device, tol, progress=not quiet, confirm=confirm, reference=reference)
    typer.echo(regress_table(checks))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"checks": [c.to_dict() for c in checks], "current": report}, indent=1))
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


def output_files(*named: tuple[str, Optional[Path]]) -> None:
    """Report files that could not be written, before minutes of measuring rather than after."""
    from compress.fsutil import check_writable

    for option, f in named:
        if f is None:
            continue
        if f.is_dir():
            raise CompressError(f"{option} {f}: is a directory; give a file name, e.g. {f / 'report.json'}")
        check_writable(f, option)


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    sys.exit(main())
