"""The `awq` pass: the model function is unchanged by the scaling; awq + rtn beats rtn alone."""
from __future__ import annotations

import torch

import compress
from compress.formats.quant_linear import QuantLinear
from compress.passes.awq import fold_scales
from tests.conftest import make_model
from tests.passes.test_gptq import CAL, held_out_error


def salient_model():
    """A tiny Llama whose norms amplify a few channels, like the outlier channels of real LLMs."""
    m = make_model()
    with torch.no_grad():
        for layer in m.model.layers:
            layer.input_layernorm.weight[:3] = 25.0
            layer.post_attention_layernorm.weight[:3] = 25.0
    return m


def run(passes, model, tokenizer, text_file):
    recipe = {"calibration": {"source": str(text_file), **CAL}, "passes": passes}
    return compress.run(recipe, model, tokenizer=tokenizer, device="cpu", progress=False)


def test_fold_scales_keeps_the_function():
    norm = torch.nn.RMSNorm(8)
    lin = torch.nn.Linear(8, 4)
    x = torch.randn(5, 8)
    before = lin(norm(x))
    fold_scales(norm, [lin], torch.rand(8) + 0.5)
    assert torch.allclose(lin(norm(x)), before, atol=1e-5)
    up, down = torch.nn.Linear(8, 6), torch.nn.Linear(6, 3)
    before = down(up(x))
    fold_scales(up, [down], torch.rand(6) + 0.5)
    assert torch.allclose(down(up(x)), before, atol=1e-5)


def test_scaling_alone_preserves_logits(tokenizer, text_file):
    ref = salient_model()
    res = run([{"awq": {"group_size": 32}}], salient_model(), tokenizer, text_file)
    ids = torch.randint(0, 300, (2, 24))
    with torch.no_grad():
        assert torch.allclose(res.model(ids).logits, ref(ids).logits, atol=1e-4)
    changed = res.model.model.layers[0].input_layernorm.weight
    assert not torch.allclose(changed, ref.model.layers[0].input_layernorm.weight)  # scales were folded in
    assert res.report["passes"][0]["scaled_groups"] == 6  # 3 per layer (GQA: no v→o)
    assert not any(isinstance(m, QuantLinear) for m in res.model.modules())


def test_awq_then_rtn_beats_rtn(tokenizer, text_file):
    ref = salient_model()
    q = {"bits": 4, "group_size": 32, "symmetric": False}
    a = run([{"awq": q}, {"rtn": q}], salient_model(), tokenizer, text_file).model
    r = run([{"rtn": q}], salient_model(), tokenizer, text_file).model
    assert held_out_error(a, ref, tokenizer) < 0.9 * held_out_error(r, ref, tokenizer)
