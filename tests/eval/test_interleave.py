"""Interleaved timing visits the models round-robin, warms up only in round one, and spreads per model."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from compress.eval import interleave, speed


def test_round_robin_order_and_spreads(monkeypatch):
    calls = []
    times = iter([10.0, 20.0, 12.0, 18.0, 11.0, 30.0])  # prefill ms: m0, m1, m0, m1, m0, m1

    def fake_prefill(model, n, warmup, repeats):
        calls.append(("prefill", model, warmup))
        return {"median": next(times)}

    step = {"m0": iter([[0.01, 0.01], [0.01, 0.03], [0.02, 0.01]]), "m1": iter([[0.02, 0.02], [0.5, 0.5], [0.02, 0.02]])}

    def fake_steps(model, b, prompt_len, new_tokens, warmup, repeats, mode, dec):
        assert dec.model == model and b == 1  # one decoder per model and batch, kept over the rounds
        calls.append(("decode", model, warmup))
        return next(step[model]), mode

    monkeypatch.setattr(speed, "prefill_ms", fake_prefill)
    monkeypatch.setattr(speed, "decode_step_seconds", fake_steps)
    built = []
    monkeypatch.setattr(interleave, "StaticDecoder",
                        lambda m, n, mode: built.append(m) or SimpleNamespace(model=m, mode="eager"))
    out = interleave.timed_rounds(["m0", "m1"], (64,), (1,), 8, 4, warmup=2, repeats=3)
    assert [c[1] for c in calls] == ["m0", "m0", "m1", "m1"] * 3 and built == ["m0", "m1"]
    assert [c[2] for c in calls] == [2, 2, 2, 2] + [0] * 8
    assert out[0]["prefill_ms"]["64"] == {"min": 10.0, "median": 11.0, "max": 12.0}
    assert out[1]["prefill_ms"]["64"] == {"min": 18.0, "median": 20.0, "max": 30.0}
    # decode: the median over every step of every round (m1's slow round 2 is two of six steps)
    assert out[0]["decode_tokens_per_s"]["1"] == {"min": pytest.approx(100 / 3), "median": 100.0, "max": 100.0,
                                                  "mode": "eager", "steps": 6}
    assert out[1]["decode_tokens_per_s"]["1"]["median"] == 50.0 and out[0]["decode_mode"] == "eager"
