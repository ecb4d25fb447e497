from __future__ import annotations

import pytest
import torch

from compress.algorithms.grid import QuantSpec
from compress.algorithms.rtn import rtn_quantize
from compress.formats.quant_linear import QuantLinear, pack_codes, unpack_codes
from compress.kernels.dispatch import dequant_linear
from tests.kernels.quantized import build, check


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_pack_unpack_is_exact(bits):
    q = torch.randint(0, 2**bits, (5, 64), dtype=torch.uint8)
    packed = pack_codes(q, bits)
    assert packed.numel() == q.numel() * bits // 8
    assert torch.equal(unpack_codes(packed, bits), q)


def test_int3_byte_layout_by_hand():
    """Eight codes → one 24-bit little-endian word, code i at bits 3i..3i+2 (computed here with Python ints)."""
    codes = [5, 0, 7, 3, 1, 6, 2, 4]
    word = sum(c << (3 * i) for i, c in enumerate(codes))
    want = [word & 0xFF, (word >> 8) & 0xFF, word >> 16]
    got = pack_codes(torch.tensor([codes, codes[::-1]], dtype=torch.uint8), 3)
    assert got[0].tolist() == want and got.shape == (2, 3)
    assert unpack_codes(got, 3)[1].tolist() == codes[::-1]


def make(bits: int, group: int, sym: bool, n: int = 48, k: int = 96, bias: bool = True) -> tuple[QuantLinear, torch.Tensor]:
    torch.manual_seed(0)
    lin = torch.nn.Linear(k, n, bias=bias)
    spec = QuantSpec(bits, group, sym)
    q, s, z = rtn_quantize(lin.weight, spec)
    return QuantLinear.from_codes(q, s, z, spec, k, lin.bias, torch.float32), lin.weight.detach()


@pytest.mark.parametrize("bits, group, sym", [(8, -1, True), (8, -1, False), (8, 32, True), (4, 32, False), (4, -1, True),
                                             (4, 64, False), (3, 32, False), (3, 64, True), (3, -1, False)])
@pytest.mark.parametrize("m", [1, 7, 16, 17, 512])
def test_forward_matches_the_unquantized_matmul(bits, group, sym, m):
    case = build(QuantSpec(bits, group, sym), 48, 96)
    x = torch.randn(m, 96, generator=torch.Generator().manual_seed(m))
    check(case.mod(x), x, case)  # whichever kernel dispatch picks (bf16 int kernels at small M)
    check(dequant_linear(x, case.mod), x, case, eps=1e-6)


def test_storage_is_really_packed():
    mod8, w = make(8, -1, True, bias=False)
    mod4, _ = make(4, 32, False, bias=False)
    assert mod8.qweight.dtype == torch.int8 and mod8.qweight.shape == (48, 96)
    assert mod4.qweight.dtype == torch.uint8 and mod4.qweight.shape == (48, 48)
    mod3, _ = make(3, 32, False, bias=False)
    assert mod3.qweight.dtype == torch.uint8 and mod3.qweight.shape == (48, 36)  # 96 codes in 36 bytes
    assert "weight" not in dict(mod8.named_parameters()) and "weight" not in mod4.state_dict()
    assert (mod8.dense_weight() - w).abs().max() < w.abs().max() / 100


def test_non_multiple_of_group_is_padded():
    case = build(QuantSpec(4, 64, False), 16, 80)  # 80 = 64 + 16: two groups, the second padded
    assert case.mod.scales.shape == (16, 2) and case.mod.qweight.shape == (16, 64)
    assert case.mod.dense_weight().shape == case.w.shape
    x = torch.randn(3, 80)
    check(case.mod(x), x, case)


def test_batched_3d_input():
    mod, _ = make(8, -1, True)
    x = torch.randn(2, 5, 96)
    assert torch.allclose(mod(x), torch.stack([mod(x[0]), mod(x[1])]), atol=1e-5)


@pytest.mark.parametrize("spec", [QuantSpec(4, -1, False), QuantSpec(4, -1, True), QuantSpec(8, -1, True), QuantSpec(4, 32, False),
                                  QuantSpec(3, -1, False), QuantSpec(3, 32, True)], ids=str)
def test_odd_k_after_pruning_packs_and_runs(spec):
    """K = 55 (structured pruning with round_to 1): int4 per channel pads one zero column; every path stays right."""
    case = build(spec, 16, 55)
    assert case.mod.dense_weight().shape == (16, 55)
    for m in (1, 100):
        x = torch.randn(m, 55)
        check(case.mod(x), x, case)
        check(dequant_linear(x, case.mod), x, case, eps=1e-6)
