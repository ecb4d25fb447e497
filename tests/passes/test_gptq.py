"""The `gptq` pass on a tiny Llama: packed modules, the driver feeds the right Hessians, quality vs RTN."""
from __future__ import annotations

import pytest
import torch

import compress
from compress.algorithms.gptq import gptq_quantize
from compress.algorithms.grid import QuantSpec
from compress.errors import CompressError
from compress.formats.quant_linear import QuantLinear
from compress.layerwise import capture_inputs
from tests.conftest import make_model

CAL = {"samples": 8, "seq_len": 32, "seed": 0}


def run(passes, model, tokenizer, text_file, **kw):
    recipe = {"calibration": {"source": str(text_file), **CAL}, "passes": passes}
    return compress.run(recipe, model, tokenizer=tokenizer, device="cpu", progress=False, **kw)


def held_out_error(model, reference, tokenizer) -> float:
    """Mean squared logit error vs the dense model on held-out text."""
    ids = torch.tensor([tokenizer("Compression makes models smaller. The lazy dog jumps over the fox.")["input_ids"] * 3])
    with torch.no_grad():
        return float((model(ids).logits - reference(ids).logits).pow(2).mean())


def test_layer0_q_proj_equals_gptq_on_captured_inputs(tokenizer, text_file):
    # Independent route to the same codes: capture layer-0 inputs ourselves, build H = 2/n XᵀX.
    model = make_model()
    res = run([{"gptq": {"bits": 4, "group_size": 32}}], model, tokenizer, text_file)
    from compress.context import Context
    from compress.recipe import CalibrationConfig

    ids = Context(tokenizer, torch.device("cpu"), CalibrationConfig(source=str(text_file), **CAL)).calibration()
    fresh = make_model()
    inputs, _ = capture_inputs(fresh, ids, torch.device("cpu"))
    with torch.no_grad():
        x = torch.cat([fresh.model.layers[0].input_layernorm(h).reshape(-1, 64) for h in inputs])
    H = 2 * x.T @ x / x.shape[0]
    ref = gptq_quantize(fresh.model.layers[0].self_attn.q_proj.weight, H, QuantSpec(4, 32, False), act_order=True)
    got = res.model.model.layers[0].self_attn.q_proj
    assert isinstance(got, QuantLinear)
    assert (got.codes() != ref.codes).float().mean() < 0.01  # float-order differences only


@pytest.mark.parametrize("q", [{"bits": 4, "group_size": 32}, {"bits": 4, "group_size": -1}, {"bits": 8, "group_size": -1, "symmetric": True},
                               {"bits": 3, "group_size": 32}])
def test_beats_rtn_and_stores_packed(q, tokenizer, text_file):
    ref = make_model()
    g = run([{"gptq": q}], make_model(), tokenizer, text_file).model
    r = run([{"rtn": {"symmetric": False, **q}}], make_model(), tokenizer, text_file).model
    mods = [m for m in g.modules() if isinstance(m, QuantLinear)]
    assert len(mods) == 14 and all(m.qspec.bits == q["bits"] for m in mods)
    assert all(m.qweight.dtype == (torch.int8 if q["bits"] == 8 else torch.uint8) for m in mods)
    assert held_out_error(g, ref, tokenizer) < held_out_error(r, ref, tokenizer)


def test_mixed_precision_and_checkpoint_roundtrip(tokenizer, text_file, tmp_path):
    passes = [{"gptq": {"bits": 4, "group_size": 32, "ignore": ["lm_head", "*.down_proj"]}},
              {"gptq": {"bits": 8, "group_size": -1, "symmetric": True, "targets": ["*.down_proj"]}}]
    res = run(passes, make_model(), tokenizer, text_file, out=tmp_path / "ck")
    layer = res.model.model.layers[1]
    assert layer.mlp.down_proj.qspec.bits == 8 and layer.mlp.up_proj.qspec.bits == 4
    loaded = compress.load(tmp_path / "ck", device="cpu", dtype=torch.float32)
    ids = torch.randint(0, 300, (1, 20))
    with torch.no_grad():
        assert torch.equal(res.model(ids).logits, loaded(ids).logits)


def test_bad_options_are_one_line_errors(tokenizer, text_file):
    with pytest.raises(CompressError, match="gptq.*bits"):
        run([{"gptq": {"bits": 5}}], make_model(), tokenizer, text_file)
    with pytest.raises(CompressError, match="damp"):
        run([{"gptq": {"damp": 2.0}}], make_model(), tokenizer, text_file)
    with pytest.raises(CompressError, match="matches no module"):
        run([{"gptq": {"targets": ["*.nonexistent"]}}], make_model(), tokenizer, text_file)
