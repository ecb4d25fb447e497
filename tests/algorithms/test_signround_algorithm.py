"""SignRound's pieces: untuned it is RTN, its codes are what its forward computes, a signed step is a fixed step."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from compress.algorithms.grid import QuantSpec, dequantize
from compress.algorithms.rtn import rtn_quantize
from compress.algorithms.signround import SignRoundLinear, sign_step

SPECS = [QuantSpec(4, 32, False), QuantSpec(4, 32, True), QuantSpec(4, -1, False), QuantSpec(8, -1, True)]


def linear(n: int = 24, k: int = 96, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(k, n)
    lin.weight.data = torch.randn(n, k)
    return lin


@pytest.mark.parametrize("spec", SPECS)
def test_untuned_it_is_round_to_nearest(spec):
    lin = linear()
    codes, scale, zero = SignRoundLinear(lin, spec).codes()
    want = rtn_quantize(lin.weight, spec)
    assert torch.equal(codes, want[0]) and torch.allclose(scale, want[1]) and torch.equal(zero, want[2])


@pytest.mark.parametrize("spec", SPECS)
def test_codes_are_what_the_forward_computes(spec):
    """After moving v, α, β off their start, the packed codes dequantize to exactly the forward's weight."""
    lin = linear(seed=1)
    mod = SignRoundLinear(lin, spec, min_range=0.6)
    with torch.no_grad():
        mod.v.uniform_(-0.5, 0.5)
        mod.alpha.uniform_(0.6, 1.0)
        mod.beta.uniform_(0.6, 1.0)
    codes, scale, zero = mod.codes()
    w = dequantize(codes, scale, zero, spec)[:, :96]
    assert torch.allclose(mod.weight(), w, atol=1e-6)
    moved = (codes != rtn_quantize(lin.weight, spec)[0]).float().mean()
    assert moved > 0.05  # the offsets really change the rounding
    x = torch.randn(5, 96)
    assert torch.allclose(mod(x), x @ w.T + lin.bias, atol=1e-4)


def test_gradients_reach_offsets_and_range_factors():
    mod = SignRoundLinear(linear(), QuantSpec(4, 32, False))
    mod(torch.randn(7, 96)).pow(2).sum().backward()
    for p in (mod.v, mod.alpha, mod.beta):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_sign_step_moves_each_value_by_the_step_and_clamp_keeps_the_intervals():
    mod = SignRoundLinear(linear(), QuantSpec(4, 32, False), min_range=0.5)
    mod.v.grad = torch.randn_like(mod.v)
    mod.alpha.grad = -torch.ones_like(mod.alpha)  # would push α above 1
    mod.beta.grad = torch.ones_like(mod.beta)
    sign = mod.v.grad.sign()
    sign_step([mod.v, mod.alpha, mod.beta], 0.1)
    assert torch.allclose(mod.v, -0.1 * sign) and mod.v.grad is None
    mod.clamp_()
    assert torch.all(mod.alpha == 1.0) and torch.allclose(mod.beta, torch.full_like(mod.beta, 0.9))
    for _ in range(10):
        mod.v.grad = torch.ones_like(mod.v)
        mod.beta.grad = torch.ones_like(mod.beta)
        sign_step([mod.v, mod.beta], 0.1)
        mod.clamp_()
    assert torch.all(mod.v == -0.5) and torch.all(mod.beta == 0.5)
