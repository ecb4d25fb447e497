"""The decode GEMVs on int8 activations (`csrc/gemv_q8_cpu.c`): both builds against fp64 x̂ · Wᵀ, where x̂ is x
rounded to int8 blocks of 32 here, independently of the kernel, and W the planted weight (the int8 code −128
included); x with one large value per block, so that the rounding is visible (unrounded x misses the same
tolerance); non-finite x; thread split; which calls dispatch sends to them."""
from __future__ import annotations

import pytest
import torch

from compress.algorithms.grid import QuantSpec
from compress.formats.quant_linear import QuantLinear
from compress.kernels import dispatch, native
from compress.kernels.dispatch import choose_kernel, quant_linear
from tests.kernels.quantized import build, check
from tests.kernels.test_native import CASES

CPU = torch.device("cpu")
needs_cc = pytest.mark.skipif(native.library() is None, reason="no C compiler: the native kernels cannot be built")
BUILDS = pytest.mark.parametrize("generic", [False, True], ids=["vector", "generic"])


def rounded(x: torch.Tensor) -> torch.Tensor:
    """x̂ in fp64: per block of 32, d = max|x| / 127 and x̂ = d · round_half_even(x · 127 / max|x|) (fp32 math)."""
    xb = x.float().reshape(x.shape[0], -1, 32)
    amax = xb.abs().amax(-1, keepdim=True)
    inv = torch.where(amax > 0, 127 / amax, torch.zeros_like(amax))
    return (torch.round(xb * inv).double() * (amax / 127).double()).reshape(x.shape)


def spiky(m: int, k: int, seed: int = 0) -> torch.Tensor:
    """bf16 x whose every block of 32 holds one value ~40× the others: a coarse grid for the rest of the block."""
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(seed))
    x[:, 5::32] *= 40
    return x.bfloat16()


