"""What rounding activations to int8 blocks (the `*_gemv_q8_cpu` decode kernels) costs in perplexity.

    PYTHONPATH=. python benchmarks/gemv_q8_perplexity.py out/int8 out/int4 --windows 8 \
        --out benchmarks/results/gemv_q8_perplexity.json

The decode kernels only see one or two rows of x, so the standard perplexity pass (prefill) never runs them.
This runs that pass with every packed linear's input rounded as the kernels round it (x to bf16, then blocks
of 32: d = max|x| / 127, x̂ = d · round(x / d)) by a forward pre-hook, beside the same pass unhooked, with x
only rounded to bf16 (what the exact GEMVs take), with the head left exact, and with only the head rounded (an
int4 model's default: its int8 head decodes on q8, its int4 GEMVs exactly). Same tokens, same windows.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import compress
from compress.eval.perplexity import perplexity
from compress.formats.quant_linear import QuantLinear
from compress.models import load_model


def q8(x: torch.Tensor) -> torch.Tensor:
    """x as the q8 kernels see it: bf16, then int8 blocks of 32 along the last dimension (zero-padded)."""
    k = x.shape[-1]
    xb = torch.nn.functional.pad(x.to(torch.bfloat16).float(), (0, (-k) % 32)).reshape(*x.shape[:-1], -1, 32)
    amax = xb.abs().amax(-1, keepdim=True)
    inv = torch.where(amax > 0, 127 / amax, torch.zeros_like(amax))
    return (torch.round(xb * inv) * (amax / 127)).reshape(*x.shape[:-1], -1)[..., :k].to(x.dtype)


def bf16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.bfloat16).to(x.dtype)


# row: (rounding, which linears: all, all but the head, the head only)
ROWS = {"exact": (None, "all"), "bf16": (bf16, "all"), "q8": (q8, "all"), "q8-exact-head": (q8, "body"),
        "q8-head-only": (q8, "head")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    tok = load_model("smollm2", torch.device("cpu"), torch.float32)[1]
    results = []
    for path in a.checkpoints:
        model = compress.load(path, dtype=torch.float32).eval()
        for row in a.rows.split(","):
            fn, which = ROWS[row]
            hooks = [m.register_forward_pre_hook(lambda _m, args, fn=fn: (fn(args[0]),))
                     for name, m in model.named_modules()
                     if fn is not None and isinstance(m, QuantLinear)
                     and which in ("all", "head" if name.endswith("lm_head") else "body")]
            t = time.perf_counter()
            ppl = perplexity(model, tok, "wikitext2-test", max_windows=a.windows, progress=False)["perplexity"]
            for h in hooks:
                h.remove()
            results.append({"checkpoint": path, "row": row, "perplexity": round(ppl, 4), "hooked": len(hooks),
                            "seconds": round(time.perf_counter() - t, 1)})
            print(json.dumps(results[-1]), flush=True)
    if a.out:
        env = {"torch": torch.__version__, "windows": a.windows, "seq_len": 2048, "date": time.strftime("%Y-%m-%d")}
        Path(a.out).write_text(json.dumps({"env": env, "rows": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
