"""Timing arithmetic and byte accounting against hand-computed values for the tiny Llama."""
from __future__ import annotations

import gc
import mmap
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


class PlantedDecoder:
    """Stands in for StaticDecoder: every decode call reports the planted step times."""

    mode, built = "eager", True

    def __init__(self, per_step: list[float]) -> None:
        self.per_step, self.calls = per_step, []

    def prefill(self, ids):
        return ids[:, -1:]

    def decode(self, first, start, steps, step_times=None):
        self.calls.append(step_times is not None)
        if step_times is not None:
            step_times += self.per_step[:steps]


def test_decode_tokens_per_s_is_the_median_step_over_every_timed_run(tiny_model):
    """tokens/s = batch / step seconds over all timed steps pooled (a slow burst in one run moves the median little)."""
    dec = PlantedDecoder([0.25, 0.25, 0.25, 2.0])  # per run: 4 steps
    r = speed.decode_tokens_per_s(tiny_model, batch=2, prompt_len=4, new_tokens=4, warmup=1, repeats=3, dec=dec)
    assert dec.calls == [False, True, True, True]  # one untimed warm-up run, then three timed
    assert r == {"min": 1.0, "median": 8.0, "max": 8.0, "mode": "eager", "steps": 12}


def test_decode_step_times_are_each_steps_own(tiny_model):
    """The real decoder's per-step clock: a forward that sleeps 20 ms makes every step at least that long."""
    import time as _time

    from compress.eval.fast_decode import StaticDecoder

    tiny_model.register_forward_pre_hook(lambda *_: _time.sleep(0.02))
    secs, mode = speed.decode_step_seconds(tiny_model, 1, 4, 5, warmup=0, repeats=2, mode="eager",
                                           dec=StaticDecoder(tiny_model, 10, "eager"))
    assert mode == "eager" and len(secs) == 10 and all(0.02 <= s < 0.5 for s in secs)


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


def _touched_map(nbytes: int) -> mmap.mmap:
    """Fresh anonymous pages, every one written: resident memory that malloc cannot have had before."""
    buf = mmap.mmap(-1, nbytes)
    torch.frombuffer(buf, dtype=torch.uint8).fill_(1)
    return buf


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS reset needs Linux /proc")
def test_cpu_peak_is_the_windows_resident_peak():
    """A 400 MB buffer unmapped before the window does not count; one touched inside it does. The buffers are
    anonymous maps, not tensors: after a full CI run malloc's heap held enough freed, still-resident memory to serve a
    200 MB tensor without RSS moving (the peak stayed exactly put). The garbage collector is drained and held off in
    the window so earlier tests' models freed mid-window cannot lower RSS either."""
    cpu = torch.device("cpu")
    _touched_map(400_000_000).close()
    gc.collect()
    gc.disable()
    try:
        speed.reset_peak(cpu)
        before = speed.peak_memory(cpu)
        inside = _touched_map(200_000_000)
        after = speed.peak_memory(cpu)
        inside.close()
    finally:
        gc.enable()
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
