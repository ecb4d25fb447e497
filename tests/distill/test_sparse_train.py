"""Mask-fixed training modules: start exactly at the SparseLinear, keep pruned weights at exactly zero
under AdamW (weight decay included), and pack back under the very same mask and pattern."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from compress.algorithms.masks import is_nm, matrix_mask, nm_mask
from compress.distill.sparse_train import MaskedLinear, pack_sparse_after_training, unpack_sparse_for_training
from compress.formats.sparse import SparseLinear


def pruned(pattern: str | None, n: int = 12, k: int = 40) -> SparseLinear:
    torch.manual_seed(0)
    lin = nn.Linear(k, n, bias=True)
    score = lin.weight.detach().abs()
    keep = nm_mask(score, 2, 4) if pattern == "2:4" else matrix_mask(score, 0.5)
    return SparseLinear.from_dense(lin.weight.detach() * keep, lin.bias, pattern)


@pytest.mark.parametrize("pattern", [None, "2:4"])
def test_starts_at_the_sparse_weights_and_packs_back_under_the_same_mask(pattern):
    sp = pruned(pattern)
    x = torch.randn(3, 40)
    ml = MaskedLinear(sp)
    assert torch.equal(ml(x), sp(x))
    keep = sp.keep_mask()
    with torch.no_grad():
        ml.weight.add_(0.3 * torch.randn_like(ml.weight))  # as if trained, pruned latents included
        kept_at = keep.nonzero()[0]
        ml.weight[kept_at[0], kept_at[1]] = 0.0  # a kept weight that trained to exactly zero stays a stored value
    back = ml.to_sparse_linear()
    assert torch.equal(back.mask, sp.mask) and back.values.numel() == sp.values.numel()
    assert back.pattern == pattern and back.bias is not None and torch.equal(back.bias, sp.bias)
    assert torch.equal(back.dense_weight(), ml.weight.detach() * keep)  # zero where pruned, trained where kept
    assert torch.equal(back(x), ml(x))  # the packed module computes what training saw
    if pattern:
        assert is_nm(back.keep_mask(), 2, 4)


def test_adamw_with_weight_decay_keeps_pruned_latents_at_exactly_zero():
    sp = pruned("2:4")
    ml = MaskedLinear(sp)
    keep, start = sp.keep_mask(), ml.weight.detach().clone()
    opt = torch.optim.AdamW(ml.parameters(), lr=1e-2, weight_decay=0.1)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        ml(torch.randn(8, 40, generator=g)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    assert torch.equal(ml.weight.detach()[~keep], torch.zeros(int((~keep).sum())))
    assert not torch.equal(ml.weight.detach()[keep], start[keep])  # the kept ones did train
    assert [n for n, _ in ml.named_parameters()] == ["weight"]  # mask and bias are frozen buffers


def test_swap_in_and_out_of_a_model():
    model = nn.Sequential(nn.Linear(40, 12), nn.ReLU(), nn.Linear(12, 4))
    model[0] = pruned(None)
    swapped = unpack_sparse_for_training(model, {"0": model[0], "2": model[2]})
    assert list(swapped) == ["0"] and isinstance(model[0], MaskedLinear) and isinstance(model[2], nn.Linear)
    pack_sparse_after_training(model, ["0"], torch.bfloat16)
    assert isinstance(model[0], SparseLinear) and model[0].values.dtype == torch.bfloat16
