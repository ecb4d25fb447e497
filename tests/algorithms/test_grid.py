from __future__ import annotations

import pytest
import torch

from compress.algorithms.grid import QuantSpec, compute_qparams, dequantize, fake_quantize, pad_columns, quantize


@pytest.mark.parametrize("bits, group, sym", [(8, -1, True), (8, 64, False), (4, 32, True), (4, 64, False), (4, -1, False)])
def test_codes_stay_on_grid_and_error_is_bounded(bits, group, sym):
    torch.manual_seed(0)
    w = torch.randn(24, 128)
    spec = QuantSpec(bits, group, sym)
    s, z = compute_qparams(w, spec)
    q = quantize(w, s, z, spec)
    assert q.dtype == torch.uint8 and int(q.max()) <= 2**bits - 1
    err = (dequantize(q, s, z, spec) - w).abs()
    g = spec.group_for(128)
    # rounding error is at most half a step: the symmetric 4-bit grid's top code is 7·s for |w| ≤ 7.5·s, so
    # clipping costs at most half a step too
    step = s.repeat_interleave(g, dim=1)
    assert bool((err <= step * 0.5 * (1 + 1e-5) + 1e-7).all())


def test_values_on_the_grid_are_exact():
    spec = QuantSpec(4, 32, False)
    torch.manual_seed(1)
    q = torch.randint(0, 16, (8, 64), dtype=torch.uint8)
    q[:, 0], q[:, 32] = 0, 0
    q[:, 1], q[:, 33] = 15, 15
    scale = torch.rand(8, 2) + 0.1
    zero = torch.randint(0, 16, (8, 2)).float()
    w = dequantize(q, scale, zero, spec)
    assert torch.allclose(fake_quantize(w, spec), w, atol=1e-5)


def test_more_bits_and_smaller_groups_mean_less_error():
    torch.manual_seed(0)
    w = torch.randn(64, 256) * torch.linspace(0.1, 3, 256)  # uneven columns make groups matter
    err = lambda spec: (fake_quantize(w, spec) - w).pow(2).mean().item()  # noqa: E731
    assert err(QuantSpec(8, -1, True)) < err(QuantSpec(4, 64, False)) < err(QuantSpec(4, -1, False))


def test_padding_keeps_columns_and_groups():
    spec = QuantSpec(4, 128, False)
    assert spec.padded_in(576) == 640 and spec.padded_in(1536) == 1536
    w = torch.randn(4, 576)
    assert pad_columns(w, 640).shape == (4, 640) and pad_columns(w, 640)[:, 576:].abs().sum() == 0
    assert fake_quantize(w, spec).shape == (4, 576)
