"""`prune_structured`: units whose outgoing weights are zero are the ones removed (by every
importance), so the smaller model computes exactly what the crafted dense one did; plain
transformers loads uniform results; per-layer widths load through compress.load."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import compress
from conftest import make_model

IDS = torch.randint(0, 300, (1, 12), generator=torch.Generator().manual_seed(0))
DEAD_CHANNELS = torch.arange(3, 160, 4)  # 40 of 160


def crafted(layers: int = 2):
    """A tiny Llama whose DEAD_CHANNELS, query heads 1 and 2, contribute nothing."""
    m = make_model(layers=layers)
    with torch.no_grad():
        for layer in m.model.layers:
            layer.mlp.down_proj.weight[:, DEAD_CHANNELS] = 0
            layer.self_attn.o_proj.weight[:, 16:48] = 0
    return m


def run(model, tokenizer, text_file, out=None, **opts):
    recipe = {"calibration": {"source": str(text_file), "samples": 2, "seq_len": 16}, "passes": [{"prune_structured": opts}]}
    return compress.run(recipe, model, tokenizer=tokenizer, out=out, progress=False)


@pytest.mark.parametrize("importance", ["magnitude", "activation", "taylor"])
def test_removes_the_dead_units_and_keeps_the_function(importance, tokenizer, text_file):
    model = crafted()
    with torch.no_grad():
        want = model(IDS).logits
    res = run(model, tokenizer, text_file, ffn_sparsity=0.25, head_sparsity=0.5, gqa="heads", importance=importance)
    m = res.model
    for layer in m.model.layers:
        assert layer.mlp.gate_proj.weight.shape == (120, 64) and layer.mlp.down_proj.weight.shape == (64, 120)
        assert layer.self_attn.q_proj.weight.shape == (32, 64) and layer.self_attn.k_proj.weight.shape == (32, 64)
        assert layer.self_attn.num_key_value_groups == 1
    assert (m.config.intermediate_size, m.config.num_attention_heads, m.config.num_key_value_heads) == (120, 2, 2)
    with torch.no_grad():
        assert torch.allclose(m(IDS).logits, want, atol=1e-5)
    p = res.report["passes"][0]
    assert p["params_before"] - p["params_after"] == 2 * (3 * 64 * 40 + 2 * 64 * 32)


def test_plain_transformers_loads_the_result(tmp_path, tokenizer, text_file):
    model = crafted()
    res = run(model, tokenizer, text_file, tmp_path / "ck", ffn_sparsity=0.25, head_sparsity=0.5, gqa="groups")
    with torch.no_grad():
        want = res.model(IDS).logits
    torch.save(IDS, tmp_path / "ids.pt")
    code = (f"import sys, torch; from transformers import AutoModelForCausalLM\n"
            f"m = AutoModelForCausalLM.from_pretrained({str(tmp_path / 'ck')!r}, dtype=torch.float32).eval()\n"
            f"assert not any(k.startswith('compress') for k in sys.modules)\n"
            f"torch.save(m(torch.load({str(tmp_path / 'ids.pt')!r})).logits.detach(), {str(tmp_path / 'out.pt')!r})\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    assert torch.allclose(torch.load(tmp_path / "out.pt"), want, atol=1e-5)
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (2, 1, 16)


def test_drop_layers_by_block_influence(tokenizer, text_file):
    model = make_model(layers=3)
    with torch.no_grad():
        model.model.layers[1].self_attn.o_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.weight.zero_()  # layer 1 is now the identity
        want = model(IDS).logits
    res = run(model, tokenizer, text_file, drop_layers=1)
    assert res.report["passes"][0]["dropped_layers"] == [1]
    assert res.report["passes"][0]["block_influence"][1] == pytest.approx(0.0, abs=1e-6)
    assert res.model.config.num_hidden_layers == 2
    assert [l.self_attn.layer_idx for l in res.model.model.layers] == [0, 1]
    with torch.no_grad():
        assert torch.allclose(res.model(IDS).logits, want, atol=1e-5)


def test_drop_layer_list_and_per_layer_widths_load_through_compress(tmp_path, tokenizer, text_file):
    model = make_model(layers=3)
    res = run(model, tokenizer, text_file, tmp_path / "ck", drop_layers=[0], ffn_sparsity=0.4, ffn_scope="global")
    widths = [l.mlp.down_proj.in_features for l in res.model.model.layers]
    assert len(widths) == 2 and sum(widths) == 2 * 160 - round(0.4 * 320)
    manifest = json.loads((tmp_path / "ck" / "compress.json").read_text())
    assert len(set(widths)) > 1  # global scope on a random model: the layers keep different widths
    assert manifest["shapes"]["model.layers.0.mlp.down_proj"] == [64, widths[0]]
    loaded = compress.load(tmp_path / "ck", device="cpu", dtype=torch.float32)
    assert [l.mlp.down_proj.in_features for l in loaded.model.layers] == widths
    with torch.no_grad():
        assert torch.allclose(loaded(IDS).logits, res.model(IDS).logits, atol=1e-6)


@pytest.mark.parametrize("opts,needle", [
    ({"drop_layers": [2]}, "drop_layers"),
    ({"drop_layers": 2}, "drop_layers"),
    ({}, "nothing to prune"),
    ({"ffn_sparsity": 0.2, "targets": ["*.mlp.gate*"]}, "targets pattern"),
])
def test_user_errors(opts, needle, tiny_model, tokenizer, text_file):
    with pytest.raises(compress.CompressError, match=needle) as e:
        run(tiny_model, tokenizer, text_file, **opts)
    assert "\n" not in str(e.value)


def test_refuses_packed_modules(tiny_model, tokenizer, text_file):
    recipe = {"calibration": {"source": str(text_file), "samples": 2, "seq_len": 16},
              "passes": [{"magnitude": {"sparsity": 0.5}}, {"prune_structured": {"ffn_sparsity": 0.25}}]}
    with pytest.raises(compress.CompressError, match="before pruning or quantization"):
        compress.run(recipe, tiny_model, tokenizer=tokenizer, progress=False)
