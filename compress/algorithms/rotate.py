"""Orthogonal rotations for weight quantization (QuaRot / SpinQuant idea, nothing computed online).

An orthogonal Q (Q·Qᵀ = I) applied to the residual stream leaves an RMSNorm'd transformer's function
unchanged once the norms' weights are folded into the linears after them (rms(x·Q) = rms(x)), but it
spreads outlier channels over all channels, so one scale per row (or per group) fits the weights better.

Which matrix a size gets (`orthogonal_matrix`, kind "hadamard"): a Hadamard matrix scaled by 1/√n with
random ±1 signs on its rows, when n is a power of two (Sylvester) or a product of a power of two and
Paley orders q + 1 (q a prime ≡ 3 mod 4: 4, 8, 12, 20, 24, 32, 44, 48, 60, 68, 72, …), e.g.
576 = 4·12·12, 896 = 4·224, 768 = 64·12, 4096 = 2¹²; every other size (any n not a multiple of 4 except 1
and 2, and a few multiples such as 92) falls back to a seeded Haar-random orthogonal matrix (QR of a
Gaussian), which is what kind "random" always gives. All math in float64; callers cast back to the weight dtype.
"""
from __future__ import annotations

from functools import lru_cache

import torch


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


def _is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def sylvester(n: int) -> torch.Tensor:
    """±1 Hadamard matrix of order n = 2^k (H_{2m} = [[H, H], [H, −H]])."""
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def paley(q: int) -> torch.Tensor:
    """±1 Hadamard matrix of order q + 1 for a prime q ≡ 3 (mod 4) (Paley's first construction:
    I + [[0, 1ᵀ], [−1, J]] with J the Jacobsthal matrix J_ij = legendre(j − i, q), antisymmetric)."""
    squares = {(x * x) % q for x in range(1, q)}
    chi = torch.tensor([0.0] + [1.0 if a in squares else -1.0 for a in range(1, q)], dtype=torch.float64)
    idx = (torch.arange(q).view(1, -1) - torch.arange(q).view(-1, 1)) % q
    s = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    s[0, 1:] = 1.0
    s[1:, 0] = -1.0
    s[1:, 1:] = chi[idx]
    return s + torch.eye(q + 1, dtype=torch.float64)


@lru_cache(maxsize=None)
def hadamard_orders(n: int) -> tuple[int, ...] | None:
    """Factors of n (a power of two, then Paley orders) whose Kronecker product gives a Hadamard matrix
    of order n; None when this module knows no construction for n."""
    if _is_pow2(n):
        return (n,)
    for p in range(4, n + 1, 4):  # the smallest Paley order that divides n and leaves a constructible rest
        if n % p == 0 and not _is_pow2(p) and _is_prime(p - 1) and (p - 1) % 4 == 3:
            rest = hadamard_orders(n // p)
            if rest is not None:
                return rest + (p,)
    return None


def hadamard_matrix(n: int) -> torch.Tensor | None:
    """A ±1 matrix H with H·Hᵀ = n·I (float64), or None when n has no known construction here."""
    orders = hadamard_orders(n)
    if orders is None:
        return None
    h = torch.ones(1, 1, dtype=torch.float64)
    for p in orders:
        h = torch.kron(h, sylvester(p) if _is_pow2(p) else paley(p - 1))
    return h


def random_orthogonal(n: int, gen: torch.Generator) -> torch.Tensor:
    """Haar-random orthogonal matrix: QR of a Gaussian with R's diagonal signs moved into Q."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r)).view(1, -1)


def orthogonal_matrix(n: int, kind: str = "hadamard", seed: int = 0) -> tuple[torch.Tensor, str]:
    """(Q [n, n] float64 with Q·Qᵀ = I, a description of how it was built) for `kind` hadamard | random.

    hadamard: diag(±1 seeded)·H/√n where H exists (see the module docstring), else random (said in the text)."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "hadamard":
        h = hadamard_matrix(n)
        if h is not None:
            signs = torch.randint(0, 2, (n,), generator=gen).to(torch.float64) * 2 - 1
            orders = hadamard_orders(n)
            return signs.view(-1, 1) * h / n**0.5, "hadamard " + "x".join(str(p) for p in orders or () if p > 1)
        return random_orthogonal(n, gen), f"random (no Hadamard construction for {n})"
    if kind == "random":
        return random_orthogonal(n, gen), "random"
    raise ValueError(f"kind {kind!r}: allowed: hadamard, random")


def orthogonal_keeping(n: int, keep: tuple[int, ...], kind: str = "hadamard", seed: int = 0) -> tuple[torch.Tensor, str]:
    """Like `orthogonal_matrix`, but channels `keep` map to themselves (Q[k, k] = 1) and only the other n − len(keep)
    channels are mixed, by an orthogonal matrix of that size. Why: a massive activation sits in one residual channel
    (an attention sink: SmolLM2's first token, |x| ≈ 22,500 in channel 507) whose norm weight is ≈ 0, so the linears
    after the norm never see it; rotated, it becomes a dense direction that meets every weight's rounding error."""
    if not keep:
        return orthogonal_matrix(n, kind, seed)
    kept = sorted(set(keep))
    if kept[0] < 0 or kept[-1] >= n:
        raise ValueError(f"keep: channels must lie in 0..{n - 1}, got {kept}")
    rest = torch.tensor([i for i in range(n) if i not in set(kept)])
    sub, how = orthogonal_matrix(len(rest), kind, seed)
    q = torch.zeros(n, n, dtype=torch.float64)
    q[kept, kept] = 1.0
    q[rest.view(-1, 1), rest.view(1, -1)] = sub
    return q, f"{how} on {len(rest)} channels, {len(kept)} kept"


def fold_norm(weight: torch.Tensor, norm_weight: torch.Tensor) -> torch.Tensor:
    """W·diag(g) (float64): the norm's elementwise weight g moved into the linear that reads the norm."""
    return weight.to(torch.float64) * norm_weight.to(torch.float64).view(1, -1)


def rotate_input(weight: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """W·Q (float64) for a linear y = x·Wᵀ whose input becomes x·Q: (x·Q)·(W·Q)ᵀ = x·Wᵀ."""
    return weight.to(torch.float64) @ q.to(weight.device)


def rotate_output(weight: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Qᵀ·W (float64) for a linear whose output must become y·Q: x·(Qᵀ·W)ᵀ = x·Wᵀ·Q; a bias b → b·Q
    (use `rotate_rows` for it, or for embedding rows)."""
    return q.to(weight.device).T @ weight.to(torch.float64)


def rotate_rows(rows: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """rows·Q (float64): vectors of the rotated space (embedding rows, an output bias)."""
    return rows.to(torch.float64) @ q.to(rows.device)


def rotate_head_outputs(weight: torch.Tensor, r: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Per head h of a projection [heads·head_dim, in]: rows W_h → Rᵀ·W_h, so each head's output becomes v_h·R."""
    w = weight.to(torch.float64).reshape(-1, head_dim, weight.shape[1])
    return torch.einsum("ji,hjk->hik", r.to(weight.device), w).reshape(weight.shape)


def rotate_head_inputs(weight: torch.Tensor, r: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Per head h of a projection [out, heads·head_dim]: columns W_h → W_h·R, reading inputs v_h·R."""
    w = weight.to(torch.float64).reshape(weight.shape[0], -1, head_dim)
    return (w @ r.to(weight.device)).reshape(weight.shape)
