"""GPTQ against independent references: plain RTN (diagonal H), the textbook OBS update with a
full inverse, brute force on tiny matrices, and the layer loss ‖X·Wᵀ − X·Qᵀ‖² computed directly."""
from __future__ import annotations

import itertools

import pytest
import torch

from compress.algorithms.gptq import gptq_quantize
from compress.algorithms.grid import QuantSpec, compute_qparams, dequantize, pad_columns
from compress.algorithms.rtn import rtn_quantize


def correlated(t: int, k: int, seed: int = 0) -> torch.Tensor:
    """Activations with strongly correlated, unevenly scaled channels (like real layer inputs)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(k, k, generator=g) / k**0.5 + torch.eye(k)
    return (torch.randn(t, k, generator=g) @ mix) * torch.linspace(0.2, 3, k)


def hessian(x: torch.Tensor) -> torch.Tensor:
    return 2 * x.T @ x / x.shape[0]


def out_err(x: torch.Tensor, w: torch.Tensor, wq: torch.Tensor) -> float:
    return float((x.double() @ (w.double() - wq.double()).T).pow(2).sum())


def deq(codes, scale, zero, spec, k):
    return dequantize(codes, scale, zero, spec)[:, :k]


@pytest.mark.parametrize("spec", [QuantSpec(4, 32, False), QuantSpec(4, -1, True), QuantSpec(8, -1, True)])
@pytest.mark.parametrize("act_order", [False, True])
def test_diagonal_hessian_reduces_to_rtn(spec, act_order):
    # With uncorrelated inputs there is nothing to compensate: every code is the nearest one.
    torch.manual_seed(0)
    w = torch.randn(16, 64)
    H = torch.diag(torch.rand(64) + 0.5)
    res = gptq_quantize(w, H, spec, damp=0.0, act_order=act_order)
    q, s, z = rtn_quantize(w, spec)
    assert torch.equal(res.codes, q) and torch.allclose(res.scale, s) and torch.allclose(res.zero, z)


def obs_reference(w: torch.Tensor, H: torch.Tensor, spec: QuantSpec, damp: float) -> torch.Tensor:
    """Textbook optimal-brain-surgeon loop, float64, explicit inverse and its rank-1 downdate."""
    W = w.double().clone()
    Hd = H.double() + damp * torch.mean(torch.diag(H.double())) * torch.eye(H.shape[0], dtype=torch.float64)
    Hinv = torch.linalg.inv(Hd)
    scale, zero = compute_qparams(pad_columns(w, spec.padded_in(w.shape[1])), spec)  # groups over padded K
    g = spec.group_for(w.shape[1])
    codes = torch.zeros_like(W)
    for j in range(W.shape[1]):
        s, z = scale[:, j // g].double(), zero[:, j // g].double()
        q = torch.clamp(torch.round(W[:, j] / s + z), 0, spec.qmax)
        codes[:, j] = q
        err = (W[:, j] - (q - z) * s) / Hinv[j, j]
        W -= err.unsqueeze(1) * Hinv[j].unsqueeze(0)
        Hinv -= torch.outer(Hinv[:, j], Hinv[j]) / Hinv[j, j]
    return codes.to(torch.uint8)


@pytest.mark.parametrize("spec", [QuantSpec(4, 32, False), QuantSpec(4, -1, False), QuantSpec(8, -1, True)])
def test_matches_textbook_obs_update(spec):
    torch.manual_seed(1)
    w = torch.randn(24, 96)
    H = hessian(correlated(512, 96))
    res = gptq_quantize(w, H, spec, damp=0.01, static_groups=True, block_size=32)  # lazy blocks ≠ column loop
    ref = obs_reference(w, H, spec, 0.01)
    assert (res.codes != ref).float().mean() < 0.01  # float32 vs float64: only rare near-ties may differ


@pytest.mark.parametrize("spec", [QuantSpec(4, 64, False), QuantSpec(4, 128, True)])
def test_padding_to_whole_groups_does_not_enter_the_damping(spec):
    # K = 96 is not a multiple of the group: the Hessian is padded. Small activations (diag ≪ 1, like
    # o_proj's inputs) once let the padded unit diagonal dominate damp · mean(diag) (damping 60× too large).
    torch.manual_seed(3)
    w = torch.randn(24, 96)
    H = hessian(correlated(512, 96) * 0.02)
    res = gptq_quantize(w, H, spec, damp=0.01, static_groups=True, block_size=32)
    ref = obs_reference(w, H, spec, 0.01)  # damps the real 96×96 block only
    assert (res.codes[:, :96] != ref).float().mean() < 0.01


@pytest.mark.parametrize("spec", [QuantSpec(4, 32, False), QuantSpec(4, 64, True), QuantSpec(4, -1, False), QuantSpec(8, -1, True)])
@pytest.mark.parametrize("act_order", [False, True])
def test_layer_loss_below_rtn(spec, act_order):
    torch.manual_seed(2)
    x = correlated(2048, 128)
    w = torch.randn(32, 128)
    res = gptq_quantize(w, hessian(x), spec, act_order=act_order)
    q, s, z = rtn_quantize(w, spec)
    e_gptq = out_err(x, w, deq(res.codes, res.scale, res.zero, spec, 128))
    e_rtn = out_err(x, w, deq(q, s, z, spec, 128))
    assert e_gptq < (0.6 if act_order else 0.9) * e_rtn  # act-order: unevenly scaled channels go first


def test_brute_force_optimum_bounds_gptq():
    # 6 inputs, 2-bit fixed grid: 4^6 code vectors per row, the exact least-squares optimum is enumerable.
    spec = QuantSpec(2, -1, False)
    torch.manual_seed(3)
    x = correlated(256, 6, seed=3)
    w = torch.randn(8, 6)
    H = hessian(x)
    res = gptq_quantize(w, H, spec, damp=0.0, static_groups=True)
    rq, rs, rz = rtn_quantize(w, spec)
    assert torch.allclose(res.scale, rs)
    all_codes = torch.tensor(list(itertools.product(range(4), repeat=6)), dtype=torch.float64)
    tot = {"best": 0.0, "gptq": 0.0, "rtn": 0.0}
    for r in range(8):
        cand = (all_codes - rz[r, 0].double()) * rs[r, 0].double()            # [4096, 6]
        losses = (x.double() @ (cand - w[r].double()).T).pow(2).sum(0)        # [4096]
        g = float((x.double() @ ((res.codes[r].double() - rz[r, 0]) * rs[r, 0] - w[r].double())).pow(2).sum())
        n = float((x.double() @ ((rq[r].double() - rz[r, 0]) * rs[r, 0] - w[r].double())).pow(2).sum())
        assert float(losses.min()) - 1e-9 <= g  # sanity: nothing beats the enumerated optimum
        tot["best"] += float(losses.min())
        tot["gptq"] += g
        tot["rtn"] += n
    assert tot["gptq"] < tot["rtn"]


def test_padding_and_dead_inputs():
    torch.manual_seed(4)
    x = correlated(512, 80)
    x[:, 5] = 0  # an input that never fires: its weights cost nothing and are zeroed
    w = torch.randn(8, 80)
    spec = QuantSpec(4, 64, False)
    res = gptq_quantize(w, hessian(x), spec)
    assert res.codes.shape == (8, 128) and res.scale.shape == (8, 2)
    wq = dequantize(res.codes, res.scale, res.zero, spec)
    assert torch.all(wq[:, 80:] == 0) and torch.all(wq[:, 5] == 0)
    assert res.codes.max() <= 15
