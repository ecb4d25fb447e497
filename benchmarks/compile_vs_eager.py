"""Eager, compiled and "max" (Inductor freezing + max-autotune) decode on this CPU, per model, beside the
step's memory floor.

    PYTHONPATH=. python benchmarks/compile_vs_eager.py smollm2@bf16 smollm2@fp32 out/int8 out/int4 \
        --threads 1 --modes eager,compile,max --out benchmarks/results/compile_vs_eager_cpu.json

A model written `SPEC=MODES` (e.g. `smollm2@fp32=compile,max`) runs only those modes: a "max" build of a
dense fp32 model takes minutes on some CPUs, and only the best dense row needs it. A mode ending in `/exact` or
`/q8` (e.g. `out/int4=compile,compile/q8`) runs with the decode GEMVs on int8 activations (`native.GEMV_Q8`; int8
only by default on AVX2 CPUs) off, or on for int8 and int4: their speed and greedy tokens beside the default's.
A mode ending in `/kvcopy` decodes with transformers' own `sdpa` attention, which copies every layer's whole KV
cache per step for grouped-query heads under compile, instead of the decoder's default `compress_sdpa`; one ending
in `/guarded` keeps all of dynamo's guards on the decoder (model, cache) that the default step drops; one ending in
`/atensdpa` runs one-token attention through aten's SDPA instead of the C kernel (`native.attn_decode`); one ending
in `/cppwrap` builds the step with Inductor's C++ wrapper (`cpp_wrapper`: no Python between its kernels; minutes
more to build).

Each (model, mode) gets its own copy of the model and a `StaticDecoder` (`compile` is the bench's
default, `torch.compile(fullgraph=True)`; `max` also freezes the weights into the graph and lets
Inductor pick its own GEMM templates, which costs build time and memory: the frozen graph holds its
own prepacked weights, so the RSS growth is reported); rounds of 32 steps alternate between all of
them (a neighbour's load hits every row alike) and tokens/s is the rate of the median step. The floor
is the time to read the model's bytes once at the streaming read bandwidth measured here (sum over a
1 GiB buffer): a batch-1 step reads every weight, so no compiler can beat it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import compress
from compress.eval import fast_decode, gqa_attention
from compress.eval.fast_decode import StaticDecoder
from compress.eval.speed import memory_bytes
from compress.kernels import native
from compress.models import load_model


def load(spec: str) -> torch.nn.Module:
    """`name@dtype` for a base model in that dtype, else a compressed checkpoint."""
    if "@" in spec:
        name, dt = spec.split("@")
        return load_model(name, torch.device("cpu"), {"bf16": torch.bfloat16, "fp32": torch.float32}[dt])[0]
    return compress.load(spec, device="cpu")


PROMPT = ("The tower is 324 metres tall, about the same height as an 81-storey building, and the tallest "
          "structure in Paris. Its base is square, measuring 125 metres on each side. During its construction, the")


def agreement(a: torch.Tensor, b: torch.Tensor) -> int:
    """Greedy tokens equal before the first difference (a mode that computes something else diverges at once)."""
    diff = (a != b).flatten().nonzero()
    return int(diff[0]) if len(diff) else a.numel()


def rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def read_bandwidth(gib: float = 1.0, repeats: int = 5) -> float:
    """Bytes/s of a streaming read (sum of a large buffer, fastest of `repeats`)."""
    buf = torch.ones(int(gib * 2**30) // 4, dtype=torch.float32)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        buf.sum()
        best = min(best, time.perf_counter() - t)
    return buf.numel() * 4 / best


Q8_DEFAULT = native.GEMV_Q8


def gemv_for(mode: str) -> str:
    """Set the decode GEMVs and attention for `mode` (a compiled step is cached per setting) and return the decoder's
    mode."""
    native.GEMV_Q8 = {"exact": frozenset(), "q8": frozenset({4, 8})}.get(mode.partition("/")[2], Q8_DEFAULT)
    gqa_attention.NATIVE = not mode.endswith("/atensdpa")
    fast_decode.EXTRA_OPTIONS = {"cpp_wrapper": True} if mode.endswith("/cppwrap") else {}
    return mode.split("/")[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--modes", default="eager,compile", help="comma-separated: eager, compile, max")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--cache-len", type=int, default=None,
                    help="static KV cache positions (default: prompt + steps + 1, the least; a chat keeps thousands)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    cache_len = a.cache_len or 32 + a.steps + 1
    torch.set_num_threads(a.threads)
    bw = read_bandwidth()
    tok = load_model("smollm2", torch.device("cpu"), torch.float32)[1]
    ids = tok(PROMPT, return_tensors="pt").input_ids[:, :32]
    modes = a.modes.split(",")
    specs = {spec.split("=")[0]: (spec.split("=")[1].split(",") if "=" in spec else modes) for spec in a.models}
    decoders, sizes, grown, built, tokens = {}, {}, {}, {}, {}
    with torch.no_grad():
        for spec, its_modes in specs.items():
            for mode in its_modes:
                model = load(spec).eval()  # a copy per mode: a compiled step is cached per model
                sizes[spec] = memory_bytes(model)
                before = rss_mib()
                dec = StaticDecoder(model, cache_len, gemv_for(mode))
                if mode.endswith("/kvcopy"):
                    model.set_attn_implementation("sdpa")  # before the step is built (first decode)
                dec.skip_guards = not mode.endswith("/guarded")
                first = dec.prefill(ids)
                t = time.perf_counter()
                tokens[(spec, mode)] = dec.decode(first, 32, a.steps)  # builds the compiled step
                built[(spec, mode)] = time.perf_counter() - t
                grown[(spec, mode)] = rss_mib() - before
                print(f"{spec} {mode}: ready in {built[(spec, mode)]:.1f} s, RSS +{grown[(spec, mode)]:.0f} MiB", flush=True)
                decoders[(spec, mode)] = (dec, first)
        steps: dict[tuple[str, str], list[float]] = {k: [] for k in decoders}
        for _ in range(a.rounds):
            for key, (dec, first) in decoders.items():
                gemv_for(key[1])
                dec.rewind(32)
                dec.decode(first, 32, a.steps, step_times=steps[key])
    rows = []
    for spec, its_modes in specs.items():
        floor = bw / sizes[spec]
        row = {"model": spec, "bytes": sizes[spec], "floor_tok_s": round(floor, 2)}
        for m in its_modes:
            rate = 1 / statistics.median(steps[(spec, m)])
            row[m] = {"tok_s": round(rate, 2), "of_floor": round(rate / floor, 3), "build_s": round(built[(spec, m)], 1),
                      "rss_growth_mib": round(grown[(spec, m)]),
                      "tokens_as_first_mode": agreement(tokens[(spec, m)], tokens[(spec, its_modes[0])])}
        if "eager" in its_modes:
            for m in its_modes:
                row[m]["vs_eager"] = round(row[m]["tok_s"] / row["eager"]["tok_s"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.out:
        env = {"torch": torch.__version__, "threads": a.threads, "gemv_q8_bits": sorted(Q8_DEFAULT), "read_GBps": round(bw / 1e9, 2), "rounds": a.rounds, "modes": modes,
               "steps": a.steps, "cache_len": cache_len, "date": time.strftime("%Y-%m-%d")}
        Path(a.out).write_text(json.dumps({"env": env, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
