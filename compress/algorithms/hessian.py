"""Input second moments H = 2/n · Σ xᵀx of one linear layer, shared by GPTQ and SparseGPT."""
from __future__ import annotations

import torch


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

    def damped(self, damp: float) -> torch.Tensor:
        """H with dead inputs fixed and `damp` × mean diagonal added, ready for Cholesky."""
        H = self.H.clone()
        dead = torch.diag(H) == 0
        H[dead, dead] = 1.0
        H.diagonal().add_(damp * torch.mean(torch.diag(H)))
        return H

    @property
    def dead(self) -> torch.Tensor:
        """Inputs that never fired: their weights can be zeroed at no cost."""
        return torch.diag(self.H) == 0
