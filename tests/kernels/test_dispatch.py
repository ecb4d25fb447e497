"""Every format through `quant_linear` (whatever kernel dispatch picks on this CPU) against dense math."""
from __future__ import annotations

import pytest
import torch

from compress.algorithms.grid import QuantSpec
from compress.kernels.dispatch import choose_kernel, quant_linear
from tests.kernels.quantized import make, reference, rel_err

SPECS = [QuantSpec(8, -1, True), QuantSpec(8, 64, False), QuantSpec(4, 32, False), QuantSpec(4, 128, True),
         QuantSpec(4, -1, False)]


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("m", [1, 7, 16, 17, 512])
@pytest.mark.parametrize("nk", [(64, 576), (24, 80)])  # SmolLM2's K=576 (not a multiple of 128); odd tiny shapes
def test_matches_dequantized_reference(spec, m, nk):
    mod = make(spec, *nk)
    x = torch.randn(m, nk[1])
    assert rel_err(quant_linear(x, mod), reference(x, mod)) < 1e-5


def test_dispatch_choices_on_cpu():
    cpu = torch.device("cpu")
    int8, int4 = make(QuantSpec(8, -1, True), 64, 576), make(QuantSpec(4, 64, False), 64, 576)
    assert choose_kernel(cpu, 1, int8) == "int8pack_cpu" and choose_kernel(cpu, 17, int8) == "dequant"
    assert choose_kernel(cpu, 1, int4) == "int4pack_cpu" and choose_kernel(cpu, 512, int4) == "dequant"
    assert choose_kernel(cpu, 16, int4, torch.bfloat16) == "int4pack_cpu"
    odd = make(QuantSpec(4, 64, False), 32, 80)  # K=80 padded to 128: group 64 tiles it
    assert choose_kernel(cpu, 1, odd) == "int4pack_cpu"
    assert choose_kernel(cpu, 1, make(QuantSpec(4, 64, False), 24, 64)) == "dequant"  # N not a multiple of 16


def test_batched_input_and_bias():
    mod = make(QuantSpec(4, 32, False), 32, 64)
    x = torch.randn(2, 3, 64)
    assert rel_err(quant_linear(x, mod), reference(x.reshape(6, 64), mod).reshape(2, 3, 32)) < 1e-5
