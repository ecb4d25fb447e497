"""NaN/inf advice that fits the failure (issue #13): 'raise damp' only where damp can help.

A pass that makes NaN from finite weights is named with advice for that pass alone; non-finite
calibration activations are refused by the module they enter, saying no option (damp included) fixes
them; nothing is written in any case.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.nn as nn

import compress
from compress import registry
from compress.errors import CompressError
from tests.conftest import make_model

CAL = {"samples": 4, "seq_len": 32, "seed": 0}


def poison_after(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make pass `name` leave one inf weight behind (as a diverged run would), without running it."""
    real = registry.get_pass(name)

    def poisoned(model: nn.Module, cfg: Any, ctx: Any) -> nn.Module:
        with torch.no_grad():
            model.model.norm.weight[0] = float("inf")
        return model

    monkeypatch.setitem(registry._PASSES, name, dataclasses.replace(real, fn=poisoned))


def run(passes: list, tokenizer: Any, text_file: Path, out: Path, model: nn.Module | None = None) -> None:
    recipe = {"calibration": {"source": str(text_file), **CAL}, "passes": passes}
    compress.run(recipe, model if model is not None else make_model(), tokenizer=tokenizer, out=out, device="cpu",
                 progress=False)


@pytest.mark.parametrize("name, advice, not_advice", [
    ("distill", "lower distill.lr", "raise damp"),
    ("gptq", "raise gptq.damp", "distill.lr"),
    ("sparsegpt", "raise sparsegpt.damp", "distill.lr"),
    ("rtn", "rtn made them from finite weights", "damp"),
    ("magnitude", "magnitude made them from finite weights", "damp"),
])
def test_nan_made_by_a_pass_gets_that_pass_s_advice(name: str, advice: str, not_advice: str, tokenizer: Any,
                                                    text_file: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    poison_after(name, monkeypatch)
    with pytest.raises(CompressError, match=rf"pass '{name}' \(#1\): produced tensor model\.norm\.weight") as e:
        run([{name: {}}], tokenizer, text_file, tmp_path / "ck")
    assert advice in str(e.value) and not_advice not in str(e.value), str(e.value)
    assert not list(tmp_path.iterdir())


def nan_output(module: nn.Module) -> Callable:
    """A forward hook that makes `module`'s output NaN (activations gone bad, weights still finite)."""
    def hook(mod: nn.Module, args: Any, out: Any) -> Any:
        if isinstance(out, tuple):
            return (torch.full_like(out[0], float("nan")), *out[1:])
        return torch.full_like(out, float("nan"))
    return module.register_forward_hook(hook)


def nan_input(module: nn.Module) -> Callable:
    """A forward pre-hook that makes `module`'s input NaN inside an otherwise finite layer."""
    return module.register_forward_pre_hook(lambda mod, args: (torch.full_like(args[0], float("nan")), *args[1:]))


@pytest.mark.parametrize("pass_", [{"gptq": {"bits": 4, "group_size": 32}}, {"sparsegpt": {"sparsity": 0.5}},
                                   {"wanda": {"sparsity": 0.5}}, {"awq": {"bits": 4, "group_size": 32}}],
                         ids=lambda p: next(iter(p)))
def test_nan_activations_entering_a_layer_are_refused_by_its_name(pass_: dict, tokenizer: Any, text_file: Path,
                                                                   tmp_path: Path) -> None:
    model = make_model()
    nan_output(model.model.layers[0])
    name = next(iter(pass_))
    with pytest.raises(CompressError, match=rf"pass '{name}' \(#1\): module model\.layers\.1: its calibration input "
                                            rf"\(the output of decoder layer 0\) holds \d+ NaN/inf") as e:
        run([pass_], tokenizer, text_file, tmp_path / "ck", model)
    assert "damp included" in str(e.value) and not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["gptq", "sparsegpt"])
def test_a_non_finite_hessian_names_its_module_and_says_damp_cannot_help(name: str, tokenizer: Any, text_file: Path,
                                                                          tmp_path: Path) -> None:
    model = make_model()
    nan_input(model.model.layers[1].mlp.down_proj)
    with pytest.raises(CompressError, match=rf"pass '{name}' \(#1\): module model\.layers\.1\.mlp\.down_proj: its "
                                            rf"calibration activations hold NaN/inf") as e:
        run([{name: {}}], tokenizer, text_file, tmp_path / "ck", model)
    assert "damp cannot fix that" in str(e.value) and not list(tmp_path.iterdir())
