"""The CPU target on the real SmolLM2-135M: 4 layers dropped (22–25), 30 distillation steps of 4×256
tokens from the original model; perplexity (WikiText-2 test, seq 2048, 4 windows) clearly improves."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import compress
from compress.eval.perplexity import perplexity
from compress.models import load_model

pytestmark = pytest.mark.slow

DROP = [22, 23, 24, 25]
UNSEEN = Path("/usr/share/common-licenses/GPL-3")  # a text distillation never saw, beside WikiText


def drop_layers(model, drop: list[int]) -> None:
    for i in sorted(drop, reverse=True):
        del model.model.layers[i]
    model.config.num_hidden_layers = len(model.model.layers)
    for j, layer in enumerate(model.model.layers):
        layer.self_attn.layer_idx = j


def test_cpu_target_depth_pruned_smollm2_recovers(tmp_path):
    path = compress.fetch_smollm2()
    student, tok = load_model(str(path), device=None, dtype=None)
    drop_layers(student, DROP)
    ppl = lambda m, src, n: perplexity(m, tok, src, 2048, n, progress=False)["perplexity"]  # noqa: E731
    before = ppl(student, "wikitext2-test", 4)
    before_unseen = ppl(student, str(UNSEEN), 2) if UNSEEN.is_file() else None
    recipe = {"passes": [{"distill": {"teacher": str(path), "data": "wikitext2-valid", "steps": 30, "seq_len": 256,
                                      "batch_size": 4, "lr": 2e-4, "warmup_steps": 3, "eval_windows": 4,
                                      "state_dir": str(tmp_path / "state")}}]}
    t0 = time.perf_counter()
    res = compress.run(recipe, student, tokenizer=tok, device="cpu", progress=True)
    wall = time.perf_counter() - t0
    after = ppl(res.model, "wikitext2-test", 4)
    after_unseen = ppl(res.model, str(UNSEEN), 2) if UNSEEN.is_file() else None
    figures = {"dropped": DROP, "ppl_before": before, "ppl_after": after, "unseen_before": before_unseen,
               "unseen_after": after_unseen, "distill_seconds": round(wall, 1), "stats": res.report["passes"][0]}
    print(json.dumps(figures, indent=1, default=str))
    assert after < 0.8 * before
