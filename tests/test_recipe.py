from __future__ import annotations

import pytest

from compress.errors import RecipeError
from compress.recipe import apply_overrides, load_recipe, recipe_from_dict


def test_minimal_recipe_fills_defaults(recipe_file):
    r = load_recipe(recipe_file("passes:\n  - rtn: {bits: 8}\n"))
    assert [s.name for s in r.steps] == ["rtn"]
    cfg = r.steps[0].config
    assert (cfg.bits, cfg.group_size, cfg.symmetric, cfg.ignore) == (8, -1, True, ("lm_head",))
    d = r.to_dict()
    assert d["passes"][0]["rtn"]["group_size"] == -1 and d["calibration"]["samples"] == 128


def test_resolved_recipe_round_trips(recipe_file):
    r = load_recipe(recipe_file("passes:\n  - rtn: {bits: 4, group_size: 64, targets: ['*.mlp.*']}\n"
                                "evaluate: {perplexity: {seq_len: 128, max_windows: 2}}\n"))
    again = recipe_from_dict(r.to_dict())
    assert again.to_dict() == r.to_dict()
    assert again.steps[0].config.targets == ("*.mlp.*",)
    assert again.evaluate.perplexity.max_windows == 2


def test_bare_pass_name_is_accepted():
    r = recipe_from_dict({"passes": ["rtn"]})
    assert r.steps[0].config.bits == 8


@pytest.mark.parametrize("text, expected", [
    ("passes:\n  - nosuch: {}\n", "pass 'nosuch' is unknown; allowed: "),
    ("passes:\n  - rtn: {bitz: 4}\n", "option 'bitz' is unknown; allowed: targets, ignore, bits"),
    ("passes:\n  - rtn: {bits: four}\n", "option 'bits': expected int, got 'four'"),
    ("passes:\n  - rtn: {bits: 5}\n", "option 'bits' = 5 is not allowed; allowed: 3, 4, 8"),
    ("passes:\n  - rtn: {symmetric: 1}\n", "option 'symmetric': expected bool"),
    ("passes: []\n", "passes: expected a non-empty list"),
    ("pases:\n  - rtn: {}\n", "key 'pases' is unknown; allowed: model, calibration, passes, evaluate"),
    ("passes: [rtn]\ncalibration: {samples: 0}\n", "calibration: option 'samples' = 0 is out of range"),
    ("passes: [rtn]\nevaluate: {perplexity: {seq_len: x}}\n", "evaluate.perplexity: option 'seq_len'"),
    ("- just a list\n", "a recipe is a mapping"),
    ("passes: [gptq]\ncalibration: {source: wikitext2-test}\n", "calibration.source: wikitext2-test is the evaluation split"),
    ("passes: [rtn]\ncalibration: {samples: 1000000000}\n", "calibration: option 'samples' = 1000000000 is out of range [1, 100000]"),
    ("passes: [rtn]\ncalibration: {seed: 99999999999999999999999}\n", "option 'seed' = 99999999999999999999999 is out of range"),
    ("passes:\n  - magnitude: {sparsity: .nan}\n", "option 'sparsity': expected a finite number, got nan"),
    ("passes:\n  - gptq: {damp: .inf}\n", "option 'damp': expected a finite number, got inf"),
    ("passes:\n  - distill: {lr: -.inf}\n", "option 'lr': expected a finite number, got -inf"),
])
def test_bad_recipes_name_file_pass_and_key(recipe_file, text, expected):
    path = recipe_file(text)
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and expected in msg and "\n" not in msg


def test_a_key_given_twice_is_refused_with_its_line(recipe_file):
    path = recipe_file("passes:\n  - rtn: {bits: 8}\nevaluate: {}\npasses:\n  - rtn: {bits: 4}\n")
    with pytest.raises(RecipeError, match=r"line 4, column 1: key 'passes' appears twice"):
        load_recipe(path)
    with pytest.raises(RecipeError, match="key 'bits' appears twice"):
        load_recipe(recipe_file("passes:\n  - rtn: {bits: 8, bits: 4}\n"))


def test_a_huge_file_is_refused_before_parsing(recipe_file):
    path = recipe_file("passes: [rtn]\n" + "#" * (1 << 20))
    with pytest.raises(RecipeError, match="is not a recipe"):
        load_recipe(path)


def test_yaml_syntax_error_names_line(recipe_file):
    path = recipe_file("passes:\n  - rtn: {bits: 8\n")
    with pytest.raises(RecipeError, match=r"YAML syntax error at line \d+"):
        load_recipe(path)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_overrides_are_typed_and_validated():
    r = recipe_from_dict({"passes": [{"rtn": {"bits": 8}}]})
    r2 = apply_overrides(r, ["rtn.bits=4", "rtn.group_size=64", "calibration.samples=16",
                             "evaluate.perplexity.max_windows=3", "model=foo"])
    assert r2.steps[0].config.bits == 4 and r2.steps[0].config.group_size == 64
    assert r2.calibration.samples == 16 and r2.evaluate.perplexity.max_windows == 3 and r2.model == "foo"
    with pytest.raises(RecipeError, match=r"^--set rtn.bits=5: .*'bits' = 5 is not allowed"):
        apply_overrides(r, ["rtn.bits=5"])
    with pytest.raises(RecipeError, match="no pass 'gptq' in the recipe"):
        apply_overrides(r, ["gptq.bits=4"])
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        apply_overrides(r, ["rtn.bits"])


def test_override_picks_among_repeated_passes():
    r = recipe_from_dict({"passes": [{"rtn": {"targets": ["a*"]}}, {"rtn": {"targets": ["b*"]}}]})
    with pytest.raises(RecipeError, match=r"has 2 'rtn' passes; say which with rtn\[0\]"):
        apply_overrides(r, ["rtn.bits=4"])
    r2 = apply_overrides(r, ["rtn[1].bits=4"])
    assert [s.config.bits for s in r2.steps] == [8, 4]
