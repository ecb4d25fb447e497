"""`compress_sdpa` (grouped-query decode without the KV copy) computes what transformers' eager attention
computes (its own repeat_kv and softmax: an independent reference), and the decoder switches to it."""
from __future__ import annotations

import inspect

import pytest
import torch
from transformers import StaticCache

from compress.eval import gqa_attention
from compress.eval.fast_decode import StaticDecoder
from tests.conftest import make_model


def step_logits(model, impl: str, ids: torch.Tensor, pad: torch.Tensor, compiled: bool = False) -> torch.Tensor:
    """Prefill ids[:, :-1] into a static cache, then one decode step of ids[:, -1:] with implementation `impl`
    (`compiled`: that step through torch.compile, fullgraph); `pad` [B, T] masks left padding, so each row's
    mask differs."""
    model.set_attn_implementation(impl)
    cache = StaticCache(config=model.config, max_cache_len=24)
    kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    n = ids.shape[1] - 1
    with torch.no_grad():
        model(input_ids=ids[:, :n], attention_mask=pad[:, :n], **{kw: cache}, cache_position=torch.arange(n))
        step = torch.compile(model, fullgraph=True, dynamic=False) if compiled else model
        return step(input_ids=ids[:, n:], attention_mask=pad, **{kw: cache}, cache_position=torch.tensor([n])).logits


@pytest.mark.parametrize("heads,kv_heads,compiled", [(8, 2, False), (4, 4, False), (8, 2, True)])
def test_decode_step_matches_eager_attention(heads, kv_heads, compiled):
    """Compiled too: there transformers' own sdpa copies the cache (its in-place grouping is off under dynamo)."""
    model = make_model(hidden=64, layers=2, heads=heads, kv_heads=kv_heads, seed=3)
    gqa_attention.register()
    ids = torch.randint(0, 300, (2, 11), generator=torch.Generator().manual_seed(0))
    pad = torch.ones_like(ids)
    pad[1, :3] = 0  # row 1 is left-padded: the mask is not the same for both rows
    want = step_logits(model, "eager", ids, pad)
    got = step_logits(model, gqa_attention.NAME, ids, pad, compiled)
    assert want.abs().max() > 0.1  # a real output, not a degenerate one
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_prefill_is_transformers_sdpa():
    """Several query tokens go to transformers' own function: same logits as `sdpa` to the bit."""
    model = make_model(heads=8, kv_heads=2, seed=4)
    ids = torch.randint(0, 300, (1, 12), generator=torch.Generator().manual_seed(1))
    gqa_attention.register()
    with torch.no_grad():
        model.set_attn_implementation("sdpa")
        want = model(ids).logits
        model.set_attn_implementation(gqa_attention.NAME)
        got = model(ids).logits
    assert torch.equal(got, want)


def test_decoder_switches_sdpa_models_only():
    model = make_model(heads=8, kv_heads=2)
    model.set_attn_implementation("sdpa")
    StaticDecoder(model, 16, "eager")
    assert model.config._attn_implementation == gqa_attention.NAME
    other = make_model(heads=8, kv_heads=2)
    other.set_attn_implementation("eager")
    StaticDecoder(other, 16, "eager")
    assert other.config._attn_implementation == "eager"
