"""The C unpack behind int4 prefill on a CPU (`kernels/native.py`): its Wᵀ against (q − z)·s computed here from
planted codes, its matmul against the unquantized weight, its thread split, its dispatch and its fallbacks."""
from __future__ import annotations

import copy

import pytest
import torch

from compress.algorithms.grid import QuantSpec
from compress.formats.int4_layout import aten_cpu_layout_matches
from compress.formats.quant_linear import QuantLinear
from compress.kernels import dispatch, native
from compress.kernels.dispatch import choose_kernel, quant_linear
from tests.kernels.quantized import build, check

CPU = torch.device("cpu")
needs_cc = pytest.mark.skipif(native.library() is None, reason="no C compiler: the native kernels cannot be built")


def planted(spec: QuantSpec, n: int, k: int, zero_group: bool = False, fp32: bool = False) -> tuple[QuantLinear, torch.Tensor]:
    """A bf16 module from random codes, bf16-valued scales and zeros; and its weight (q − z)·s in bf16 (one rounding),
    or unrounded in fp32."""
    g = torch.Generator().manual_seed(n * 7 + k)
    kp = spec.padded_in(k)
    groups = kp // spec.group_for(k)
    q = torch.randint(0, 16, (n, kp), generator=g, dtype=torch.uint8)
    s = (torch.rand(n, groups, generator=g) * 0.05 + 1e-3).bfloat16().float()
    z = torch.full((n, groups), 8.0) if spec.symmetric else torch.randint(0, 16, (n, groups), generator=g).float()
    if zero_group:
        s[3, 0] = 0.0
    mod = QuantLinear.from_codes(q, s, None if spec.symmetric else z, spec, k, None, torch.bfloat16)
    grp = spec.group_for(k)
    w = ((q.float() - z.repeat_interleave(grp, 1)) * s.repeat_interleave(grp, 1))[:, :k]
    return mod, (w if fp32 else w.bfloat16())


CASES = [  # (spec, N, K): full 64-row blocks, a partial last block, only a partial block, padded K, per channel
    (QuantSpec(4, 64, False), 1536, 576), (QuantSpec(4, 32, True), 144, 576), (QuantSpec(4, -1, False), 16, 576),
    (QuantSpec(4, 64, False), 64, 80), (QuantSpec(4, 128, False), 80, 1536),
]


@needs_cc
@pytest.mark.parametrize("spec,n,k", CASES, ids=lambda c: str(c))
def test_unpacked_weight_is_bit_equal_to_the_planted_one(spec, n, k):
    mod, w = planted(spec, n, k, zero_group=True)
    assert mod.layout == "cpu_int4"
    wt = native.int4_cpu_kn(mod.qweight, mod.sz, n, spec.padded_in(k))
    assert wt.dtype == torch.bfloat16 and wt.shape == (spec.padded_in(k), n)
    assert torch.equal(wt[:k].t(), w)
    _, w32 = planted(spec, n, k, zero_group=True, fp32=True)  # the fp32 build: (q − z)·s unrounded
    wt32 = native.int4_cpu_kn(mod.qweight, mod.sz, n, spec.padded_in(k), torch.float32)
    assert wt32.dtype == torch.float32 and torch.equal(wt32[:k].t(), w32)


@needs_cc
@pytest.mark.parametrize("spec", [QuantSpec(4, 64, False), QuantSpec(4, -1, True)], ids=str)
def test_matmul_matches_the_unquantized_weight(spec):
    case = build(spec, 144, 576)
    mod = case.mod.to(torch.bfloat16)
    case = case._replace(mod=mod)
    x = torch.randn(96, 576, generator=torch.Generator().manual_seed(1))
    assert choose_kernel(CPU, 96, mod, torch.bfloat16) == "int4_kn_cpu"
    check(quant_linear(x, mod, "int4_kn_cpu"), x, case)


