"""SparseGPT: prune with second-order weight updates, column block by column block.

Frantar & Alistarh 2023. For each column the pruned (and optionally quantized) value's error is
spread over the not-yet-visited columns through the inverse Hessian's Cholesky factor, exactly
as in GPTQ; with `quant` set, pruning and quantization happen in the same sweep, and a pruned
weight takes the zero point's code, so it dequantizes to exactly 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from compress.algorithms.grid import QuantSpec, compute_qparams, pad_columns
from compress.algorithms.hessian import damped, inverse_factor
from compress.algorithms.masks import matrix_mask, nm_mask


@dataclass
class SparseGPTResult:
    """New weight [N, K] (zeros where pruned), keep-mask, and codes/scale/zero when quantized."""

    weight: torch.Tensor
    mask: torch.Tensor
    codes: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    zero: torch.Tensor | None = None


def inverse_hessian_factor(H: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp·mean(diag)·I)⁻¹, dead inputs fixed to 1 on the diagonal."""
    return inverse_factor(damped(H, damp)[0])


def sparsegpt_prune(w: torch.Tensor, H: torch.Tensor, sparsity: float, nm: tuple[int, int] | None = None,
                    blocksize: int = 128, damp: float = 0.01, quant: QuantSpec | None = None) -> SparseGPTResult:
    """Prune `w` [N, K] to `sparsity` of each column block (or N:M per row) given the layer Hessian H [K, K]."""
    W = w.detach().float().clone()
    rows, cols = W.shape
    if nm is not None and (cols % nm[1] or blocksize % nm[1]):
        raise ValueError(f"pattern {nm[0]}:{nm[1]} needs in_features and blocksize divisible by {nm[1]}, got {cols}")
    W[:, torch.diag(H) == 0] = 0
    Hinv = inverse_hessian_factor(H, damp)
    mask = torch.ones_like(W, dtype=torch.bool)
    group = quant.group_for(cols) if quant else cols
    codes = scale = zero = None
    if quant is not None:
        kp = quant.padded_in(cols)
        codes = torch.zeros(rows, kp, dtype=torch.uint8, device=W.device)
        scale = torch.zeros(rows, kp // group, device=W.device)
        zero = torch.zeros_like(scale)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        d = torch.diag(Hinv1)
        Err1 = torch.zeros_like(W1)
        # unstructured: one threshold over the whole rows × block (as the paper's code), not per row: rows whose
        # weights matter less give up more of them
        M1 = matrix_mask(W1**2 / d.unsqueeze(0) ** 2, sparsity) if nm is None else torch.ones_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            col = i1 + i
            if nm is not None and i % nm[1] == 0:
                M1[:, i : i + nm[1]] = nm_mask(W1[:, i : i + nm[1]] ** 2 / d[i : i + nm[1]] ** 2, *nm)
            q = W1[:, i] * M1[:, i]
            if quant is not None:
                g = col // group
                if col % group == 0:  # parameters from the current (error-updated) weights of this group
                    span = torch.cat([W1[:, i:], W[:, i2:]], 1)[:, :group]
                    s, z = compute_qparams(pad_columns(span, group), QuantSpec(quant.bits, group, quant.symmetric))
                    scale[:, g], zero[:, g] = s[:, 0], z[:, 0]
                code = torch.round(q / scale[:, g] + zero[:, g]).clamp(0, quant.qmax)
                code = torch.where(M1[:, i], code, zero[:, g])
                codes[:, col] = code.to(torch.uint8)
                q = (code - zero[:, g]) * scale[:, g]
            err = (W1[:, i] - q) / d[i]
            W1[:, i:] -= err.unsqueeze(1) * Hinv1[i, i:].unsqueeze(0)
            W1[:, i] = q
            Err1[:, i] = err
        W[:, i1:i2] = W1
        mask[:, i1:i2] = M1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    if quant is not None:
        codes[:, cols:] = zero.repeat_interleave(group, 1)[:, cols:].to(torch.uint8)  # padding dequantizes to 0
    return SparseGPTResult(W.to(w.dtype), mask, codes, scale, zero)
