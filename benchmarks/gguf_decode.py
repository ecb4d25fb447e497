"""llama.cpp decode tokens/s of GGUF files (ours from `compress export --format gguf`, and references),
in one run so the ratios hold on a busy machine. Run under a Python with llama-cpp-python (a peer):

    /tmp/peers/bin/python benchmarks/gguf_decode.py F16=/tmp/lc/f16.gguf int4=out/int4-gguf/model.gguf \\
        --threads 1 --out benchmarks/results/gguf_decode.json

The first NAME is the reference of the `× first` column.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

from llamacpp_compare import decode_tps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+", help="NAME=PATH.gguf")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    import llama_cpp

    rows = {}
    for spec in a.files:
        name, _, path = spec.partition("=")
        rows[name] = statistics.median(decode_tps(Path(path), a.threads, a.prompt_len, a.new_tokens, a.repeats))
    first = next(iter(rows.values()))
    for name, tps in rows.items():
        print(f"{name:40s} {tps:7.1f} tok/s  {tps / first:.2f}× first")
    if a.out:
        a.out.write_text(json.dumps({"llama_cpp_python": llama_cpp.__version__, "cpu": platform.machine(),
                                     "threads": a.threads, "prompt_len": a.prompt_len, "new_tokens": a.new_tokens,
                                     "repeats": a.repeats, "tok_s": rows}, indent=1))


if __name__ == "__main__":
    main()
