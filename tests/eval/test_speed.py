"""Timing arithmetic and byte accounting against hand-computed values for the tiny Llama."""
from __future__ import annotations

import time

from pathlib import Path

import pytest
import torch

from compress.eval import speed

# tiny Llama of conftest: hidden 64, 2 layers, 4 heads of 16, 2 KV heads (k/v out 32), FFN 160, vocab 300, tied.
LINEAR_WEIGHTS_PER_LAYER = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64 + 3 * 64 * 160  # q k v o gate up down = 43008
OUT_FEATURES_PER_LAYER = 64 + 32 + 32 + 64 + 160 + 160 + 64  # 576
PARAMS = 300 * 64 + 2 * (LINEAR_WEIGHTS_PER_LAYER + 2 * 64) + 64  # 105536


def test_spread_is_min_median_max():
    assert speed.spread([3.0, 1.0, 2.0, 10.0, 4.0]) == {"min": 1.0, "median": 3.0, "max": 10.0}


def test_time_runs_counts_warmup_and_repeats():
    calls = []
    secs = speed.time_runs(lambda: (calls.append(1), time.sleep(0.01)), torch.device("cpu"), warmup=2, repeats=3)
    assert len(calls) == 5 and len(secs) == 3 and all(s >= 0.01 for s in secs)


def test_decode_tokens_per_s_arithmetic(tiny_model, monkeypatch):
    """tokens/s = batch × steps / seconds, for each timed run (times planted)."""
    monkeypatch.setattr(speed, "time_runs", lambda fn, dev, w, r: [0.5, 1.0, 2.0])
    r = speed.decode_tokens_per_s(tiny_model, batch=2, prompt_len=4, new_tokens=8, warmup=1, repeats=3, mode="eager")
    assert r == {"min": 8.0, "median": 16.0, "max": 32.0, "mode": "eager"}


def test_memory_bytes_counts_tied_weights_once(tiny_model):
    buffers = sum(b.numel() * b.element_size() for b in tiny_model.buffers())
    assert speed.memory_bytes(tiny_model) == PARAMS * 4 + buffers


def test_bytes_by_format_after_int8(tiny_model):
    from compress.api import run

    res = run({"passes": [{"rtn": {"bits": 8}}]}, tiny_model, tokenizer=object(), device="cpu", progress=False)
    by = speed.bytes_by_format(res.model)
    assert by["int8/g-1"] == 2 * LINEAR_WEIGHTS_PER_LAYER + 2 * OUT_FEATURES_PER_LAYER * 4  # int8 codes + fp32 scales
    buffers = sum(b.numel() * b.element_size() for n, b in res.model.named_buffers() if "rotary" in n)
    assert by["dense"] == (300 * 64 + 2 * 2 * 64 + 64) * 4 + buffers  # embedding (tied head) + norms


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS reset needs Linux /proc")
def test_cpu_peak_is_the_windows_resident_peak():
    """A 400 MB buffer freed before the window does not count; one touched inside it does."""
    cpu = torch.device("cpu")
    big = torch.ones(100_000_000)  # 400 MB, touched
    del big
    speed.reset_peak(cpu)
    before = speed.peak_memory(cpu)
    inside = torch.ones(50_000_000)  # 200 MB
    after = speed.peak_memory(cpu)
    del inside
    assert before is not None and after is not None
    assert 150e6 < after - before < 300e6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU memory statistics need CUDA")
def test_peak_memory_cuda_sees_an_allocation():
    dev = torch.device("cuda")
    speed.reset_peak(dev)
    x = torch.empty(64 << 20, dtype=torch.uint8, device=dev)
    assert speed.peak_memory(dev) >= 64 << 20
    del x


def test_prefill_is_timed_to_the_first_tokens_logits(tiny_model, monkeypatch):
    """Time to first token, as `generate` computes it: only the last position goes through lm_head."""
    seen: list[tuple[int, ...]] = []
    head = tiny_model.lm_head
    monkeypatch.setattr(head, "forward", lambda x: (seen.append(tuple(x.shape)), torch.nn.Linear.forward(head, x))[1])
    speed.prefill_ms(tiny_model, 24, warmup=0, repeats=2)
    assert seen == [(1, 1, tiny_model.config.hidden_size)] * 2
