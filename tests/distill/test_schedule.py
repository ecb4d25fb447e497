"""The recovery schedule against values worked out by hand, and the lr the trainer actually applies."""
from __future__ import annotations

import math

import pytest
import torch

from compress.distill.schedule import lr_factor, warmup_cosine


def test_factors_by_hand():
    # warmup 2 of 5: 1/2, 2/2, then cos over 3 steps: 1, (1 + cos π/3)/2 = 0.75, (1 + cos 2π/3)/2 = 0.25
    assert [lr_factor(i, 2, 5) for i in range(5)] == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.25])
    assert [lr_factor(i, 0, 2) for i in range(2)] == pytest.approx([1.0, 0.5])


def test_no_step_runs_at_zero_and_the_optimizer_sees_the_factors():
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=2.0)
    sched = warmup_cosine(opt, 3, 30)
    applied = []
    for _ in range(30):
        applied.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert min(applied) > 0 and applied[0] == pytest.approx(2.0 / 3) and max(applied) == pytest.approx(2.0)
    assert applied[-1] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 26 / 27)))
    assert all(a >= b for a, b in zip(applied[2:], applied[3:]))  # decays after the peak
