"""`magnitude` pass: masks against an independent numpy reference, targets/ignore, errors, checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import compress
from compress.algorithms.masks import is_nm
from compress.errors import CompressError
from compress.formats.sparse import SparseLinear
from compress.formats.quant_linear import QuantLinear


def run(model, tokenizer, *passes, **kw):
    return compress.run({"passes": list(passes)}, model, tokenizer=tokenizer, progress=False, **kw)


def np_keep_matrix(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    a = np.abs(w.numpy()).reshape(-1)
    keep = np.ones(a.size, dtype=bool)
    keep[np.argsort(a, kind="stable")[: int(a.size * sparsity)]] = False
    return torch.from_numpy(keep.reshape(w.shape))


def test_layer_masks_match_reference_and_respect_targets(tiny_model, tokenizer):
    before = {n: m.weight.detach().clone() for n, m in tiny_model.named_modules() if isinstance(m, torch.nn.Linear)}
    res = run(tiny_model, tokenizer, {"magnitude": {"sparsity": 0.3, "targets": ["*.mlp.*"], "ignore": ["*.down_proj"]}})
    mods = dict(res.model.named_modules())
    for name, w in before.items():
        if ".mlp." in name and not name.endswith("down_proj"):
            assert isinstance(mods[name], SparseLinear)
            assert torch.equal(mods[name].dense_weight(), w * np_keep_matrix(w, 0.3))
        else:
            assert type(mods[name]) is torch.nn.Linear and torch.equal(mods[name].weight, w)
    assert res.report["passes"][0]["modules"] == 4


def test_two_four_pattern(tiny_model, tokenizer):
    w0 = tiny_model.model.layers[1].self_attn.o_proj.weight.detach().clone()
    res = run(tiny_model, tokenizer, {"magnitude": {"pattern": "2:4"}})
    lin = res.model.model.layers[1].self_attn.o_proj
    assert is_nm(lin.keep_mask(), 2, 4) and lin.spec()["pattern"] == "2:4"
    groups = w0.abs().reshape(64, 16, 4)
    kept = lin.keep_mask().reshape(64, 16, 4)
    # every kept weight is at least as large as every dropped one of its group
    assert bool((torch.where(kept, groups, torch.inf).amin(-1) >= torch.where(kept, -torch.inf, groups).amax(-1)).all())
    assert res.report["passes"][0]["sparsity"] == pytest.approx(0.5)


def test_global_scope_uses_one_threshold(tiny_model, tokenizer):
    ws = [m.weight.detach().clone() for n, m in tiny_model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]
    t = np.sort(np.concatenate([np.abs(w.numpy()).ravel() for w in ws]))[int(sum(w.numel() for w in ws) * 0.6) - 1]
    res = run(tiny_model, tokenizer, {"magnitude": {"sparsity": 0.6, "scope": "global", "storage": "dense"}})
    for n, m in res.model.named_modules():
        if isinstance(m, torch.nn.Linear) and n != "lm_head":
            assert type(m) is torch.nn.Linear
            assert bool((m.weight.abs() > t).eq(m.weight != 0).all())
    per_layer = [float((m.weight == 0).float().mean()) for n, m in res.model.named_modules()
                 if isinstance(m, torch.nn.Linear) and n != "lm_head"]
    assert max(per_layer) - min(per_layer) > 0.01  # non-uniform across matrices


@pytest.mark.parametrize("opts,needle", [
    ({"pattern": "4:2"}, "pattern"),
    ({"pattern": "2:7"}, "divisible by 7"),
    ({"pattern": "2:4", "scope": "global"}, "scope"),
    ({"sparsity": 1.5}, "sparsity"),
])
def test_bad_options_are_one_line_errors(tiny_model, tokenizer, opts, needle):
    with pytest.raises(CompressError, match=needle) as e:
        run(tiny_model, tokenizer, {"magnitude": opts})
    assert "\n" not in str(e.value) and "magnitude" in str(e.value)


def test_sparse_checkpoint_round_trip_and_then_rtn_keeps_zeros(tmp_path, tiny_model, tokenizer):
    res = run(tiny_model, tokenizer, {"magnitude": {"pattern": "2:4"}}, out=tmp_path / "ck")
    loaded = compress.load(tmp_path / "ck", device="cpu", dtype=torch.float32)
    ids = torch.randint(0, 300, (1, 10))
    assert torch.equal(loaded(ids).logits, res.model(ids).logits)
    zeros = {n: m.keep_mask() for n, m in loaded.named_modules() if isinstance(m, SparseLinear)}
    res2 = run(loaded, tokenizer, {"rtn": {"bits": 4, "group_size": 32, "symmetric": False}})
    for n, keep in zeros.items():
        q = res2.model.get_submodule(n)
        assert isinstance(q, QuantLinear)
        assert bool((q.dense_weight()[~keep] == 0).all()) and is_nm(q.dense_weight() != 0, 2, 4)
