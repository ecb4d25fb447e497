"""Dense export: plain transformers loads it and computes what the compressed checkpoint computes."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import compress
from compress.cli import app
from compress.export.driver import MARKER, export
from tests.conftest import make_model

RECIPES = {
    "int4": [{"rtn": {"bits": 4, "group_size": 32, "symmetric": False}}],
    "2of4": [{"magnitude": {"sparsity": 0.5, "pattern": "2:4"}}],
}


@pytest.mark.parametrize("kind", sorted(RECIPES))
def test_dense_export_loads_in_transformers_with_the_checkpoints_logits(tmp_path, tokenizer, kind):
    from transformers import AutoModelForCausalLM

    compress.run({"passes": RECIPES[kind]}, make_model(), tokenizer=tokenizer, out=tmp_path / "ck", progress=False)
    res = export(tmp_path / "ck", "dense", tmp_path / "dense")
    assert res.modules and set(res.modules.values()) == {"dense"}
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "dense", dtype=torch.float32).eval()
    ours = compress.load(tmp_path / "ck", device="cpu", dtype=torch.float32)
    x = torch.randint(0, 300, (2, 40))  # 80 rows: past the CPU int kernels' crossover, ours runs fp32 dequant
    with torch.no_grad():
        ref = ours(x).logits
        got = plain(x).logits
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    base = make_model()(x).logits.detach()  # the original weights: the export is not them
    assert (got - base).abs().max() > 1e-3
    card = (tmp_path / "dense" / "README.md").read_text()
    assert "from_pretrained" in card and next(iter(RECIPES[kind][0])) in card
    assert json.loads((tmp_path / "dense" / MARKER).read_text())["format"] == "dense"


def test_export_cli_errors_are_one_line_and_write_nothing(tmp_path, tokenizer):
    compress.run({"passes": RECIPES["int4"]}, make_model(), tokenizer=tokenizer, out=tmp_path / "ck", progress=False)
    runner = CliRunner()
    cases = [
        (["export", str(tmp_path / "ck"), "--format", "onnx", "--out", str(tmp_path / "x")], "allowed: "),
        (["export", str(tmp_path / "missing"), "--format", "dense", "--out", str(tmp_path / "x")], "not found"),
        (["export", str(tmp_path / "ck"), "--format", "dense", "--out", str(tmp_path / "ck")], "input"),
    ]
    for args, words in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], (args, r.stderr)
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.*"))


def test_force_replaces_an_export_but_not_a_users_directory(tmp_path, tokenizer):
    compress.run({"passes": RECIPES["int4"]}, make_model(), tokenizer=tokenizer, out=tmp_path / "ck", progress=False)
    export(tmp_path / "ck", "dense", tmp_path / "out")
    export(tmp_path / "ck", "dense", tmp_path / "out", force=True)  # an export of ours: replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(compress.CompressError, match="not a compress checkpoint"):
        export(tmp_path / "ck", "dense", mine, force=True)
    assert (mine / "notes.txt").read_text() == "keep"
