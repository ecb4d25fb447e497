"""The gate's default latency tolerance against real timings: a model made 25% slower at decode fails,
the same model unchanged passes (each forward sleeps, so the ratio is known and steady)."""
from __future__ import annotations

import shutil
import time

import pytest

from compress.eval import bench, entries
from compress.eval.bench import BenchSettings
from compress.eval.regress import DEFAULT_TOLERANCES, compare

STEP_S = 0.05  # per forward; the tiny model's own eager step is a few ms
REAL_LOAD = entries.load_entry


def measure(monkeypatch, a: str, b: str, slow_b: float) -> dict:
    def load(spec, base, device, progress=False):
        loaded = REAL_LOAD(spec, base, device, progress)
        pause = STEP_S * (slow_b if spec == b else 1.0)
        loaded.model.register_forward_pre_hook(lambda *_: time.sleep(pause))
        return loaded

    monkeypatch.setattr(entries, "load_entry", load)
    s = BenchSettings(skip_perplexity=True, prefill=(8,), prompt_len=4, new_tokens=4, repeats=3, warmup=0,
                      decode_mode="eager", interleave=True, threads=1)
    return bench.benchmark([a, b], s, "cpu", progress=False)


@pytest.fixture()
def two(tiny_dir, tmp_path) -> tuple[str, str]:
    b = tmp_path / "b"
    shutil.copytree(tiny_dir, b)
    return str(tiny_dir), str(b)


def test_a_25_percent_slower_decode_fails_and_an_unchanged_one_passes(monkeypatch, two):
    a, b = two
    baseline = measure(monkeypatch, a, b, 1.0)
    slower = measure(monkeypatch, a, b, 4 / 3)  # tok/s × 0.75
    again = measure(monkeypatch, a, b, 1.0)
    key = "decode_tokens_per_s:1"
    change = slower["results"][1]["ratios"][key] / baseline["results"][1]["ratios"][key]
    assert 0.68 < change < 0.82  # the slowdown really is ~25% in the measured numbers
    tol = DEFAULT_TOLERANCES
    failed = {c.metric for c in compare(baseline, slower, tol) if not c.ok}
    assert "decode_tokens_per_s:1 ÷ base" in failed
    assert all(c.ok for c in compare(baseline, again, tol)), [c.to_dict() for c in compare(baseline, again, tol) if not c.ok]
