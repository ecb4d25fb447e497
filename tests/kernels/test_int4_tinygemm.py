"""aten tinygemm int4 (CPU and CUDA) against the dequantized reference, odd shapes, M in {1,7,16,17,512}."""
from __future__ import annotations

import pytest
import torch

from compress.algorithms.grid import QuantSpec
from compress.formats.int4_layout import aten_cpu_layout_matches
from compress.kernels.int4_tinygemm import int4_tinygemm, scales_and_zeros, tinygemm_group
from tests.kernels.quantized import build, check, make

SPECS = [QuantSpec(4, 32, False), QuantSpec(4, 64, True), QuantSpec(4, 128, False), QuantSpec(4, 256, True), QuantSpec(4, -1, False)]
SHAPES = [(64, 576), (32, 80), (80, 64)]  # N = 80: a full 64-row block of the CPU layout and a partial one
MS = [1, 7, 16, 17, 512]


def test_group_and_zero_translation():
    mod = make(QuantSpec(4, -1, False), 16, 576)
    assert tinygemm_group(mod) == 64  # 576 = 9·64: the largest tinygemm group that tiles K
    sz = scales_and_zeros(mod, 64, torch.float32)
    assert sz.shape == (9, 16, 2)
    s, z = mod.scales[:, 0], mod.zeros[:, 0]
    assert torch.allclose(sz[3, :, 0], s) and torch.allclose(sz[3, :, 1], (8 - z) * s)
    # (q - 8)·s + zero_t reproduces (q - z)·s for every code
    q = torch.arange(16.0).unsqueeze(1)
    assert torch.allclose((q - 8) * s + sz[0, :, 1], (q - z) * s, atol=1e-6)


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("nk", SHAPES)
@pytest.mark.parametrize("m", MS)
def test_cpu_kernel_fp32_and_bf16_inputs(spec, nk, m):
    case = build(spec, *nk, bias=False)
    if tinygemm_group(case.mod) is None:  # per-channel K=80: no tinygemm group tiles it; it stays portable
        assert spec.group_size == -1 and nk[1] % 32 != 0 and case.mod.layout == "portable"
        return
    assert case.mod.layout == "cpu_int4"
    x = torch.randn(m, nk[1], generator=torch.Generator().manual_seed(m))
    y = int4_tinygemm(x, case.mod)
    if not aten_cpu_layout_matches():  # AVX2: aten reads other blocks; dispatch never calls it (test_dispatch)
        with pytest.raises(AssertionError):
            check(y, x, case)
        return
    assert y.dtype == torch.float32
    check(y, x, case)
    check(int4_tinygemm(x.bfloat16(), case.mod), x.bfloat16().float(), case)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("nk", SHAPES)
@pytest.mark.parametrize("m", MS)
def test_cuda_tinygemm(spec, nk, m):
    case = build(spec, *nk, bias=False)
    mod = case.mod.cuda()
    assert mod.layout == "cuda_tinygemm" and torch.equal(mod.codes().cpu(), case.mod.codes())
    x = torch.randn(m, nk[1], device="cuda", dtype=torch.bfloat16)
    check(int4_tinygemm(x, mod).cpu(), x.float().cpu(), case)
