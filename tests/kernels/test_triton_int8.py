"""The Triton int8 kernel against fp64 x·Wᵀ of the original and the quantized weight; without a GPU through TRITON_INTERPRET=1.

Triton reads TRITON_INTERPRET when its own library functions are decorated (at import), so on a
CPU the cases run in one fresh interpreter-mode subprocess and each test checks its own result.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from compress.algorithms.grid import QuantSpec  # noqa: E402

SPECS = [QuantSpec(8, -1, True), QuantSpec(8, -1, False), QuantSpec(8, 32, False), QuantSpec(8, 128, True)]
MS = [1, 7, 16, 17, 512]
SHAPES = [(72, 576), (24, 80)]
# M=512 only on the small shape: the interpreter runs every program in numpy
CASES = [(s, m, nk) for s in SPECS for m in MS for nk in SHAPES if m < 512 or nk == SHAPES[1]]
ROOT = Path(__file__).resolve().parents[2]


def errors(device: str) -> list[str]:
    """For every case, "" or why int8_triton missed fp64 x·Wᵀ of the original and of the quantized weight."""
    from compress.kernels.triton_int8 import int8_triton
    from tests.kernels.quantized import BF16_EPS, build, check

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    eps = BF16_EPS if device == "cuda" else 1e-6  # the interpreter computes in fp32 (TF32 is a CUDA matter)
    out = []
    for spec, m, (n, k) in CASES:
        case = build(spec, n, k, bias=False)
        x = torch.randn(m, k, device=device, dtype=dtype, generator=torch.Generator(device).manual_seed(m))
        try:
            check(int8_triton(x, case.mod.to(device)).cpu(), x.float().cpu(), case, eps)
            out.append("")
        except AssertionError as e:
            out.append(str(e))
    return out


@pytest.fixture(scope="module")
def results() -> list[str]:
    if torch.cuda.is_available():
        return errors("cuda")
    code = "import json, tests.kernels.test_triton_int8 as t; print(json.dumps(t.errors('cpu')))"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{s}-m{m}-{n}x{k}" for s, m, (n, k) in CASES])
def test_matches_unquantized_and_quantized_matmul(results, case):
    assert results[case] == ""
