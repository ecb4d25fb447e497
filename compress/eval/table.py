"""The bench report as a markdown table: one row per model, ratios to the base beside the values."""
from __future__ import annotations

from typing import Any

from compress.report import human_bytes, markdown_table


def _num(v: float | None, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def _ratio(r: dict[str, float], key: str) -> str:
    return f" ({r[key]:.2f}×)" if key in r else ""


def _q8(env: dict[str, Any]) -> str:
    """Which decode GEMVs took x rounded to int8 blocks (kernels/csrc/gemv_q8_cpu.c), when any did."""
    bits = env.get("gemv_q8") or []
    return f" (int{'/int'.join(map(str, bits))} GEMVs on int8 activations)" if bits else ""


def bench_table(report: dict[str, Any]) -> str:
    """Markdown table of a `benchmark` report, with the environment line under it."""
    rows_in = report["results"]
    prefill = list(rows_in[0].get("prefill_ms", {}))
    batches = list(rows_in[0].get("decode_tokens_per_s", {}))
    header = ["model", "perplexity", "size", "memory"] + [f"prefill {n} ms" for n in prefill] + \
        [f"decode b{b} tok/s" for b in batches] + ["peak mem"]
    rows = []
    for i, r in enumerate(rows_in):
        q = r.get("ratios", {})
        name = r["name"] + (" (base)" if i == 0 else "") + (" [random weights]" if r.get("random_weights") else "")
        cells = [name, _num(r.get("perplexity"), ".3f") + (_ratio(q, "perplexity") if i else ""),
                 (human_bytes(r["size_bytes"]) if r.get("size_bytes") else "—") + (_ratio(q, "size_bytes") if i else ""),
                 human_bytes(r["memory_bytes"]) + (_ratio(q, "memory_bytes") if i else "")]
        cells += [_num(r["prefill_ms"][n]["median"], ".1f") + (_ratio(q, f"prefill_ms:{n}") if i else "") for n in prefill]
        cells += [_num(r["decode_tokens_per_s"][b]["median"], ".1f") + (_ratio(q, f"decode_tokens_per_s:{b}") if i else "")
                  for b in batches]
        cells.append(human_bytes(r["peak_memory_bytes"]) if r.get("peak_memory_bytes") else "—")
        rows.append(cells)
    e, s = report["env"], report.get("settings", {})
    ppl = f"perplexity: {s.get('data')}, seq_len {s.get('seq_len')}, " + \
        (f"first {s['max_windows']} windows" if s.get("max_windows") else "all windows")
    env = (f"{e['label']}: {e['device_name']}, {e['dtype']}, torch {e['torch']}, transformers {e['transformers']}; "
           f"decode {e['decode_mode']}{_q8(e)}, prompt {s.get('prompt_len')} + {s.get('new_tokens')} tokens; "
           f"median of {e['repeats']} after {e['warmup']} warmup; {ppl}")
    return markdown_table(header, rows) + "\n" + env