@needs_cc
def test_thread_split_gives_the_same_weight(monkeypatch):
    mod, w = planted(QuantSpec(4, 64, False), 1536, 576)
    monkeypatch.setattr(native, "SPLIT_MIN", 1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        wt = native.int4_cpu_kn(mod.qweight, mod.sz, 1536, 576)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(wt.t(), w)


@needs_cc
def test_dispatch_uses_it_only_where_it_equals_the_dequantizing_path():
    mod, w = planted(QuantSpec(4, 64, False), 64, 576)
    big = dispatch.CPU_INT4PACK_MAX_M + 1
    assert choose_kernel(CPU, big, mod, torch.bfloat16) == "int4_kn_cpu"
    assert choose_kernel(CPU, big, mod, torch.float32) == "int4_kn_cpu"  # fp32 activations: fp32 Wᵀ, fp32 matmul
    assert choose_kernel(CPU, big, mod, torch.float16) == "dequant"
    assert choose_kernel(CPU, 1, mod, torch.bfloat16) == ("int4_gemv_q8_cpu" if 4 in native.GEMV_Q8 else "int4_gemv_cpu")
    small = "int4pack_cpu" if aten_cpu_layout_matches() else "int4_kn_cpu"  # AVX2: aten's kernel reads other blocks
    assert choose_kernel(CPU, dispatch.CPU_GEMV_MAX_M + 1, mod, torch.bfloat16) == small
    fp32_scales = build(QuantSpec(4, 64, False), 64, 576).mod  # its bf16 table rounds the scales
    assert choose_kernel(CPU, big, fp32_scales, torch.bfloat16) == "dequant"
    x = torch.randn(2, big, 576).bfloat16()
    assert torch.equal(quant_linear(x, mod), torch.mm(x.reshape(-1, 576), w.t().contiguous()).reshape(2, big, 64))
    _, w32 = planted(QuantSpec(4, 64, False), 64, 576, fp32=True)  # an fp32 model: the fp32 matmul of (q − z)·s
    x32 = torch.randn(2, big, 576)
    assert torch.equal(quant_linear(x32, mod), torch.mm(x32.reshape(-1, 576), w32.t().contiguous()).reshape(2, big, 64))


@needs_cc
def test_traces_into_one_graph():
    mod, _ = planted(QuantSpec(4, 64, False), 64, 576)
    x = torch.randn(128, 576).bfloat16()
    compiled = torch.compile(lambda t: quant_linear(t, mod), fullgraph=True, backend="eager")
    assert torch.equal(compiled(x), quant_linear(x, mod, "int4_kn_cpu"))


@pytest.mark.parametrize("env", [{"COMPRESS_NATIVE": "0"}, {"CC": "/nonexistent/cc"}], ids=["disabled", "no-compiler"])
def test_without_the_library_prefill_falls_back(monkeypatch, tmp_path, env):
    monkeypatch.setattr(native, "_LIB", {})
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path))  # nothing cached: a build is needed
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.warns(RuntimeWarning, match="native CPU kernels unavailable") if "CC" in env else _no_warning():
        assert native.library() is None
    mod, w = planted(QuantSpec(4, 64, False), 64, 576)
    assert choose_kernel(CPU, 128, mod, torch.bfloat16) == "dequant"
    x = torch.randn(128, 576).bfloat16()
    assert torch.equal(quant_linear(x, mod), torch.nn.functional.linear(x, w))
    assert not list(tmp_path.rglob("*.tmp"))  # a failed build leaves no partial library


class _no_warning:
    def __enter__(self) -> None:
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc: object) -> None:
        self._w.__exit__(*exc)


@needs_cc
@pytest.mark.parametrize("generic", [False, True], ids=["vector", "generic"])
@pytest.mark.parametrize("spec,n,k", CASES, ids=lambda c: str(c))
def test_gemv_matches_the_planted_weight_in_fp64(spec, n, k, generic):
    """The decode GEMV (both builds) against x · Wᵀ in fp64 (the planted weight, rounded once to bf16, as its
    reference): within 2⁻⁷ of the largest output; a swapped nibble or a wrong group gives errors of order 1."""
    if native.library() is None:
        pytest.skip("build failed")
    mod, w = planted(spec, n, k, zero_group=True)
    x = torch.randn(2, k, generator=torch.Generator().manual_seed(k)).bfloat16()
    xp = torch.nn.functional.pad(x, (0, spec.padded_in(k) - k))
    y = native.int4_gemv(xp, mod.qweight, mod.sz, n, generic)
    ref = x.double() @ w.double().t()
    assert y.shape == (2, n) and y.dtype == torch.bfloat16
    err = (y.double() - ref).abs()
    assert float(err.max()) <= 2 ** -7 * float(ref.abs().max()), float(err.max() / ref.abs().max())


@needs_cc
def test_gemv_dispatch_matches_the_unquantized_weight():
    case = build(QuantSpec(4, 64, False), 144, 576)
    mod = case.mod.to(torch.bfloat16)
    x = torch.randn(1, 576, generator=torch.Generator().manual_seed(2))
    assert choose_kernel(CPU, 1, mod, torch.float32) == ("int4_gemv_q8_cpu" if 4 in native.GEMV_Q8 else "int4_gemv_cpu")
    check(quant_linear(x, mod, "int4_gemv_cpu"), x, case._replace(mod=mod))


