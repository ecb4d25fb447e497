"""Our checkpoints exported to GGUF and scored by llama.cpp: perplexity on the same token ids as `compress eval`.

    python benchmarks/gguf_llamacpp.py --build --out benchmarks/results/gguf_llamacpp.json
    python benchmarks/gguf_llamacpp.py int8=/tmp/gg/int8 int4-g64=/tmp/gg/int4-g64 [--decode]

For each `NAME=CHECKPOINT` (by default SmolLM2 `recipes/int8.yaml` and `recipes/int4-rtn.yaml`, int4 group 64
asymmetric, built with `--build` when missing): `compress export --format gguf`, then `compress eval
--max-windows 8 --json` on the checkpoint, and llama.cpp (llama-cpp-python, run from its own venv,
`--peer-python`: a peer, never a dependency) on the GGUF. The protocol is ../shared/data/README.md's:
WikiText-2 test tokenized once by our tokenizer, non-overlapping windows of 2048, the first 8; llama.cpp
is fed those token ids (the fair comparison) and scores them from `llm.scores` (a numpy view; eval_logits
builds Python lists), the NLL computed here in numpy. llama.cpp's own tokenization of the text is
compared with ours and reported. `--decode` adds llama.cpp decode tokens/s (llamacpp_compare.decode_tps).
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RECIPES = {"int8": "recipes/int8.yaml", "int4-g64": "recipes/int4-rtn.yaml"}
DEFAULT = [f"{name}=/tmp/gg/{name}" for name in RECIPES]


# ---------------------------------------------------------------- llama.cpp side (runs under --peer-python)

def log_softmax_nll(logits: np.ndarray, targets: np.ndarray) -> float:
    """Sum of −log p(target) over rows, in float64 (a 2048 × 49152 window in chunks, to bound memory)."""
    total = 0.0
    for i in range(0, len(targets), 256):
        x = logits[i: i + 256].astype(np.float64)
        top = x.max(axis=1, keepdims=True)
        lse = np.log(np.exp(x - top).sum(axis=1)) + top[:, 0]
        total += float((lse - x[np.arange(len(x)), targets[i: i + 256]]).sum())
    return total


def llama_perplexity(gguf: Path, windows: np.ndarray, threads: int) -> dict[str, Any]:
    """exp(mean NLL) of each window's tokens 1..L−1, as compress's perplexity does."""
    import llama_cpp

    seq = windows.shape[1]
    llm = llama_cpp.Llama(str(gguf), n_ctx=seq, n_batch=seq, logits_all=True, n_threads=threads,
                          n_threads_batch=threads, verbose=False)
    nll, count, t0 = 0.0, 0, time.perf_counter()
    for w in windows:
        llm.reset()
        llm.eval([int(t) for t in w])
        nll += log_softmax_nll(llm.scores[: seq - 1], w[1:])
        count += seq - 1
    return {"perplexity": float(np.exp(nll / count)), "windows": int(len(windows)), "scored": count,
            "seconds": round(time.perf_counter() - t0, 1)}


def llama_tokenization(gguf: Path, text: str, ours: np.ndarray) -> dict[str, Any]:
    """llama.cpp's own tokens for the text (no BOS, specials as text) against ours."""
    import llama_cpp

    llm = llama_cpp.Llama(str(gguf), n_ctx=64, vocab_only=True, verbose=False)
    theirs = np.array(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))
    n = min(len(theirs), len(ours))
    diff = np.nonzero(theirs[:n] != ours[:n])[0]
    first = int(diff[0]) if len(diff) else (n if len(theirs) != len(ours) else None)
    return {"llama_cpp_tokens": int(len(theirs)), "our_tokens": int(len(ours)), "identical": first is None,
            "first_difference": first}


def worker(a: argparse.Namespace) -> None:
    """One GGUF scored by llama.cpp: JSON on stdout."""
    import llama_cpp

    ids = np.load(a.ids)
    windows = ids[: a.max_windows * a.seq_len].reshape(a.max_windows, a.seq_len)
    out: dict[str, Any] = {"llama_cpp_python": llama_cpp.__version__,
                           "perplexity": llama_perplexity(a.worker, windows, a.threads),
                           "tokenization": llama_tokenization(a.worker, Path(a.text).read_text(encoding="utf-8"), ids)}
    if a.decode:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from llamacpp_compare import decode_tps

        out["decode_tps"] = float(np.median(decode_tps(a.worker, a.threads, 32, a.new_tokens, a.repeats)))
    print(json.dumps(out))


# ---------------------------------------------------------------- our side

