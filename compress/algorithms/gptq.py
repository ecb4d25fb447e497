"""GPTQ: quantize a weight column by column, pushing each column's rounding error onto the
columns not yet quantized through the inverse Hessian of the layer's inputs (Frantar et al. 2022).

Pure tensor function: weight + Hessian in, packed-format codes and group parameters out.
Groups always cover contiguous original columns (that is what the packed format stores), so
with `act_order` the group parameters are computed up front ("static groups").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from compress.algorithms.grid import QuantSpec, compute_qparams, pad_columns
from compress.algorithms.hessian import damped, inverse_factor
from compress.algorithms.mse_clip import mse_qparams


@dataclass(frozen=True)
class GPTQResult:
    """Codes [N, Kp] (uint8), scale/zero [N, G], and the summed layer loss Σ err²/d² / 2."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    loss: float


def _prepare_hessian(H: torch.Tensor, w: torch.Tensor, kp: int, damp: float) -> torch.Tensor:
    """Damp H on the real K×K block (padding must not enter damp · mean(diag): at K = 576, group 256 the
    padded ones made damping up to 71× too strong), zero the dead columns of w in place, then pad to Kp
    with a decoupled unit diagonal (padded inputs are always 0)."""
    k = H.shape[0]
    Hd, dead = damped(H, damp)
    w[:, :k][:, dead] = 0
    Hp = torch.eye(kp, dtype=torch.float64, device=H.device)
    Hp[:k, :k] = Hd
    return Hp


def gptq_quantize(w: torch.Tensor, H: torch.Tensor, spec: QuantSpec, *, damp: float = 0.01,
                  act_order: bool = False, static_groups: bool = False, block_size: int = 128,
                  clip_search: bool = False) -> GPTQResult:
    """GPTQ for one linear weight w [N, K] given its input Hessian H [K, K] (2/n Σ xᵀx).

    act_order: process columns by decreasing H diagonal (implies static groups).
    static_groups: group parameters from the original weight, not the error-updated one.
    clip_search: group ranges by MSE search (see mse_clip) instead of min/max.
    """
    n, k = w.shape
    kp = spec.padded_in(k)
    g = spec.group_for(k)
    W = pad_columns(w.detach().float().clone(), kp)
    Hp = _prepare_hessian(H, W, kp, damp)
    qparams = mse_qparams if clip_search else compute_qparams
    ngroups = kp // g
    scale = torch.zeros(n, ngroups, device=W.device)
    zero = torch.zeros(n, ngroups, device=W.device)
    static = static_groups or act_order or ngroups == 1
    if static:
        scale, zero = qparams(W, spec)
    perm = torch.argsort(torch.diag(Hp), descending=True) if act_order else torch.arange(kp, device=W.device)
    W = W[:, perm]
    Hinv = inverse_factor(Hp[perm][:, perm])
    gidx = perm // g  # group of each (permuted) column
    Q = torch.zeros_like(W)
    loss = torch.zeros(n, device=W.device)
    for i1 in range(0, kp, block_size):
        i2 = min(i1 + block_size, kp)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if not static and col % g == 0:
                block = torch.cat([W1[:, i:], W[:, i2:]], dim=1)[:, :g]
                s, z = qparams(block, QuantSpec(spec.bits, g, spec.symmetric))
                scale[:, col // g], zero[:, col // g] = s[:, 0], z[:, 0]
            s, z = scale[:, gidx[col]], zero[:, gidx[col]]
            wcol = W1[:, i]
            q = torch.clamp(torch.round(wcol / s + z), 0, spec.qmax)
            Q[:, col] = q
            d = Hinv1[i, i]
            err = (wcol - (q - z) * s) / d
            loss += err.pow(2) / 2
            W1[:, i:] -= err.unsqueeze(1) * Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    codes = torch.empty_like(Q)
    codes[:, perm] = Q
    return GPTQResult(codes.to(torch.uint8), scale, zero, float(loss.sum()))