@needs_cc
def test_gemv_thread_split_gives_the_same_result(monkeypatch):
    mod, _ = planted(QuantSpec(4, 64, False), 1536, 576)
    x = torch.randn(1, 576).bfloat16()
    one = native.int4_gemv(x, mod.qweight, mod.sz, 1536)
    monkeypatch.setattr(native, "GEMV_SPLIT_MIN", 1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert torch.equal(native.int4_gemv(x, mod.qweight, mod.sz, 1536), one)
    finally:
        torch.set_num_threads(threads)


@needs_cc
@pytest.mark.parametrize("generic", [False, True], ids=["vector", "generic"])
@pytest.mark.parametrize("n,k", [(1536, 576), (70, 44), (3, 17)])  # 8-row (AVX2) / 4-row (AVX512) blocks and 8 / 16-wide steps, with tails of both
def test_int8_gemv_matches_the_unquantized_weight(n, k, generic):
    """The int8 decode GEMV (both builds) against fp64 x · Wᵀ of the original weight, through dispatch's
    wrapper, at M = 1 and 2: a wrong row, scale or tail gives errors of order 1."""
    if native.library() is None:
        pytest.skip("build failed")
    case = build(QuantSpec(8, -1, True), n, k, bias=False)
    mod = case.mod.to(torch.bfloat16)
    for m in (1, 2):
        x = torch.randn(m, k, generator=torch.Generator().manual_seed(m))
        scales = mod.scales[:, 0].to(torch.bfloat16)
        y = native.int8_gemv(x.bfloat16(), mod.qweight, scales, generic)
        assert y.shape == (m, n) and y.dtype == torch.bfloat16
        check(y, x, case._replace(mod=mod))
        if not generic:
            check(quant_linear(x, mod, "int8_gemv_cpu"), x, case._replace(mod=mod))


@needs_cc
def test_int8_gemv_thread_split_gives_the_same_result(monkeypatch):
    case = build(QuantSpec(8, -1, True), 1000, 576, bias=False)  # 1000 rows: the last range is not a multiple of 64
    x = torch.randn(1, 576).bfloat16()
    scales = case.mod.scales[:, 0].to(torch.bfloat16)
    one = native.int8_gemv(x, case.mod.qweight, scales)
    monkeypatch.setattr(native, "GEMV_SPLIT_MIN", 1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert torch.equal(native.int8_gemv(x, case.mod.qweight, scales), one)
    finally:
        torch.set_num_threads(threads)


@needs_cc
@pytest.mark.parametrize("n,k", [(1536, 576), (70, 44)])
def test_int8_unpack_is_bit_equal_to_the_dequantizing_path(n, k):
    """W = q·s from the C unpack equals the module's own dequantized weight bit for bit, in bf16 and in fp32, and
    its matmul (the int8 prefill path, as dispatch picks it) matches fp64 x·Wᵀ of the original weight."""
    case = build(QuantSpec(8, -1, True), n, k)
    mod = copy.deepcopy(case.mod).to(torch.bfloat16)  # the checkpoint's bf16 scales
    mod32 = copy.deepcopy(mod).float()  # in an fp32 model (scales stay bf16)
    assert mod32.scales.dtype == torch.bfloat16 and case.mod.scales.dtype == torch.float32
    for dtype in (torch.bfloat16, torch.float32):
        w = native.int8_unpack(mod.qweight, mod.scales[:, 0], dtype)
        assert w.dtype == dtype and torch.equal(w, mod.dense_weight(dtype))
    x = torch.randn(96, k, generator=torch.Generator().manual_seed(3))
    for m, dtype in ((mod, torch.bfloat16), (mod32, torch.float32)):
        assert choose_kernel(CPU, 96, m, dtype) == "int8_unpack_cpu"
        check(quant_linear(x.to(dtype), m), x.to(dtype).float(), case._replace(mod=m))
    fp32_scales = case.mod  # scales as RTN made them: the C unpack reads bf16 ones, so the exact path stays
    assert choose_kernel(CPU, 96, fp32_scales, torch.float32) == "dequant"


@needs_cc
def test_int8_unpack_thread_split_gives_the_same_weight(monkeypatch):
    mod = build(QuantSpec(8, -1, True), 1000, 576).mod.to(torch.bfloat16)
    one = native.int8_unpack(mod.qweight, mod.scales[:, 0], torch.float32)
    monkeypatch.setattr(native, "SPLIT_MIN", 1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert torch.equal(native.int8_unpack(mod.qweight, mod.scales[:, 0], torch.float32), one)
    finally:
        torch.set_num_threads(threads)
