"""The `rtn` pass with MSE clip search: packed, and closer to the dense model than min/max ranges."""
from __future__ import annotations

import compress
from compress.algorithms.grid import dequantize
from compress.formats.quant_linear import QuantLinear
from tests.conftest import make_model


def weight_error(model, ref) -> float:
    err = 0.0
    for name, m in model.named_modules():
        if isinstance(m, QuantLinear):
            w = ref.get_submodule(name).weight.detach()
            deq = dequantize(m.codes(), m.scales, m.zero_points(), m.qspec)[:, : m.in_features]
            err += float((deq - w).pow(2).sum())
    return err


def test_clip_search_lowers_weight_error(tokenizer):
    ref = make_model()
    runs = {c: compress.run({"passes": [{"rtn": {"bits": 4, "group_size": -1, "clip_search": c}}]}, make_model(),
                            tokenizer=tokenizer, device="cpu", progress=False).model for c in (False, True)}
    assert weight_error(runs[True], ref) < 0.95 * weight_error(runs[False], ref)
    assert isinstance(runs[True].model.layers[0].mlp.up_proj, QuantLinear)
