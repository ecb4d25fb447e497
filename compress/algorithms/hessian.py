"""Input second moments H = 2/n · Σ xᵀx of one linear layer, shared by GPTQ and SparseGPT."""
from __future__ import annotations

import torch

from compress.errors import CompressError


class Hessian:
    """Running estimate of the layer-wise least-squares Hessian from calibration inputs."""

    def __init__(self, in_features: int, device: torch.device | str = "cpu") -> None:
        self.H = torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
        self.n = 0

    def add_batch(self, x: torch.Tensor) -> None:
        """Fold in activations x [tokens, in_features] (a running mean keeps the scale stable)."""
        x = x.reshape(-1, x.shape[-1]).to(self.H.device, torch.float32)
        t = x.shape[0]
        self.H.mul_(self.n / (self.n + t))
        self.n += t
        x = x * (2.0 / self.n) ** 0.5
        self.H.addmm_(x.T, x)


def damped(H: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(H with dead inputs set to 1 on the diagonal and damp × mean diagonal added, in float64; the dead mask).

    Dead inputs never fired: their weights can be zeroed at no cost.
    """
    Hd = H.double().clone()
    dead = torch.diag(Hd) == 0
    Hd[dead, dead] = 1.0
    Hd.diagonal().add_(damp * torch.mean(torch.diag(Hd)))
    return Hd, dead


def inverse_factor(H: torch.Tensor) -> torch.Tensor:
    """Upper Cholesky factor of H⁻¹ (the GPTQ / SparseGPT update coefficients), in float32.

    A Hessian that is not positive definite (too few calibration tokens, damp 0) is a user-fixable
    condition, so it is a one-line error rather than a linear-algebra traceback.
    """
    try:
        L = torch.linalg.cholesky(H)
        return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True).float()
    except torch.linalg.LinAlgError:
        raise CompressError("the calibration Hessian is not positive definite; raise `damp` "
                            "or give more calibration tokens (calibration.samples / seq_len)") from None
