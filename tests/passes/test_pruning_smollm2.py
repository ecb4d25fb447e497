"""End to end on SmolLM2-135M (slow): Wanda 2:4 beats magnitude 2:4; FFN-25% loads in plain transformers."""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

import compress
from compress.models import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    return load_model(str(compress.fetch_smollm2()), torch.device("cpu"), torch.float32)


def ppl(model, tok) -> float:
    return compress.evaluate(model, tok, seq_len=512, max_windows=2, progress=False)["perplexity"]


def test_wanda_two_four_beats_magnitude(smollm2):
    model, tok = smollm2
    calib = {"source": "wikitext2-valid", "samples": 4, "seq_len": 256}
    wd = compress.run({"calibration": calib, "passes": [{"wanda": {"pattern": "2:4"}}]}, copy.deepcopy(model), tokenizer=tok, progress=False)
    mg = compress.run({"passes": [{"magnitude": {"pattern": "2:4"}}]}, copy.deepcopy(model), tokenizer=tok, progress=False)
    assert wd.report["passes"][0]["sparsity"] >= 0.5
    p_base, p_wanda, p_mag = ppl(model, tok), ppl(wd.model, tok), ppl(mg.model, tok)
    assert p_base < p_wanda < p_mag / 3


def test_ffn25_is_a_plain_smaller_hf_model(smollm2, tmp_path):
    model, tok = smollm2
    res = compress.run({"passes": [{"prune_structured": {"ffn_sparsity": 0.25, "importance": "magnitude"}}]}, copy.deepcopy(model), tokenizer=tok,
                       out=tmp_path / "ffn25", progress=False)
    p = res.report["passes"][0]
    assert 0.14 < 1 - p["params_after"] / p["params_before"] < 0.16  # 30 × 3 × 576 × 384 of 134.5M
    code = (f"import sys, torch; from transformers import AutoModelForCausalLM\n"
            f"m = AutoModelForCausalLM.from_pretrained({str(tmp_path / 'ffn25')!r})\n"
            f"assert 'compress' not in sys.modules and m.config.intermediate_size == 1152\n"
            f"print(sum(p.numel() for p in m.parameters()))\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path)
    assert int(out.stdout.split()[-1]) == p["params_after"]
