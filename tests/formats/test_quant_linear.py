from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from compress.algorithms.grid import QuantSpec
from compress.algorithms.rtn import rtn_quantize
from compress.formats.quant_linear import QuantLinear, pack_codes, unpack_codes
from compress.kernels.dispatch import dequant_linear


@pytest.mark.parametrize("bits", [4, 8])
def test_pack_unpack_is_exact(bits):
    q = torch.randint(0, 2**bits, (5, 64), dtype=torch.uint8)
    packed = pack_codes(q, bits)
    assert packed.numel() == q.numel() * bits // 8
    assert torch.equal(unpack_codes(packed, bits), q)


def make(bits: int, group: int, sym: bool, n: int = 48, k: int = 96, bias: bool = True) -> tuple[QuantLinear, torch.Tensor]:
    torch.manual_seed(0)
    lin = torch.nn.Linear(k, n, bias=bias)
    spec = QuantSpec(bits, group, sym)
    q, s, z = rtn_quantize(lin.weight, spec)
    return QuantLinear.from_codes(q, s, z, spec, k, lin.bias, torch.float32), lin.weight.detach()


@pytest.mark.parametrize("bits, group, sym", [(8, -1, True), (8, -1, False), (8, 32, True), (4, 32, False), (4, -1, True), (4, 64, False)])
@pytest.mark.parametrize("m", [1, 7, 16, 17, 512])
def test_forward_matches_dequantized_reference(bits, group, sym, m):
    mod, _ = make(bits, group, sym)
    x = torch.randn(m, 96)
    ref = F.linear(x.double(), mod.dense_weight().double(), mod.bias.double()).float()
    assert torch.allclose(mod(x), ref, atol=1e-4, rtol=1e-4)
    assert torch.allclose(dequant_linear(x, mod), ref, atol=1e-4, rtol=1e-4)


def test_storage_is_really_packed():
    mod8, w = make(8, -1, True, bias=False)
    mod4, _ = make(4, 32, False, bias=False)
    assert mod8.qweight.dtype == torch.int8 and mod8.qweight.shape == (48, 96)
    assert mod4.qweight.dtype == torch.uint8 and mod4.qweight.shape == (48, 48)
    assert "weight" not in dict(mod8.named_parameters()) and "weight" not in mod4.state_dict()
    assert (mod8.dense_weight() - w).abs().max() < w.abs().max() / 100


def test_non_multiple_of_group_is_padded():
    mod, w = make(4, 64, False, n=8, k=80)  # 80 = 64 + 16: two groups, the second padded
    assert mod.scales.shape == (8, 2) and mod.qweight.shape == (8, 64)
    assert mod.dense_weight().shape == w.shape
    x = torch.randn(3, 80)
    assert mod(x).shape == (3, 8)


def test_batched_3d_input():
    mod, _ = make(8, -1, True)
    x = torch.randn(2, 5, 96)
    assert torch.allclose(mod(x), torch.stack([mod(x[0]), mod(x[1])]), atol=1e-5)