def build(name: str, ck: Path) -> None:
    """The checkpoint from its recipe (its own evaluation cut to one window: `compress eval` below is the measure)."""
    subprocess.run([sys.executable, "-m", "compress", "run", RECIPES[name], "--model", "smollm2", "--out", str(ck),
                    "--set", "evaluate.perplexity.max_windows=1"], cwd=ROOT, check=True)


def our_perplexity(ck: Path, windows: int, seq_len: int) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-m", "compress", "eval", str(ck), "--max-windows", str(windows),
                        "--seq-len", str(seq_len), "--json"], cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1])  # one JSON line


def tokens_and_text(ck: Path, work: Path) -> tuple[Path, Path]:
    """Our token ids of the whole WikiText-2 test text (standard join), and that text, for the peer."""
    from compress.checkpoint import load_tokenizer
    from compress.data import read_text, tokenize

    ids, text = work / "wikitext2-test.ids.npy", work / "wikitext2-test.txt"
    if not ids.exists():
        raw = read_text("wikitext2-test")
        text.write_text(raw, encoding="utf-8")
        np.save(ids, tokenize(load_tokenizer(ck), raw).numpy().astype(np.int32))
    return ids, text


def versions() -> dict[str, Any]:
    import gguf
    import torch
    import transformers

    def git(*args: str) -> str:  # read-only: no optional index locks
        return subprocess.run(["git", "--no-optional-locks", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"compress_commit": git("rev-parse", "--short", "HEAD"), "uncommitted_changes": bool(git("status", "--porcelain")),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "gguf": getattr(gguf, "__version__", None) or _dist_version("gguf"), "python": platform.python_version()}


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine(threads: int) -> dict[str, Any]:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "system": platform.platform()}


def measure(name: str, ck: Path, a: argparse.Namespace) -> dict[str, Any]:
    from compress.export.driver import export

    out = a.workdir / f"{name}-gguf"
    export(ck, "gguf", out, force=out.exists())
    report = json.loads((out / "gguf-report.json").read_text())
    ids, text = tokens_and_text(ck, a.workdir)
    cmd = [a.peer_python, __file__, "--worker", str(out / "model.gguf"), "--ids", str(ids), "--text", str(text),
           "--max-windows", str(a.max_windows), "--seq-len", str(a.seq_len), "--threads", str(a.threads)]
    if a.decode:
        cmd += ["--decode", "--new-tokens", str(a.new_tokens), "--repeats", str(a.repeats)]
    peer = json.loads(subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1])
    ours = our_perplexity(ck, a.max_windows, a.seq_len)
    theirs = peer["perplexity"]["perplexity"]
    row = {"name": name, "checkpoint": str(ck), "gguf_bytes": (out / "model.gguf").stat().st_size,
           "types": report["types"], "fp16_scale_rounding": report["fp16_scale_rounding"],
           "ours": ours, "llama_cpp": peer["perplexity"], "tokenization": peer["tokenization"],
           "rel_diff": theirs / ours["perplexity"] - 1, "llama_cpp_python": peer["llama_cpp_python"]}
    if "decode_tps" in peer:
        row["llama_cpp_decode_tps"] = peer["decode_tps"]
    print(f"{name}: ours {ours['perplexity']:.4f}, llama.cpp {theirs:.4f} ({row['rel_diff'] * 100:+.3f}%), "
          f"tokenization identical: {peer['tokenization']['identical']}", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="*", default=DEFAULT, help="NAME=CHECKPOINT (default: %(default)s)")
    ap.add_argument("--build", action="store_true", help=f"build missing default checkpoints from {RECIPES}")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/gg"))
    ap.add_argument("--max-windows", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--peer-python", default="/tmp/peers/bin/python", help="a Python with llama-cpp-python")
    ap.add_argument("--decode", action="store_true", help="also time llama.cpp decode (an idle CPU only)")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, help="results JSON, e.g. benchmarks/results/gguf_llamacpp.json")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--ids", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--text", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    sys.path.insert(0, str(ROOT))
    a.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in a.checkpoints:
        name, _, path = spec.partition("=")
        ck = Path(path or name)
        if not ck.exists() and a.build and name in RECIPES:
            build(name, ck)
        rows.append(measure(name, ck, a))
    if a.out:
        a.out.write_text(json.dumps({"protocol": {"source": "wikitext2-test", "seq_len": a.seq_len, "windows": a.max_windows,
                                                  "llama_cpp_input": "our token ids"},
                                     "versions": versions(), "machine": machine(a.threads), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
