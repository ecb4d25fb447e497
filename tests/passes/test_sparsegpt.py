"""`sparsegpt` pass: wiring against independently built Hessians, better reconstruction than Wanda,
N:M, and pruning + int4 in one sweep."""
from __future__ import annotations

import copy

import pytest
import torch

import compress
from compress.algorithms.masks import is_nm
from compress.algorithms.sparsegpt import sparsegpt_prune
from compress.formats.quant_linear import QuantLinear
from compress.formats.sparse import SparseLinear
from compress.passes.sparsegpt import SparseGPTConfig, sparsegpt
from compress.passes.wanda import WandaConfig, wanda
from _prune_ctx import fixed_context, layer0_inputs

IDS = torch.randint(0, 300, (4, 16), generator=torch.Generator().manual_seed(0))


def test_layer0_uses_the_hessian_of_its_inputs(tiny_model, tokenizer):
    ref = copy.deepcopy(tiny_model)
    xs = layer0_inputs(ref, IDS)
    out = sparsegpt(tiny_model, SparseGPTConfig(sparsity=0.5, blocksize=32, targets=("model.layers.0.*",)), fixed_context(tokenizer, IDS))
    for name, x in xs.items():
        H = 2 / x.shape[0] * x.double().T @ x.double()
        want = sparsegpt_prune(ref.get_submodule(name).weight, H.float(), 0.5, None, 32, 0.01)
        got = out.get_submodule(name)
        assert isinstance(got, SparseLinear)
        assert torch.equal(got.keep_mask(), want.mask), name
        assert torch.allclose(got.dense_weight(), want.weight, atol=1e-5)


def test_reconstructs_layer_outputs_better_than_wanda(tiny_model, tokenizer):
    ids = torch.randint(0, 300, (8, 64), generator=torch.Generator().manual_seed(1))  # 512 tokens ≫ 160 inputs
    ref = copy.deepcopy(tiny_model)
    xs = layer0_inputs(ref, ids)
    cfg = dict(sparsity=0.5, targets=("model.layers.0.*",))
    sg = sparsegpt(copy.deepcopy(tiny_model), SparseGPTConfig(**cfg), fixed_context(tokenizer, ids))
    wd = wanda(copy.deepcopy(tiny_model), WandaConfig(**cfg), fixed_context(tokenizer, ids))
    for name, x in xs.items():
        y = x @ ref.get_submodule(name).weight.detach().T
        err = lambda m: float((x @ m.get_submodule(name).dense_weight().T - y).norm())
        assert err(sg) < err(wd), name


def test_two_four_with_int4_in_the_same_sweep(tmp_path, tiny_model, tokenizer, text_file):
    recipe = {"calibration": {"source": str(text_file), "samples": 2, "seq_len": 16},
              "passes": [{"sparsegpt": {"pattern": "2:4", "bits": 4, "group_size": 32, "symmetric": False}}]}
    res = compress.run(recipe, tiny_model, tokenizer=tokenizer, out=tmp_path / "ck", progress=False)
    assert res.report["passes"][0]["sparsity"] == pytest.approx(0.5)
    loaded = compress.load(tmp_path / "ck", device="cpu", dtype=torch.float32)
    quant = [m for m in loaded.modules() if isinstance(m, QuantLinear)]
    assert len(quant) == 14 and all(is_nm(m.dense_weight() != 0, 2, 4) for m in quant)
    ids = torch.randint(0, 300, (1, 8))
    assert torch.equal(loaded(ids).logits, res.model(ids).logits)


def test_blocksize_must_fit_the_pattern(tiny_model, tokenizer):
    with pytest.raises(compress.CompressError, match="blocksize"):
        compress.run({"passes": [{"sparsegpt": {"pattern": "3:64", "blocksize": 32}}]}, tiny_model, tokenizer=tokenizer, progress=False)
