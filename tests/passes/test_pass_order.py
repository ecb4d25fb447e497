"""Passes that rewrite dense weights refuse packed ones with a one-line error instead of silently
densifying, skipping or crashing on them (pruned zeros filled in by GPTQ, AWQ on inference tensors).
`distill` no longer refuses SparseLinear: it trains sparse modules with their mask fixed
(tests/passes/test_distill.py)."""
from __future__ import annotations

import pytest

import compress
from compress.errors import CompressError
from tests.conftest import make_model
from tests.passes.test_gptq import CAL

WANDA = {"wanda": {"sparsity": 0.5}}


@pytest.mark.parametrize("first, then, match", [
    (WANDA, {"gptq": {"bits": 4, "group_size": 32}}, r"pass 'gptq' \(#2\): model\.layers\.0\.self_attn\.q_proj is already SparseLinear"),
    ({"rtn": {"bits": 8}}, {"gptq": {"bits": 4}}, r"pass 'gptq' \(#2\): targets/ignore leave no module to work on"),
    ({"rtn": {"bits": 8}}, {"awq": {}}, r"pass 'awq' \(#2\).*already QuantLinear.*put it before pruning and quantization"),
])
def test_rewriting_a_packed_module_is_refused(first, then, match, tokenizer, text_file):
    recipe = {"calibration": {"source": str(text_file), **CAL}, "passes": [first, then]}
    with pytest.raises(CompressError, match=match):
        compress.run(recipe, make_model(), tokenizer=tokenizer, device="cpu", progress=False)


def test_owl_range_must_stay_inside_zero_one():
    with pytest.raises(CompressError, match="owl_lambda: layer sparsities"):
        compress.recipe.recipe_from_dict({"passes": [{"wanda": {"sparsity": 0.95, "allocation": "owl", "owl_lambda": 0.1}}]})
