"""Perplexity, time and size of RTN / GPTQ / AWQ / SignRound (optionally after `rotate`) on SmolLM2-135M (CPU), same windows for all.

python benchmarks/quant_smollm2.py --windows 4 --samples 32 --calib-seq 512 --out benchmarks/results/quant_smollm2_cpu.jsonl
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import compress

INT4 = {"g64": 64, "g128": 128, "pc": -1}


def variants(sr: dict) -> dict[str, list[dict]]:
    """Every variant's passes; `sr`: the signround step options (iters, batch) shared by its variants."""
    v: dict[str, list[dict]] = {"rtn-int8": [{"rtn": {"bits": 8}}], "gptq-int8": [{"gptq": {"bits": 8, "group_size": -1, "symmetric": True}}]}
    for tag, g in INT4.items():
        q = {"bits": 4, "group_size": g, "symmetric": False}
        v[f"rtn-{tag}"] = [{"rtn": q}]
        v[f"rtn-mse-{tag}"] = [{"rtn": {**q, "clip_search": True}}]
        v[f"gptq-{tag}"] = [{"gptq": q}]
        v[f"gptq-mse-{tag}"] = [{"gptq": {**q, "clip_search": True}}]
        v[f"gptq-noact-{tag}"] = [{"gptq": {**q, "act_order": False}}]
        v[f"awq-rtn-{tag}"] = [{"awq": q}, {"rtn": {**q, "clip_search": True}}]
        v[f"awq-gptq-{tag}"] = [{"awq": q}, {"gptq": q}]
        v[f"awq-gptq-mse-{tag}"] = [{"awq": q}, {"gptq": {**q, "clip_search": True}}]
        v[f"signround-{tag}"] = [{"signround": {**q, **sr}}]
        v[f"awq-signround-{tag}"] = [{"awq": q}, {"signround": {**q, **sr}}]
    for g in (64, 128):  # 3 bits (issue #11's target: int3 g64 ≤ +25%)
        q = {"bits": 3, "group_size": g, "symmetric": False}
        v[f"rtn-int3-g{g}"] = [{"rtn": q}]
        v[f"gptq-mse-int3-g{g}"] = [{"gptq": {**q, "clip_search": True}}]
        v[f"awq-gptq-mse-int3-g{g}"] = [{"awq": q}, {"gptq": {**q, "clip_search": True}}]
    rot = {"rotate": {}}  # Hadamard residual + per-head value rotation, norms folded, head untied
    v["rotate"] = [rot]  # no quantization: the cost of the bf16 rounding of the rotated weights
    for tag, g in INT4.items():
        q = {"bits": 4, "group_size": g, "symmetric": False}
        v[f"rotate-rtn-{tag}"] = [rot, {"rtn": q}]
        v[f"rotate-rtn-mse-{tag}"] = [rot, {"rtn": {**q, "clip_search": True}}]
        v[f"rotate-gptq-{tag}"] = [rot, {"gptq": q}]
        v[f"rotate-gptq-mse-{tag}"] = [rot, {"gptq": {**q, "clip_search": True}}]
        v[f"rotate-awq-gptq-mse-{tag}"] = [rot, {"awq": q}, {"gptq": {**q, "clip_search": True}}]
        v[f"rotate-gptq-mse-int8head-{tag}"] = [rot, {"gptq": {**q, "clip_search": True}},
                                                {"rtn": {"bits": 8, "targets": ["lm_head"], "ignore": []}}]
    for g in (64, 128):
        v[f"rotate-gptq-mse-int3-g{g}"] = [rot, {"gptq": {"bits": 3, "group_size": g, "symmetric": False, "clip_search": True}}]
    q = {"bits": 4, "group_size": -1, "symmetric": False}
    v["rotate-noheads-rtn-pc"] = [{"rotate": {"heads": False}}, {"rtn": q}]
    v["rotate-random-rtn-pc"] = [{"rotate": {"kind": "random"}}, {"rtn": q}]
    # SmolLM2's massive residual channels (largest share of the normalized inputs' energy) left in place
    for kt, keep in (("keep1", [507]), ("keep3", [17, 247, 507]), ("keep7", [17, 199, 230, 247, 260, 308, 507])):
        k = {"rotate": {"keep": keep}}
        v[f"rotate-{kt}"] = [k]
        for tag, g in INT4.items():
            q = {"bits": 4, "group_size": g, "symmetric": False}
            v[f"rotate-{kt}-rtn-{tag}"] = [k, {"rtn": q}]
            v[f"rotate-{kt}-gptq-{tag}"] = [k, {"gptq": q}]
            v[f"rotate-{kt}-gptq-mse-{tag}"] = [k, {"gptq": {**q, "clip_search": True}}]
    return v


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--calib-seq", type=int, default=512)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--signround-iters", type=int, default=200)
    ap.add_argument("--signround-batch", type=int, default=4)
    ap.add_argument("--baseline", action="store_true")
    ap.add_argument("--save", default=None, help="also write the checkpoint of the first variant here (size check)")
    ap.add_argument("--out", default="benchmarks/results/quant_smollm2_cpu.jsonl")
    a = ap.parse_args()
    base = str(compress.fetch_smollm2())
    ev = {"perplexity": {"source": "wikitext2-test", "seq_len": 2048, "max_windows": a.windows}, "baseline": a.baseline}
    cal = {"source": "wikitext2-valid", "samples": a.samples, "seq_len": a.calib_seq, "seed": 0}
    table = variants({"iters": a.signround_iters, "batch": a.signround_batch})
    for name in a.only or list(table):
        passes = table[name]
        t0 = time.perf_counter()
        res = compress.run({"calibration": cal, "passes": passes, "evaluate": ev}, base, device="cpu", progress=False,
                           out=a.save, force=True)
        row = {"variant": name, "ppl": res.report["perplexity_after"]["perplexity"], "windows": a.windows,
               "seq_len": 2048, "calibration": cal, "pass_seconds": {p["name"]: p["seconds"] for p in res.report["passes"]},
               "size": res.report["size"], "wall_s": round(time.perf_counter() - t0, 1)}
        if a.baseline:
            row["ppl_before"] = res.report["perplexity_before"]["perplexity"]
        print(json.dumps(row), flush=True)
        with Path(a.out).open("a") as f:
            f.write(json.dumps(row) + "\n")
        a.save = None
        a.baseline = False


if __name__ == "__main__":
    main()
