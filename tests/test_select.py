from __future__ import annotations

import pytest

from compress.errors import CompressError
from compress.select import select_modules


def test_default_is_every_linear_but_lm_head(tiny_model):
    names = select_modules(tiny_model, (), ("lm_head",), "w")
    assert len(names) == 2 * 7 and "lm_head" not in names


def test_targets_and_ignore(tiny_model):
    names = select_modules(tiny_model, ("*.mlp.*",), ("*.down_proj",), "w")
    assert sorted(n.rsplit(".", 1)[1] for n in names) == ["gate_proj", "gate_proj", "up_proj", "up_proj"]


def test_pattern_matching_nothing_is_an_error(tiny_model):
    with pytest.raises(CompressError, match=r"^r.yaml: pass 'rtn' \(#1\): targets pattern '\*.mpl.\*' matches no module"):
        select_modules(tiny_model, ("*.mpl.*",), (), "r.yaml: pass 'rtn' (#1)")
