"""`wanda` pass: masks equal an independent reference on layer 0, N:M, OWL keeps the ratio, composition."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import compress
from compress.algorithms.masks import is_nm
from compress.formats.quant_linear import QuantLinear
from compress.formats.sparse import SparseLinear
from compress.passes.wanda import WandaConfig, wanda
from _prune_ctx import fixed_context, layer0_inputs


def test_layer0_masks_match_reference(tiny_model, tokenizer):
    ids = torch.randint(0, 300, (3, 16), generator=torch.Generator().manual_seed(0))
    ref_model = copy.deepcopy(tiny_model)
    xs = layer0_inputs(ref_model, ids)
    cfg = WandaConfig(sparsity=0.5, targets=("model.layers.0.*",))
    out = wanda(tiny_model, cfg, fixed_context(tokenizer, ids))
    assert len(xs) == 7
    for name, x in xs.items():
        w = ref_model.get_submodule(name).weight.detach().numpy()
        score = np.abs(w) * np.sqrt((x.numpy().astype(np.float64) ** 2).sum(0))
        keep = np.ones_like(w, dtype=bool)
        for r in range(w.shape[0]):
            keep[r, np.argsort(score[r], kind="stable")[: w.shape[1] // 2]] = False
        mod = out.get_submodule(name)
        assert isinstance(mod, SparseLinear)
        assert np.array_equal(mod.keep_mask().numpy(), keep), name
        assert torch.equal(mod.dense_weight(), torch.from_numpy(w * keep))
    assert type(out.model.layers[1].mlp.up_proj) is torch.nn.Linear


def test_nm_and_owl(tiny_model, tokenizer):
    ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(1))
    m24 = wanda(copy.deepcopy(tiny_model), WandaConfig(pattern="2:4"), fixed_context(tokenizer, ids))
    assert all(is_nm(m.keep_mask(), 2, 4) for m in m24.modules() if isinstance(m, SparseLinear))
    ctx = fixed_context(tokenizer, ids)
    owl = wanda(tiny_model, WandaConfig(sparsity=0.6, allocation="owl", owl_lambda=0.1), ctx)
    per_layer = ctx.stats["layer_sparsity"]
    assert len(per_layer) == 2 and per_layer[0] != per_layer[1]
    assert sum(per_layer) / 2 == pytest.approx(0.6, abs=1e-3)
    zeros = sum(int((m.keep_mask() == 0).sum()) for m in owl.modules() if isinstance(m, SparseLinear))
    total = sum(m.in_features * m.out_features for m in owl.modules() if isinstance(m, SparseLinear))
    assert zeros / total == pytest.approx(0.6, abs=0.01)


def test_wanda_two_four_then_rtn_int4_keeps_the_zeros(tmp_path, tiny_model, tokenizer, text_file):
    recipe = {"calibration": {"source": str(text_file), "samples": 2, "seq_len": 16},
              "passes": [{"wanda": {"pattern": "2:4"}}, {"rtn": {"bits": 4, "group_size": 32}}]}
    res = compress.run(recipe, tiny_model, tokenizer=tokenizer, out=tmp_path / "ck", progress=False)
    loaded = compress.load(tmp_path / "ck", device="cpu", dtype=torch.float32)
    quant = {n: m for n, m in loaded.named_modules() if isinstance(m, QuantLinear)}
    assert len(quant) == 14
    for m in quant.values():
        w = m.dense_weight()
        assert is_nm(w != 0, 2, 4) and float((w == 0).float().mean()) >= 0.5
    ids = torch.randint(0, 300, (1, 8))
    assert torch.equal(loaded(ids).logits, res.model(ids).logits)


def test_module_outside_layers_is_a_user_error(tiny_model, tokenizer):
    with pytest.raises(compress.CompressError, match="lm_head.*outside the decoder layers"):
        wanda(tiny_model, WandaConfig(targets=("lm_head",), ignore=()), fixed_context(tokenizer, torch.zeros(1, 8, dtype=torch.long)))
