"""A failed latency check is timed again before the gate fails: noise passes, a real slowdown fails every run."""
from __future__ import annotations

import json

import pytest

import compress.eval.bench as bench
from compress.eval.regress import regress
from tests.eval.test_regress import TOL, report


def planted(monkeypatch, runs: list[dict]) -> list:
    """benchmark() returns the planted reports in turn; records the settings of each call."""
    calls, it = [], iter(runs)
    monkeypatch.setattr(bench, "benchmark", lambda entries, s, dev, progress: calls.append(s) or next(it))
    return calls


@pytest.fixture()
def baseline(tmp_path):
    path = tmp_path / "base.json"
    path.write_text(json.dumps({**report(), "tolerances": TOL}))
    return path


def verdict(checks) -> dict[str, bool]:
    return {f"{c.entry} {c.metric}": c.ok for c in checks}


def test_a_noisy_slow_run_is_confirmed_by_a_second_that_passes(monkeypatch, baseline):
    calls = planted(monkeypatch, [report(int4_decode_ratio=0.3), report(int4_decode_ratio=0.48, int4_prefill_ratio=3.5)])
    checks, current = regress(baseline, device="cpu", progress=False, confirm=1)
    assert all(c.ok for c in checks) and len(calls) == 2
    assert calls[1].skip_perplexity and not calls[0].skip_perplexity  # perplexity is deterministic: not re-run
    int4 = current["results"][1]
    assert int4["ratios"]["decode_tokens_per_s:1"] == 0.48 and int4["ratios"]["prefill_ms:512"] == 3.0  # best of each
    assert int4["latency_runs"] == 2


def test_a_real_slowdown_fails_every_confirmation(monkeypatch, baseline):
    calls = planted(monkeypatch, [report(int4_decode_ratio=0.3)] * 3)
    checks, _ = regress(baseline, device="cpu", progress=False, confirm=2)
    assert not verdict(checks)["int4.yaml decode_tokens_per_s:1 ÷ base"] and len(calls) == 3


def test_no_confirmation_without_a_latency_failure(monkeypatch, baseline):
    calls = planted(monkeypatch, [report(int4_ppl=40.0, int4_decode_ratio=0.3), report()])
    checks, _ = regress(baseline, device="cpu", progress=False, confirm=1)
    assert len(calls) == 1 and not verdict(checks)["int4.yaml perplexity"]  # timing again cannot fix perplexity
    calls = planted(monkeypatch, [report(), report()])
    regress(baseline, device="cpu", progress=False, confirm=1)
    assert len(calls) == 1


def test_confirm_zero_fails_on_the_first_run(monkeypatch, baseline):
    calls = planted(monkeypatch, [report(int4_decode_ratio=0.3), report()])
    checks, _ = regress(baseline, device="cpu", progress=False, confirm=0)
    assert len(calls) == 1 and not all(c.ok for c in checks)
