"""Distillation losses against values worked out by hand (math on probabilities, not torch)."""
from __future__ import annotations

import math

import pytest
import torch

from compress.algorithms.distill_losses import distill_kl, generalized_jsd, hidden_mse, next_token_ce


def logits_of(*probs: float) -> torch.Tensor:
    """Logits whose softmax is `probs`, as a [1, 1, V] batch."""
    return torch.tensor([[[math.log(p) for p in probs]]], dtype=torch.float64)


T_PROBS, S_PROBS = (0.8, 0.2), (0.5, 0.5)


def kl(p: tuple[float, ...], q: tuple[float, ...]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def test_forward_and_reverse_kl_by_hand():
    s, t = logits_of(*S_PROBS), logits_of(*T_PROBS)
    fwd = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    rev = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)
    assert distill_kl(s, t, mode="forward").item() == pytest.approx(fwd, rel=1e-6)
    assert distill_kl(s, t, mode="reverse").item() == pytest.approx(rev, rel=1e-6)
    assert fwd != pytest.approx(rev)  # the two directions are really different here


def test_generalized_jsd_by_hand():
    beta = 0.3
    m = tuple(beta * a + (1 - beta) * b for a, b in zip(T_PROBS, S_PROBS))
    expect = beta * kl(T_PROBS, m) + (1 - beta) * kl(S_PROBS, m)
    got = distill_kl(logits_of(*S_PROBS), logits_of(*T_PROBS), mode="jsd", beta=beta)
    assert got.item() == pytest.approx(expect, rel=1e-6)
    with pytest.raises(ValueError):
        generalized_jsd(torch.zeros(2), torch.zeros(2), 1.0)


def test_temperature_scales_logits_and_multiplies_by_t_squared():
    # logits 2·log p at T=2 give back p; the loss is then 4·KL
    s = 2 * logits_of(*S_PROBS)
    t = 2 * logits_of(*T_PROBS)
    assert distill_kl(s, t, temperature=2.0).item() == pytest.approx(4 * kl(T_PROBS, S_PROBS), rel=1e-6)


def test_top_k_renormalizes_over_teacher_top_k():
    t = logits_of(0.4, 0.3, 0.2, 0.1)
    s = logits_of(0.1, 0.2, 0.3, 0.4)
    # teacher's top-2 are classes 0, 1: t → (4/7, 3/7), s → (1/3, 2/3)
    expect = kl((4 / 7, 3 / 7), (1 / 3, 2 / 3))
    assert distill_kl(s, t, top_k=2).item() == pytest.approx(expect, rel=1e-6)
    assert distill_kl(s, t, top_k=4).item() == pytest.approx(kl((0.4, 0.3, 0.2, 0.1), (0.1, 0.2, 0.3, 0.4)), rel=1e-6)


def test_mean_over_tokens():
    s = torch.cat([logits_of(*S_PROBS), logits_of(*T_PROBS)], dim=1)  # 2 tokens, the second matches
    t = torch.cat([logits_of(*T_PROBS), logits_of(*T_PROBS)], dim=1)
    assert distill_kl(s, t).item() == pytest.approx(kl(T_PROBS, S_PROBS) / 2, rel=1e-6)


def test_forward_kl_gradient_is_student_minus_teacher_probs():
    s = logits_of(*S_PROBS).requires_grad_()
    distill_kl(s, logits_of(*T_PROBS)).backward()
    assert s.grad[0, 0].tolist() == pytest.approx([0.5 - 0.8, 0.5 - 0.2], abs=1e-6)  # fp32 inside


def test_next_token_ce_by_hand():
    logits = torch.cat([logits_of(0.8, 0.2), logits_of(0.5, 0.5), logits_of(0.9, 0.1)], dim=1).float()
    ids = torch.tensor([[0, 1, 0]])  # position 0 predicts 1 (p=0.2), position 1 predicts 0 (p=0.5); last unscored
    assert next_token_ce(logits, ids).item() == pytest.approx((-math.log(0.2) - math.log(0.5)) / 2, rel=1e-6)


def test_hidden_mse_by_hand():
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    t = torch.full((2, 2), 2.0)
    # differences -1, 0, 1, 2 → mean square 1.5; mean(t²) = 4
    assert hidden_mse(s, t, normalize=False).item() == pytest.approx(1.5)
    assert hidden_mse(s, t).item() == pytest.approx(1.5 / 4)
