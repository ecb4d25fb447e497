"""Which compute dtype a model should run in on this CPU: perplexity (standard protocol, first N windows)
of the base and of packed int8 / int4 checkpoints in fp32 and in bf16, side by side.

    PYTHONPATH=. python benchmarks/cpu_dtype.py out/int8 out/int4 --windows 2 --out benchmarks/results/cpu_dtype.json

Packed int kernels compute in bf16 on a CPU whatever the model's dtype; this measures what running the
rest of the model (norms, attention, residual stream, lm_head) in bf16 costs in perplexity.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from compress.eval.perplexity import perplexity
from compress.models import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="*")
    ap.add_argument("--base", default="smollm2")
    ap.add_argument("--windows", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    rows = []
    for spec in [a.base, *a.checkpoints]:
        row = {"model": spec}
        for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            model, tok = load_model(spec, torch.device("cpu"), dt)
            row[name] = perplexity(model, tok, "wikitext2-test", 2048, a.windows)["perplexity"]
            del model
        row["bf16_vs_fp32"] = row["bf16"] / row["fp32"] - 1
        print(json.dumps(row), flush=True)
        rows.append(row)
    if a.out:
        Path(a.out).write_text(json.dumps({"windows": a.windows, "torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
