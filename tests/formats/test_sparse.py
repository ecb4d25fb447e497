"""Compact sparse storage: bit layout by hand, exact round trips, smaller on disk than dense."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from compress import checkpoint
from compress.formats import FORMATS
from compress.formats.sparse import SparseLinear, pack_mask, unpack_mask
from compress.kernels import sparse as kernels


def test_bit_layout():
    m = torch.tensor([[1, 0, 0, 0, 0, 0, 0, 0, 1, 1], [0, 1, 0, 0, 0, 0, 0, 1, 0, 0]], dtype=torch.bool)
    assert pack_mask(m).tolist() == [[1, 3], [2 + 128, 0]]
    assert torch.equal(unpack_mask(pack_mask(m), 10), m)


def test_round_trip_and_forward():
    torch.manual_seed(0)
    w = torch.randn(12, 20)
    w[torch.rand(12, 20) < 0.5] = 0
    b = torch.randn(12)
    mod = SparseLinear.from_dense(w, b, pattern=None)
    assert mod.values.numel() == int((w != 0).sum()) and mod.mask.shape == (12, 3)
    assert torch.equal(mod.dense_weight(), w)
    assert mod.sparsity == pytest.approx(float((w == 0).float().mean()))
    x = torch.randn(2, 3, 20)
    assert torch.allclose(mod(x), F.linear(x, w, b), atol=1e-6)
    assert isinstance(mod, torch.nn.Linear) and FORMATS["sparse"] is SparseLinear


def test_weight_view_is_read_only():
    mod = SparseLinear.from_dense(torch.tensor([[0.0, 2.0]]))
    assert torch.equal(mod.weight, torch.tensor([[0.0, 2.0]]))
    with pytest.raises(RuntimeError, match="[Ii]nference"):
        mod.weight.mul_(2)


def test_checkpoint_is_smaller_and_exact(tmp_path, tiny_model, tokenizer, monkeypatch):
    from compress.select import set_module

    torch.manual_seed(1)
    dense_dir = checkpoint.save(tiny_model, tokenizer, tmp_path / "dense", dtype=torch.bfloat16)
    for name, lin in list(tiny_model.named_modules()):
        if isinstance(lin, torch.nn.Linear) and ".layers." in name:
            w = lin.weight.detach().clone()
            w[torch.rand_like(w) < 0.5] = 0
            set_module(tiny_model, name, SparseLinear.from_dense(w, lin.bias))
    ck = checkpoint.save(tiny_model, tokenizer, tmp_path / "sparse", dtype=torch.bfloat16)
    loaded = checkpoint.load(ck, device="cpu", dtype=torch.float32)
    ids = torch.randint(0, 300, (1, 12))
    checkpoint.round_to_storage(tiny_model, torch.bfloat16)
    assert torch.equal(loaded(ids).logits, tiny_model(ids).logits)
    info = checkpoint.inspect(ck)
    row = info["modules"]["model.layers.0.mlp.up_proj"]
    assert row["format"].startswith("sparse:") and row["sparsity"] == pytest.approx(0.5, abs=0.05)
    assert info["modules"]["model.embed_tokens"]["sparsity"] == 0.0
    monkeypatch.setattr(checkpoint, "DENSE_SCAN_BYTES", 0)  # a weight file "too big": dense zero counts skipped
    big = checkpoint.inspect(ck)
    assert "sparsity" not in big["modules"]["model.embed_tokens"] and "sparsity" in big["modules"]["model.layers.0.mlp.up_proj"]
    # the linears are 0.5·2 + 1/8 bytes per weight instead of 2 (embeddings stay dense)
    lin_bytes = lambda i: sum(r["bytes"] for n, r in i["modules"].items() if ".layers." in n and "proj" in n)
    assert lin_bytes(info) < 0.62 * lin_bytes(checkpoint.inspect(dense_dir))
    assert (ck / "model.safetensors").stat().st_size < (dense_dir / "model.safetensors").stat().st_size


def test_semi_structured_path_is_off_by_default_and_needs_cuda():
    mod = SparseLinear.from_dense(torch.zeros(64, 64), pattern="2:4")
    assert not kernels.semi_structured_ok(torch.zeros(8, 64, dtype=torch.bfloat16), mod)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_semi_structured_matches_dense_on_cuda(monkeypatch):
    from compress.algorithms.masks import nm_mask

    w = torch.randn(128, 256, device="cuda", dtype=torch.bfloat16)
    w = w * nm_mask(w.float().abs(), 2, 4)
    mod = SparseLinear.from_dense(w, pattern="2:4")
    monkeypatch.setattr(kernels, "SEMI_STRUCTURED", True)
    for m in (1, 5, 64):
        x = torch.randn(m, 256, device="cuda", dtype=torch.bfloat16)
        assert kernels.semi_structured_ok(x, mod)
        assert torch.allclose(mod(x).float(), F.linear(x, w).float(), atol=0.1, rtol=0.02)
