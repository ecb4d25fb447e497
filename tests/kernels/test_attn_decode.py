"""`native.attn_decode` (one-token attention over a grouped-query KV cache, in C) against softmax(q·kᵀ·s)·v computed
here in float64 from the same tensors, and the decoder's use of it."""
from __future__ import annotations

import pytest
import torch

from compress.eval import gqa_attention
from compress.eval.fast_decode import StaticDecoder
from compress.kernels import native
from tests.conftest import make_model

needs_cc = pytest.mark.skipif(native.library() is None, reason="no C compiler: the native kernels cannot be built")


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """float64: q [B, Hkv, R, D] against every query row's unmasked keys of its KV head; a row with none → zeros."""
    s = torch.einsum("bhrd,bhld->bhrl", q.double(), k.double()) * scale
    if mask is not None:
        s = s.masked_fill(~mask[:, None, None, :], float("-inf"))
    p = torch.softmax(s, -1).nan_to_num(0.0)
    return torch.einsum("bhrl,bhld->bhrd", p, v.double())


def case(b: int, hkv: int, r: int, l: int, d: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, hkv, n, d, generator=g).to(dtype) * 2 for n in (r, l, l))
    return q, k, v


@needs_cc
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("r,d", [(3, 64), (1, 128), (4, 40)])
def test_matches_softmax_reference(dtype, tol, r, d):
    """Rows with different masks (a prefix, a window, one key), large scores (the max is taken out)."""
    q, k, v = case(3, 2, r, 37, d, dtype)
    mask = torch.zeros(3, 37, dtype=torch.bool)
    mask[0, :30] = True
    mask[1, 5:21] = True
    mask[2, 36] = True
    got = native.attn_decode(q, k, v, mask, 0.3)
    want = reference(q, k, v, mask, 0.3)
    assert got.dtype == dtype and want.abs().max() > 0.5
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)
    assert torch.equal(got[2], v[2, :, 36:37].expand(2, r, d))  # one key: its value row, exactly


@needs_cc
def test_no_mask_and_an_empty_row():
    q, k, v = case(2, 3, 3, 20, 64, torch.float32, seed=1)
    torch.testing.assert_close(native.attn_decode(q, k, v, None, 0.125).double(), reference(q, k, v, None, 0.125),
                               rtol=1e-5, atol=1e-5)
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1] = False
    got = native.attn_decode(q, k, v, mask, 0.125)
    assert torch.equal(got[1], torch.zeros_like(got[1]))  # nothing to attend (SDPA would give NaN)
    torch.testing.assert_close(got[0].double(), reference(q, k, v, mask, 0.125)[0], rtol=1e-5, atol=1e-5)


@needs_cc
def test_thread_split_gives_the_same_result():
    """Past the split threshold the (batch, head) units go to torch's threads: same numbers as one thread."""
    q, k, v = case(2, 4, 4, 2048, 64, torch.float32, seed=2)  # 2 · 4 · 4 · 2048 · 64 · 2 MACs per unit > 2^18
    mask = torch.rand(2, 2048, generator=torch.Generator().manual_seed(3)) < 0.7
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native.attn_decode(q, k, v, mask, 0.125)
        torch.set_num_threads(2)
        two = native.attn_decode(q, k, v, mask, 0.125)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    torch.testing.assert_close(one.double(), reference(q, k, v, mask, 0.125), rtol=1e-5, atol=1e-5)


@needs_cc
def test_decoder_calls_it(monkeypatch):
    """The decode step of a GQA model goes through the kernel (a silent fallback to SDPA would pass every
    equality test), and greedy decoding matches transformers' eager attention."""
    calls = []
    real = native.attn_decode
    monkeypatch.setattr(native, "attn_decode", lambda *a: calls.append(1) or real(*a))
    model = make_model(hidden=64, layers=2, heads=8, kv_heads=2, seed=5).eval()
    ids = torch.randint(0, 300, (1, 6), generator=torch.Generator().manual_seed(4))
    model.set_attn_implementation("sdpa")
    with torch.no_grad():
        got = StaticDecoder(model, 16, "eager").generate(ids, 8)
        model.set_attn_implementation("eager")
        want = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert len(calls) == 2 * 7  # two layers, seven one-token steps (the first token comes from the prefill)
    assert torch.equal(got, want)


def test_off_switch_uses_sdpa(monkeypatch):
    """`NATIVE = False` (what benchmarks compare against) keeps aten's SDPA."""
    monkeypatch.setattr(gqa_attention, "NATIVE", False)
    q, k, v = case(1, 2, 3, 8, 16, torch.float32)
    assert not gqa_attention._native_ok(q, k, v, None)