def assert_matches_rounded(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> None:
    """y within bf16 rounding of x̂ · Wᵀ (plus fp32 sums), and x · Wᵀ with x unrounded outside that tolerance."""
    ref = rounded(x) @ w.double().t()
    tol = 2.0**-8 * ref.abs() + 1e-6 * ref.abs().max()
    err = (y.double() - ref).abs()
    assert y.dtype == torch.bfloat16 and bool((err <= tol).all()), float((err / tol).max())
    exact = x.double() @ w.double().t()
    assert int(((exact - ref).abs() > tol).sum()) > ref.numel() // 4  # the test sees whether x was rounded


def planted(spec: QuantSpec, n: int, k: int) -> tuple[QuantLinear, torch.Tensor]:
    """A bf16 int4 module from random codes, zeros and scales s = j / 512 (j ≤ 15), so that the kernel's table entry
    (8 − z)·s is exact in bf16; and its weight (q − z)·s [N, K], exact. One scale is 0."""
    g = torch.Generator().manual_seed(n * 7 + k)
    kp = spec.padded_in(k)
    groups = kp // spec.group_for(k)
    q = torch.randint(0, 16, (n, kp), generator=g, dtype=torch.uint8)
    s = torch.randint(1, 16, (n, groups), generator=g).float() / 512
    s[3 % n, 0] = 0.0
    z = torch.full((n, groups), 8.0) if spec.symmetric else torch.randint(0, 16, (n, groups), generator=g).float()
    mod = QuantLinear.from_codes(q, s, None if spec.symmetric else z, spec, k, None, torch.bfloat16)
    grp = spec.group_for(k)
    return mod, ((q.double() - z.double().repeat_interleave(grp, 1)) * s.double().repeat_interleave(grp, 1))[:, :k]


@needs_cc
@BUILDS
@pytest.mark.parametrize("spec,n,k", CASES, ids=lambda c: str(c))
def test_int4_matches_x_rounded_to_int8_blocks(spec, n, k, generic):
    mod, w = planted(spec, n, k)
    kp = spec.padded_in(k)
    x = torch.nn.functional.pad(spiky(2, k), (0, kp - k))
    y = native.int4_gemv(x, mod.qweight, mod.sz, n, generic, q8=True)
    assert y.shape == (2, n)
    assert_matches_rounded(y, x, torch.nn.functional.pad(w, (0, kp - k)))


def planted_int8(n: int, k: int) -> tuple[QuantLinear, torch.Tensor, torch.Tensor]:
    """A bf16 per-channel int8 module from random codes over the whole byte (stored −128 … 127), its scales, W."""
    g = torch.Generator().manual_seed(n + k)
    q = torch.randint(0, 256, (n, k), generator=g, dtype=torch.uint8)
    q[0, :3] = 0  # stored as −128: its sign cannot be flipped in 8 bits
    s = (torch.rand(n, 1, generator=g) * 0.01 + 1e-3).bfloat16().float()
    mod = QuantLinear.from_codes(q, s, None, QuantSpec(8, -1, True), k, None, torch.bfloat16)
    return mod, s[:, 0].bfloat16(), (q.double() - 128) * s.double()


@needs_cc
@BUILDS
@pytest.mark.parametrize("n,k", [(1536, 576), (70, 64), (3, 32)])  # 8-row blocks with a tail of 6; rows below 8
def test_int8_matches_x_rounded_to_int8_blocks(n, k, generic):
    mod, scales, w = planted_int8(n, k)
    assert int(mod.qweight.min()) == -128
    x = spiky(2, k, seed=n)
    y = native.int8_gemv(x, mod.qweight, scales, generic, q8=True)
    assert y.shape == (2, n)
    # the row scale multiplies a fp32 sum, then y rounds to bf16: the reference's scale is the same bf16 value
    assert_matches_rounded(y, x, w)


@needs_cc
@BUILDS
def test_non_finite_x_gives_non_finite_rows(generic):
    """A NaN or inf in x must not turn into integer codes that look finite."""
    mod, w = planted(QuantSpec(4, 64, False), 128, 576)
    imod, scales, _ = planted_int8(64, 576)
    for bad in (float("nan"), float("inf")):
        x = torch.randn(2, 576).bfloat16()
        x[1, 100] = bad
        y4 = native.int4_gemv(x, mod.qweight, mod.sz, 128, generic, q8=True)
        y8 = native.int8_gemv(x, imod.qweight, scales, generic, q8=True)
        for y in (y4, y8):
            assert bool(torch.isfinite(y[0]).all()) and not bool(torch.isfinite(y[1]).any())


@needs_cc
def test_thread_split_gives_the_same_result(monkeypatch):
    mod, _ = planted(QuantSpec(4, 64, False), 1536, 576)
    imod, scales, _ = planted_int8(1000, 576)  # 1000 rows: the last range is not a multiple of 64
    x = spiky(1, 576)
    one4 = native.int4_gemv(x, mod.qweight, mod.sz, 1536, q8=True)
    one8 = native.int8_gemv(x, imod.qweight, scales, q8=True)
    monkeypatch.setattr(native, "GEMV_SPLIT_MIN", 1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert torch.equal(native.int4_gemv(x, mod.qweight, mod.sz, 1536, q8=True), one4)
        assert torch.equal(native.int8_gemv(x, imod.qweight, scales, q8=True), one8)
    finally:
        torch.set_num_threads(threads)


@needs_cc
def test_blocks_that_do_not_tile_k_are_refused():
    mod, _ = planted(QuantSpec(4, 32, False), 64, 64)
    sz16 = torch.zeros(4, 64, 2, dtype=torch.bfloat16)  # a table of groups of 16: a block would span two scales
    with pytest.raises(RuntimeError, match="multiples of 32"):
        native.int4_gemv(torch.randn(1, 64).bfloat16(), mod.qweight, sz16, 64, q8=True)
    imod, scales, _ = planted_int8(8, 48)
    with pytest.raises(RuntimeError, match="multiple of 32"):
        native.int8_gemv(torch.randn(1, 48).bfloat16(), imod.qweight, scales, q8=True)


@needs_cc
def test_dispatch_sends_decode_calls_here_where_chosen(monkeypatch):
    int8, int4 = build(QuantSpec(8, -1, True), 64, 576), build(QuantSpec(4, 64, False), 64, 576)
    int8.mod.to(torch.bfloat16)
    monkeypatch.setattr(native, "GEMV_Q8", frozenset({4, 8}))
    assert choose_kernel(CPU, 1, int8.mod) == "int8_gemv_q8_cpu"
    assert choose_kernel(CPU, 2, int4.mod) == "int4_gemv_q8_cpu"
    assert choose_kernel(CPU, dispatch.CPU_GEMV_MAX_M + 1, int8.mod) != "int8_gemv_q8_cpu"
    k40 = build(QuantSpec(8, -1, True), 16, 40).mod  # K not tiled by 32: the fp32 GEMV
    assert choose_kernel(CPU, 1, k40) == "int8_gemv_cpu"
    x = torch.randn(1, 576)
    for case, name in ((int8, "int8_gemv_q8_cpu"), (int4, "int4_gemv_q8_cpu")):
        check(quant_linear(x, case.mod), x, case, eps=2.0**-6)  # x rounded to 8 bits: a coarser eps than bf16's
    monkeypatch.setattr(native, "GEMV_Q8", frozenset({8}))
    assert choose_kernel(CPU, 1, int8.mod) == "int8_gemv_q8_cpu"
    assert choose_kernel(CPU, 1, int4.mod) == "int4_gemv_cpu"
    monkeypatch.setattr(native, "GEMV_Q8", frozenset())
    assert choose_kernel(CPU, 1, int8.mod) == "int8_gemv_cpu"


def test_default_follows_the_cpu_and_the_environment(monkeypatch):
    monkeypatch.setattr(native, "_cpu_id", lambda: "flags : fpu avx2 fma")
    monkeypatch.delenv("COMPRESS_GEMV_Q8", raising=False)
    assert native._q8_default() == {8}  # int8 only: int4's GEMVs are at the memory's rate already
    monkeypatch.setattr(native, "_cpu_id", lambda: "flags : fpu avx2 fma avx512f avx512_bf16")
    assert native._q8_default() == set()  # AVX512-BF16: the bf16 dot products of the exact x
    monkeypatch.setattr(native, "_cpu_id", lambda: "flags : fpu avx2")
    assert native._q8_default() == set()  # no FMA: no AVX2 path to run, only the generic C loops
    for env, bits in (("all", {4, 8}), ("int8", {8}), ("0", set())):
        monkeypatch.setenv("COMPRESS_GEMV_Q8", env)
        assert native._q8_default() == bits
    monkeypatch.setenv("COMPRESS_GEMV_Q8", "yes")
    with pytest.warns(RuntimeWarning, match="allowed: 0, int8, all"):
        assert native._q8_default() == set()
