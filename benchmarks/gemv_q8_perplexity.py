"""What rounding activations to int8 blocks (the `*_gemv_q8_cpu` decode kernels) costs in perplexity.

    PYTHONPATH=. python benchmarks/gemv_q8_perplexity.py out/int8 out/int4 --windows 8 \
        --out benchmarks/results/gemv_q8_perplexity.json

The decode kernels only see one or two rows of x, so the standard perplexity pass (prefill) never runs them.
This runs that pass with every packed linear's input rounded as the kernels round it (x to bf16, then blocks
of 32: d = max|x| / 127, x̂ = d · round(x / d)) by a forward pre-hook, beside the same pass unhooked, with x
only rounded to bf16 (what the exact GEMVs take), with the head left exact, and with only the head rounded (an
int4 model's default: its int8 head decodes on q8, its int4 GEMVs exactly). Same tokens, same windows.

`--decode N` adds the real thing on a smaller scale: the first N tokens of each window fed one at a time
(eager, a KV cache: every linear call has M = 1, so dispatch sends it to the decode kernels), scoring each next
token, once with the exact GEMVs and once with this CPU's default (`native.GEMV_Q8`).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import math

import torch
import torch.nn.functional as F

import compress
from compress.data import eval_windows, read_text, tokenize
from compress.eval.perplexity import perplexity
from compress.kernels import native
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


@torch.no_grad()
def decode_perplexity(model: torch.nn.Module, tok: object, windows: int, length: int) -> float:
    """exp(mean NLL) of tokens 1..length−1 of each window, each predicted by a one-token step on a KV cache."""
    from transformers import DynamicCache

    nll, count = 0.0, 0
    for w in eval_windows(tokenize(tok, read_text("wikitext2-test")), 2048, windows):
        ids, cache = w[:length], DynamicCache()
        for i in range(length - 1):
            out = model(input_ids=ids[i: i + 1][None], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            nll += F.cross_entropy(out.logits[0, -1].float(), ids[i + 1]).item()
            count += 1
    return math.exp(nll / count)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--rows", default=",".join(ROWS), help=f"prefill rows, comma-separated ('' for none): {', '.join(ROWS)}")
    ap.add_argument("--decode", type=int, default=0, metavar="N", help="also score N tokens a window by decode steps")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    tok = load_model("smollm2", torch.device("cpu"), torch.float32)[1]
    results = []
    for path in a.checkpoints:
        model = compress.load(path, dtype=torch.float32).eval()
        for row in filter(None, a.rows.split(",")):
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
        default = native.GEMV_Q8
        for row, bits in (("decode-exact", frozenset()), ("decode-default", default)) if a.decode else ():
            native.GEMV_Q8 = bits
            t = time.perf_counter()
            ppl = decode_perplexity(compress.load(path).eval(), tok, a.windows, a.decode)
            results.append({"checkpoint": path, "row": row, "q8_bits": sorted(bits), "perplexity": round(ppl, 4),
                            "tokens_per_window": a.decode, "seconds": round(time.perf_counter() - t, 1)})
            print(json.dumps(results[-1]), flush=True)
        native.GEMV_Q8 = default
    if a.out:
        env = {"torch": torch.__version__, "windows": a.windows, "seq_len": 2048, "date": time.strftime("%Y-%m-%d")}
        Path(a.out).write_text(json.dumps({"env": env, "rows": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
