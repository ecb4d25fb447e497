"""Perplexity and checkpoint size of the pruning passes on SmolLM2-135M (CPU-friendly settings).

    python benchmarks/pruning_smollm2.py --windows 4 --samples 16 --out /tmp/prune-bench.json

Every variant starts from the same fp32 model and is scored on the same first `--windows`
WikiText-2 test windows of 2048 tokens; calibration is `--samples` windows of WikiText-2 valid.
The `*-distill` variants run the passes of recipes/sparsegpt-{50,2of4}-distill.yaml (pruning, then
mask-fixed distillation from the unpruned model) and also record the distill pass's wall and the
process CPU seconds.
"""
from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml

import compress
from compress.models import compute_dtype, load_model

VARIANTS: dict[str, list[dict]] = {
    "magnitude-50": [{"magnitude": {"sparsity": 0.5}}],
    "magnitude-2:4": [{"magnitude": {"pattern": "2:4"}}],
    "wanda-50": [{"wanda": {"sparsity": 0.5}}],
    "wanda-2:4": [{"wanda": {"pattern": "2:4"}}],
    "sparsegpt-50": [{"sparsegpt": {"sparsity": 0.5}}],
    "sparsegpt-2:4": [{"sparsegpt": {"pattern": "2:4"}}],
    "wanda-50-owl": [{"wanda": {"sparsity": 0.5, "allocation": "owl"}}],
    "ffn25-magnitude": [{"prune_structured": {"ffn_sparsity": 0.25}}],
    "ffn25-activation": [{"prune_structured": {"ffn_sparsity": 0.25, "importance": "activation"}}],
}
RECIPES = Path(__file__).resolve().parent.parent / "recipes"
DISTILL_VARIANTS = {"sparsegpt-50-distill": "sparsegpt-50-distill.yaml", "sparsegpt-2:4-distill": "sparsegpt-2of4-distill.yaml"}


def recipe_passes(file: str, state_dir: Path) -> list[dict]:
    """A shipped recipe's passes, its distill state kept in a temporary folder."""
    passes = yaml.safe_load((RECIPES / file).read_text())["passes"]
    return [{k: ({**v, "state_dir": str(state_dir)} if k == "distill" else v) for k, v in p.items()} for p in passes]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--out", type=Path, default=Path("prune-bench.json"))
    ap.add_argument("--skip-base", action="store_true", help="do not score the base model again")
    a = ap.parse_args()
    path = compress.fetch_smollm2()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base, tok = load_model(str(path), dev, compute_dtype(dev))
    results: dict[str, dict] = {"settings": {"seq_len": 2048, "windows": a.windows, "calibration_samples": a.samples}}
    with tempfile.TemporaryDirectory() as td:
        if not a.skip_base:
            ppl = compress.evaluate(base, tok, max_windows=a.windows, progress=False)
            base_ck = compress.checkpoint.save(base, tok, Path(td) / "base")
            results["base"] = {"ppl": ppl["perplexity"], "params": sum(p.numel() for p in base.parameters()),
                               "weights_bytes": (base_ck / "model.safetensors").stat().st_size}
            print(json.dumps(results), flush=True)
        variants = {**VARIANTS, **{n: recipe_passes(f, Path(td) / f"{n}-state") for n, f in DISTILL_VARIANTS.items()}}
        for name, passes in variants.items():
            if a.only and name not in a.only:
                continue
            t0, c0 = time.time(), time.process_time()
            recipe = {"calibration": {"source": "wikitext2-valid", "samples": a.samples, "seq_len": 2048},
                      "passes": passes, "evaluate": {"perplexity": {"max_windows": a.windows}, "baseline": False}}
            res = compress.run(recipe, copy.deepcopy(base), tokenizer=tok, out=Path(td) / name, progress=False)
            results[name] = {"ppl": res.report["perplexity_after"]["perplexity"],
                             "params": sum(p.numel() for p in res.model.parameters()),
                             "weights_bytes": res.report["size"]["on_disk_bytes"], "seconds": round(time.time() - t0, 1),
                             "pass": res.report["passes"][0]}
            if len(res.report["passes"]) > 1:
                results[name]["then"] = res.report["passes"][1:]
                results[name]["process_cpu_s"] = round(time.process_time() - c0, 1)
            print(name, json.dumps(results[name]), flush=True)
            a.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
