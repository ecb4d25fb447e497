"""Shared builder and check for kernel tests: a QuantLinear from a random dense weight (RTN codes),
and the independent reference every kernel is held to: fp64 x·Wᵀ with the *unquantized* W."""
from __future__ import annotations

from typing import NamedTuple

import torch

from compress.algorithms.grid import QuantSpec
from compress.algorithms.rtn import rtn_quantize
from compress.formats.quant_linear import QuantLinear

BF16_EPS = 2.0**-8  # relative rounding of a bf16 value: the int kernels take bf16 activations


class Case(NamedTuple):
    mod: QuantLinear
    w: torch.Tensor  # the original weight [N, K]
    b: torch.Tensor | None
    wq: torch.Tensor  # (q - z)·s in fp64 from the RTN codes, computed here, not by the module


def build(spec: QuantSpec, n: int, k: int, bias: bool = True, seed: int = 0) -> Case:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) / k**0.5
    b = torch.randn(n, generator=g) if bias else None
    q, s, z = rtn_quantize(w, spec)
    grp = spec.group_for(k)
    wq = ((q.double() - z.double().repeat_interleave(grp, 1)) * s.double().repeat_interleave(grp, 1))[:, :k]
    return Case(QuantLinear.from_codes(q, s, z, spec, k, b, torch.float32), w, b, wq)


def make(spec: QuantSpec, n: int, k: int, bias: bool = True, seed: int = 0) -> QuantLinear:
    return build(spec, n, k, bias, seed).mod


def column_scales(mod: QuantLinear) -> torch.Tensor:
    """The quantization step of every weight [N, K]."""
    g = mod.qspec.group_for(mod.in_features)
    return mod.scales.double().repeat_interleave(g, dim=1)[:, : mod.in_features]


def check(y: torch.Tensor, x: torch.Tensor, case: Case, eps: float = BF16_EPS) -> None:
    """Both checks below: against the original weight, and against the codes' own values (tight)."""
    check_against_original(y, x, case.mod, case.w, case.b, eps)
    x2, y2 = x.reshape(-1, x.shape[-1]).double(), y.reshape(-1, y.shape[-1]).double()
    ref = x2 @ case.wq.T + (0 if case.b is None else case.b.double())
    kernel = eps * (((x2**2) @ (case.wq**2).T).sum() + (ref**2).sum()).sqrt()
    err = (y2 - ref).norm()
    assert err <= 2 * kernel + 1e-9, f"error vs (q - z)·s {err:.4g} > {2 * kernel:.4g}: codes, scales or zeros are off"


def check_against_original(y: torch.Tensor, x: torch.Tensor, mod: QuantLinear, w: torch.Tensor,
                           b: torch.Tensor | None, eps: float = BF16_EPS) -> None:
    """‖y − x·Wᵀ‖ within what rounding to the grid explains (errors ~ uniform over a step; 2× their rms, which
    random inputs stayed under by ≥ 1.5× in 200 trials) plus the
    kernel's own rounding of x and y (eps relative, random, so in quadrature); and that limit is far below ‖x·Wᵀ‖, so zeroed,
    permuted or mis-scaled weights fail."""
    x2, y2 = x.reshape(-1, x.shape[-1]).double(), y.reshape(-1, y.shape[-1]).double()
    ref = x2 @ w.double().T + (0 if b is None else b.double())
    grid = ((x2**2) @ (column_scales(mod) ** 2).T / 12).sum().sqrt()
    kernel = eps * (((x2**2) @ (w.double() ** 2).T).sum() + (ref**2).sum()).sqrt()  # x and y rounded, random
    allowed = 2 * grid + 2 * kernel + 1e-9
    err = (y2 - ref).norm()
    signal = (x2 @ w.double().T).norm()
    assert allowed < 0.8 * signal, f"the check could not fail: limit {allowed:.3g} vs signal {signal:.3g}"
    assert err <= allowed, f"error {err:.4g} > limit {allowed:.4g} (grid {grid:.3g}, kernel rounding {kernel:.3g})"
