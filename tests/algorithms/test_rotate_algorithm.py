"""Rotation matrices are orthogonal (Hadamard ones exactly ±1/√n), and folding/rotating keeps x·Wᵀ."""
from __future__ import annotations

import pytest
import torch

from compress.algorithms.rotate import (fold_norm, hadamard_matrix, hadamard_orders, orthogonal_keeping, orthogonal_matrix, paley,
                                        rotate_head_inputs, rotate_head_outputs, rotate_input, rotate_output,
                                        rotate_rows)

EYE = lambda n: torch.eye(n, dtype=torch.float64)  # noqa: E731


@pytest.mark.parametrize("n, orders", [(64, (64,)), (12, (1, 12)), (20, (1, 20)), (576, (4, 12, 12)),
                                       (896, (4, 224)), (768, (64, 12)), (2, (2,))])
def test_hadamard_sizes_are_exact(n, orders):
    """SmolLM2's 576 and Qwen2-0.5B's 896 get a Kronecker product of Sylvester and Paley matrices."""
    assert hadamard_orders(n) == orders
    h = hadamard_matrix(n)
    assert set(h.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(h @ h.T, n * EYE(n))


@pytest.mark.parametrize("q", [3, 7, 11, 19, 23, 43])
def test_paley_is_hadamard(q):
    h = paley(q)
    assert torch.equal(h @ h.T, (q + 1) * EYE(q + 1))


@pytest.mark.parametrize("n", [6, 92, 10])
def test_sizes_without_construction_fall_back_to_random(n):
    assert hadamard_matrix(n) is None
    q, how = orthogonal_matrix(n, "hadamard", 0)
    assert how.startswith("random") and torch.allclose(q @ q.T, EYE(n), atol=1e-12)


@pytest.mark.parametrize("n, kind", [(576, "hadamard"), (64, "hadamard"), (576, "random"), (48, "random")])
def test_orthogonal_and_seeded(n, kind):
    q, how = orthogonal_matrix(n, kind, 3)
    assert how.startswith(kind)
    assert torch.allclose(q @ q.T, EYE(n), atol=1e-12) and torch.allclose(q.T @ q, EYE(n), atol=1e-12)
    assert torch.equal(q, orthogonal_matrix(n, kind, 3)[0]) and not torch.equal(q, orthogonal_matrix(n, kind, 4)[0])
    if kind == "hadamard":  # randomized signs, entries all ±1/√n: no channel keeps more than its share
        assert torch.allclose(q.abs(), torch.full((n, n), n**-0.5, dtype=torch.float64))


def test_keeping_channels_fixes_them_and_mixes_the_rest():
    """e_k·Q = e_k for a kept channel k (its column and row are e_k), Q orthogonal, every other channel mixed."""
    q, how = orthogonal_keeping(576, (507, 3), "hadamard", 0)
    assert torch.allclose(q @ q.T, EYE(576), atol=1e-12)
    for k in (3, 507):
        assert torch.equal(q[k], EYE(576)[k]) and torch.equal(q[:, k], EYE(576)[k])
    rest = [i for i in range(576) if i not in (3, 507)]
    assert (q[rest][:, rest].abs() > 0).float().mean() > 0.99  # dense on the other 574 (no Hadamard: random)
    assert how == "random (no Hadamard construction for 574) on 574 channels, 2 kept"
    assert torch.equal(orthogonal_keeping(64, (), "hadamard", 1)[0], orthogonal_matrix(64, "hadamard", 1)[0])
    with pytest.raises(ValueError, match=r"keep: channels must lie in 0\.\.63, got \[64\]"):
        orthogonal_keeping(64, (64,))


def test_unknown_kind():
    with pytest.raises(ValueError, match="allowed: hadamard, random"):
        orthogonal_matrix(8, "givens")


def test_fold_and_rotate_keep_the_product():
    """norm·fold: (x⊙g)·Wᵀ = x·(W·diag g)ᵀ; reader W·Q on input x·Q; writer Qᵀ·W gives y·Q; bias b·Q."""
    torch.manual_seed(0)
    x, w, b, g = torch.randn(5, 12, dtype=torch.float64), torch.randn(8, 12), torch.randn(12), torch.rand(12) + 0.5
    q, _ = orthogonal_matrix(12, "hadamard", 1)
    ref = (x * g.double()) @ w.double().T
    assert torch.allclose((x @ q) @ rotate_input(fold_norm(w, g), q).T, ref, atol=1e-12)
    w2 = torch.randn(12, 8)
    y = x[:, :8] @ w2.double().T + b.double()
    assert torch.allclose(x[:, :8] @ rotate_output(w2, q).T + rotate_rows(b, q), y @ q, atol=1e-12)


def test_head_rotation_keeps_value_output_product():
    """v_h·R per head, then o_proj columns W_h·R: o_proj(v) unchanged; a shared R serves GQA's repeated heads."""
    torch.manual_seed(0)
    hd, heads, hidden = 4, 3, 10
    x, wv, wo = torch.randn(6, hidden, dtype=torch.float64), torch.randn(heads * hd, hidden), torch.randn(hidden, heads * hd)
    r, _ = orthogonal_matrix(hd, "random", 2)
    v = x @ wv.double().T
    v_rot = x @ rotate_head_outputs(wv, r, hd).T
    assert torch.allclose(v_rot.view(6, heads, hd), v.view(6, heads, hd) @ r, atol=1e-12)
    assert torch.allclose(v_rot @ rotate_head_inputs(wo, r, hd).T, v @ wo.double().T, atol=1e-12)
