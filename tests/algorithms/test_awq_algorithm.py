from __future__ import annotations

import torch

from compress.algorithms.awq import awq_search, scales_for
from compress.algorithms.grid import QuantSpec
from compress.algorithms.rtn import rtn_quantize
from compress.algorithms.grid import dequantize


def test_scales_normalized_and_monotone():
    m = torch.tensor([0.5, 2.0, 8.0])
    s = scales_for(m, 0.5)
    # sqrt(m) = [0.707, 1.414, 2.828]; divided by sqrt(max·min) = sqrt(2): [0.5, 1, 2]
    assert torch.allclose(s, torch.tensor([0.5, 1.0, 2.0]), atol=1e-6)
    assert torch.allclose(scales_for(m, 0.0), torch.ones(3))


def test_salient_channels_are_protected():
    torch.manual_seed(0)
    spec = QuantSpec(4, 32, False)
    x = torch.randn(1024, 64)
    x[:, :4] *= 30  # four salient input channels, as in real LLM activations
    ws = [torch.randn(48, 64), torch.randn(16, 64)]
    res = awq_search(x, x.abs().mean(0), ws, spec, grid=10)
    # independent RTN loss: quantize the unscaled weights, dense reference outputs
    rtn = 0.0
    for w in ws:
        q, s, z = rtn_quantize(w, spec)
        rtn += float((x @ dequantize(q, s, z, spec).T - x @ w.T).pow(2).mean())
    assert abs(res.loss_rtn - rtn) / rtn < 1e-4
    assert res.alpha > 0 and res.loss < 0.7 * rtn
    # the reported loss is what the scales really give
    got = sum(float((x @ (dequantize(*rtn_quantize(w * res.scales, spec), spec) / res.scales).T - x @ w.T).pow(2).mean()) for w in ws)
    assert abs(got - res.loss) / res.loss < 1e-4
